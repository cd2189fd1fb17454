"""painters: execute a pretrained transformer's layers differently and measure what happens."""

__version__ = "0.1.0"
