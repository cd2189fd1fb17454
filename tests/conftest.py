"""Fixtures shared by the evaluation tests: a tiny model with local benchmark data, loaded once."""

import json
import os
import random
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import datasets
import huggingface_hub
import huggingface_hub.constants
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


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """HF_HOME (hub cache, datasets cache, modules) in tmp_path, offline; env and import-time constants patched.
    Any attempt to look up a host or open a connection fails the test."""
    home = tmp_path / "hf_home"
    hub_cache, datasets_cache = home / "hub", home / "datasets"
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": hub_cache, "HF_DATASETS_CACHE": datasets_cache,
                        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    for name, value in {"HF_HOME": str(home), "HF_HUB_CACHE": str(hub_cache), "HUGGINGFACE_HUB_CACHE": str(hub_cache),
                        "HF_ASSETS_CACHE": str(home / "assets"), "HF_HUB_OFFLINE": True}.items():
        monkeypatch.setattr(huggingface_hub.constants, name, value)
    for name, value in {"HF_CACHE_HOME": str(home), "HF_DATASETS_CACHE": datasets_cache,
                        "HF_MODULES_CACHE": home / "modules",
                        "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
                        "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
                        "HF_HUB_OFFLINE": True, "HF_DATASETS_OFFLINE": True}.items():
        monkeypatch.setattr(datasets.config, name, value)
    attempts = []

    def no_network(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"no network here (tried {address})")

    def no_name_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"no network here (looked up {host})")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_name_lookup)
    yield home
    assert not attempts, f"tried the network: {attempts}"
