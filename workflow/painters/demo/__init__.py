"""The demo world: a generated corpus and lm-eval task suite (data), and a tiny Llama trained on it (train)."""
