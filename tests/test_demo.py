"""The demo world: generated data and tasks, the trained demo model, and its scores through lm-eval."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file

from painters.demo import data as demo_data
from painters.demo import train as demo_train

ENV_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_seed_gives_the_same_files_and_another_seed_other_ones(tmp_path):
    first = demo_data.generate(tmp_path / "a", seed=3, n_test=30, n_train=400)
    again = demo_data.generate(tmp_path / "b", seed=3, n_test=30, n_train=400)
    other = demo_data.generate(tmp_path / "c", seed=4, n_test=30, n_train=400)
    # the YAMLs hold absolute data paths, which differ by folder: compare them with the folder name swapped
    same = {k: v.replace(str(again).encode(), str(first).encode()) for k, v in files_of(again).items()}
    assert files_of(first) == same
    assert (other / "train.txt").read_bytes() != (first / "train.txt").read_bytes()
    assert (other / "tasks/demo_choice.jsonl").read_bytes() != (first / "tasks/demo_choice.jsonl").read_bytes()


def test_every_task_records_its_chance_level(tmp_path):
    folder = demo_data.generate(tmp_path / "d", n_test=50, n_train=100)
    for task in demo_data.TASKS:
        config = yaml.safe_load((folder / f"tasks/{task}.yaml").read_text())
        baseline = config["metadata"]["random_baseline"]
        assert baseline, task
        assert all(v is None or 0 <= v < 1 for v in baseline.values()), (task, baseline)
    arith = yaml.safe_load((folder / "tasks/demo_arith.yaml").read_text())["metadata"]["random_baseline"]
    targets = [json.loads(line)["target"] for line in (folder / "tasks/demo_arith.jsonl").read_text().splitlines()]
    assert arith["exact_match"] == pytest.approx(max(targets.count(t) for t in set(targets)) / len(targets))


def prompts_of(task: str, row: dict) -> str:
    """What lm-eval puts before the scored text, written out by hand from the task YAMLs."""
    if task == "demo_choice":
        return row["query"]
    if task == "demo_pair":
        return row["sentence"].split("_")[0].rstrip()
    if task == "demo_cloze":
        return row["text"].rsplit(" ", 1)[0]
    if task == "demo_arith":
        return f"Question: {row['question']} Answer:"
    raise AssertionError(task)


def test_no_test_item_is_in_the_training_corpus(tmp_path):
    folder = demo_data.generate(tmp_path / "d", n_test=200)
    corpus = (folder / "train.txt").read_text().replace("\t", " ")
    held_out = (folder / "similarity.txt").read_text().splitlines()
    lines = corpus.splitlines()
    assert len(lines) == demo_data.DEFAULT_N_TRAIN
    for task in demo_data.TASKS:
        rows = [json.loads(line) for line in (folder / f"tasks/{task}.jsonl").read_text().splitlines()]
        assert len(rows) == 200
        prompts = {prompts_of(task, row) for row in rows}
        assert len(prompts) == len(rows), f"{task}: test prompts repeat"
        leaked = [p for p in prompts if p in corpus]
        assert not leaked, f"{task}: {len(leaked)} test prompts in train.txt, e.g. {leaked[0]!r}"
        # the corpus does teach the task: its documents have the same form
        assert sum(line.startswith(next(iter(prompts))[:9]) for line in lines) > 0
    assert held_out and not [t for t in held_out if t.rsplit(" ", 1)[0] in corpus]


def test_training_is_deterministic(tmp_path):
    folder = demo_data.generate(tmp_path / "d", n_test=10, n_train=300)
    settings = dict(steps=6, layers=2, hidden=32, heads=2, batch_tokens=256, log=lambda line: None)
    one = demo_train.train(folder, tmp_path / "m1", seed=1, **settings)
    two = demo_train.train(folder, tmp_path / "m2", seed=1, **settings)
    other = demo_train.train(folder, tmp_path / "m3", seed=2, **settings)
    weights = [load_file(m.out / "model.safetensors") for m in (one, two, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert (one.out / "tokenizer.json").read_bytes() == (two.out / "tokenizer.json").read_bytes()
    assert one.final_loss == two.final_loss


def run_painters(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "painters", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **ENV_OFFLINE},
        timeout=900,
    )


def test_demo_model_without_data_fails_clearly(tmp_path):
    result = run_painters("demo-model", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert result.returncode != 0
    assert "nowhere" in result.stderr and "painters demo-data" in result.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_the_trained_demo_model_beats_chance_on_every_task_and_skip_degrades_it(tmp_path):
    """The demo model as the workflow builds it (default settings), scored through `painters evaluate`."""
    steps = [
        ("demo-data", "--out", "data", "--n-test", "100"),
        ("demo-model", "--data", "data", "--out", "model"),
        ("evaluate", "--model", "model", "--name", "demo", "--plans", "baseline", "skip-N2",
         "--benchmarks", *demo_data.TASKS, "--include-path", "data/tasks", "--out", "res",
         "--dtype", "float32", "--device", "cpu", "--batch-size", "64"),
    ]
    for step in steps:
        result = run_painters(*step, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "model/model.safetensors").is_file()

    scores = pl.read_parquet(tmp_path / "res/scores/demo/*/*.parquet")
    primary = {"demo_choice": "acc_norm", "demo_pair": "acc", "demo_cloze": "acc", "demo_arith": "exact_match"}
    normalized = {}
    for plan in ("baseline", "skip-N2"):
        for task, metric in primary.items():
            row = scores.filter((pl.col("plan") == plan) & (pl.col("benchmark") == task) & (pl.col("metric") == metric))
            row = row.filter(pl.col("filter") == "strict-match") if task == "demo_arith" else row
            assert row.height == 1, (plan, task)
            assert row["n_samples"][0] == 100
            value, chance = row["value"][0], row["random_baseline"][0]
            normalized[plan, task] = (value - chance) / (1 - chance)
    print({k: round(v, 3) for k, v in normalized.items()})
    for task in primary:
        assert normalized["baseline", task] >= 0.3, f"{task}: baseline only {normalized['baseline', task]:.2f} above chance"
    # skipping 3 of 12 middle layers must visibly hurt (the study's headline effect)
    drops = [normalized["baseline", t] - normalized["skip-N2", t] for t in primary]
    assert sum(drops) / len(drops) >= 0.2, drops
