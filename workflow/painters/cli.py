"""The `painters` command line: one subcommand per workflow step.

Each subcommand lives in its own module, which exposes `register(subparsers)`;
modules are imported only when their command runs, so `painters --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module that implements it (module.register adds the parser and sets `func`)
COMMANDS = {
    "evaluate": "painters.evaluate",
    "finetune": "painters.glue.finetune",
    "evaluate-images": "painters.vision_sweep",
    "demo-glue": "painters.demo.glue_tasks",
    "train-vision": "painters.layershuffle.training",
    "evaluate-vision": "painters.layershuffle.evaluation",
    "umap-vision": "painters.layershuffle.layer_umap",
    "merge-vision": "painters.layershuffle.merging",
    "demo-data": "painters.demo.data",
    "demo-model": "painters.demo.train",
    "similarity": "painters.similarity",
    "aggregate": "painters.aggregate",
    "cost-table": "painters.cost_table",
    "figures": "painters.figures",
    "sweep": "painters.sweep",
    "check-benchmarks": "painters.benchmarks",
}


class UsageError(Exception):
    """Bad input from the user: printed as one clear message, exit status 2."""


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="painters", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        if command in (None, name):
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=f"see `painters {name} --help`")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f"painters {args.command}: error: {error}", file=sys.stderr)
        return 2
