"""Fixtures shared by the evaluation tests: a tiny model with local benchmark data, loaded once."""

import json
import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import datasets
import pytest

from offline_data import ROW_MAKERS, ROWS, write_data_dir, write_fewshot_task
from painters.evaluate import ModelSpec, Session
from painters.tiny import save_tiny_causal_lm


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A tiny random Llama (4 layers) and local copies of the default benchmarks."""
    root = tmp_path_factory.mktemp("world")
    datasets.config.HF_DATASETS_CACHE = str(root / "hf_cache")
    data_dir = write_data_dir(root / "data")
    texts = [json.dumps(ROW_MAKERS[name](random.Random(1), i)) for name in ROW_MAKERS for i in range(ROWS)]
    model_dir = save_tiny_causal_lm(root / "model", arch="llama", seed=0, texts=texts)
    write_fewshot_task(root / "tasks", data_dir)
    return root, model_dir, data_dir


def spec_of(world) -> ModelSpec:
    root, model_dir, data_dir = world
    return ModelSpec(model=str(model_dir), dtype="float32", device="cpu", data_dir=str(data_dir),
                     include_paths=(str(root / "tasks"),))


@pytest.fixture(scope="session")
def session(world):
    return Session(spec_of(world), log=lambda _: None)


