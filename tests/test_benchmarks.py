"""Benchmark registry, chance scores, and the local-data overrides run offline through lm-eval."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
import random
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from painters.benchmarks import (
    DEFAULT_BENCHMARKS,
    LOCAL_DATA,
    check_benchmarks,
    random_baseline,
    write_local_overrides,
)
from painters.tiny import save_tiny_causal_lm

from offline_data import ROW_MAKERS, ROWS, write_data_dir, write_jsonl

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def task_manager(data_dir, tmp_path_factory):
    from lm_eval.tasks import TaskManager

    include = write_local_overrides(data_dir, list(DEFAULT_BENCHMARKS), tmp_path_factory.mktemp("overrides"))
    return TaskManager(include_path=str(include))


def test_every_default_benchmark_has_local_data():
    assert list(DEFAULT_BENCHMARKS) == ["arc_challenge", "arc_easy", "hellaswag", "winogrande", "lambada_openai", "gsm8k"]
    assert set(LOCAL_DATA) == set(DEFAULT_BENCHMARKS)


def test_local_data_matches_the_builtin_task_yamls():
    """Catches an lm-eval upgrade that moves a task or changes the splits it reads."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks_dir = Path(lm_eval.tasks.__file__).parent
    for name, local in LOCAL_DATA.items():
        config = load_yaml(tasks_dir / local.builtin_yaml, resolve_func=False)
        assert config["task"] == name
        eval_split = config.get("test_split") or config.get("validation_split")
        fewshot_split = config.get("fewshot_split") or config.get("training_split") or config.get("validation_split")
        assert set(local.files) == {eval_split, fewshot_split} - {None}, name
        assert config.get("num_fewshot", 0) == DEFAULT_BENCHMARKS[name].num_fewshot


def test_override_replaces_the_builtin_task_under_its_own_name(task_manager, data_dir):
    for name in DEFAULT_BENCHMARKS:
        entry = task_manager.task_index[name]
        assert "lm_eval/tasks" not in entry.yaml_path.as_posix(), name
    # built-in tags keep all their members and reach the overrides by name
    assert {"lambada_openai", "lambada_standard"} <= task_manager.task_index["lambada"].tags
    assert len(task_manager.task_index["multiple_choice"].tags) > 1
    task = task_manager.load(["hellaswag"])["tasks"]["hellaswag"]
    assert task.config.dataset_path == "json"
    assert task.config.process_docs is not None  # the built-in's processing is kept
    assert len(task.eval_docs) == ROWS


def test_all_six_benchmarks_run_offline_through_the_overrides(task_manager, tmp_path, monkeypatch):
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # keep the json builder's arrow cache out of the user's home
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    texts = [json.dumps(ROW_MAKERS[name](random.Random(1), i)) for name in ROW_MAKERS for i in range(ROWS)]
    model_dir = save_tiny_causal_lm(tmp_path / "model", texts=texts)
    lm = HFLM(pretrained=str(model_dir), device="cpu", batch_size=16, max_length=512)
    limit = 8
    out = simple_evaluate(
        model=lm,
        tasks=list(DEFAULT_BENCHMARKS),
        task_manager=task_manager,
        limit=limit,
        gen_kwargs="max_gen_toks=16",  # a random model never stops; keep gsm8k short
        use_cache=None,
        log_samples=False,
        bootstrap_iters=0,
    )
    results = out["results"]
    expected_metrics = {
        "arc_challenge": {"acc,none", "acc_norm,none"},
        "arc_easy": {"acc,none", "acc_norm,none"},
        "hellaswag": {"acc,none", "acc_norm,none"},
        "winogrande": {"acc,none"},
        "lambada_openai": {"acc,none", "perplexity,none"},
        "gsm8k": {"exact_match,strict-match", "exact_match,flexible-extract"},
    }
    assert set(results) == set(DEFAULT_BENCHMARKS)
    for name, metrics in expected_metrics.items():
        assert metrics <= set(results[name]), (name, results[name])
        for metric in metrics:
            value = results[name][metric]
            assert value >= 0 and (metric.startswith("perplexity") or value <= 1), (name, metric, value)
        # "original" is the local file's row count: the rows came from our files, not a hub copy
        assert out["n-samples"][name] == {"original": ROWS, "effective": limit}, name
        assert out["configs"][name]["num_fewshot"] == DEFAULT_BENCHMARKS[name].num_fewshot


def test_missing_file_names_the_file_and_its_schema(tmp_path):
    data_dir = write_data_dir(tmp_path / "data", ["gsm8k", "arc_easy"])
    (data_dir / "gsm8k" / "train.jsonl").unlink()
    out_dir = tmp_path / "overrides"
    with pytest.raises(FileNotFoundError) as error:
        write_local_overrides(data_dir, ["arc_easy", "gsm8k"], out_dir)
    message = str(error.value)
    assert str(data_dir / "gsm8k" / "train.jsonl") in message
    assert "question (string), answer (string)" in message
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing written, not even arc_easy


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        write_local_overrides(tmp_path / "no-such-dir", ["arc_easy"], tmp_path / "overrides")


def test_file_lacking_a_column_names_the_column(tmp_path):
    data_dir = write_data_dir(tmp_path / "data", ["winogrande"])
    path = data_dir / "winogrande" / "validation.jsonl"
    write_jsonl(path, [{"sentence": "The _ sat.", "option1": "a", "answer": "1"}])
    with pytest.raises(ValueError) as error:
        write_local_overrides(data_dir, ["winogrande"], tmp_path / "overrides")
    assert "'option2'" in str(error.value) and str(path) in str(error.value)


def test_column_of_the_wrong_type_is_named(tmp_path):
    data_dir = write_data_dir(tmp_path / "data", ["winogrande"])
    path = data_dir / "winogrande" / "train.jsonl"
    write_jsonl(path, [{"sentence": "The _ sat.", "option1": "a", "option2": "b", "answer": 1}])
    with pytest.raises(ValueError, match="column 'answer' .* should be string, got int"):
        write_local_overrides(data_dir, ["winogrande"], tmp_path / "overrides")


def test_rewrite_replaces_stale_overrides_and_skips_user_tasks(tmp_path):
    data_dir = write_data_dir(tmp_path / "data", ["arc_easy", "lambada_openai"])
    out_dir = tmp_path / "overrides"
    write_local_overrides(data_dir, ["arc_easy"], out_dir)
    (out_dir / "mine.yaml").write_text("task: mine\n")
    write_local_overrides(data_dir, ["lambada_openai", "my_demo_task"], out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == ["lambada_openai.yaml", "mine.yaml"]


def test_unknown_benchmark_lists_close_matches_and_the_defaults(task_manager):
    check_benchmarks(list(DEFAULT_BENCHMARKS), task_manager)
    with pytest.raises(ValueError) as error:
        check_benchmarks(["arc_easy", "arc_esy"], task_manager)
    message = str(error.value)
    assert "'arc_esy'" in message and "did you mean: arc_easy" in message
    assert "arc_challenge, arc_easy, hellaswag, winogrande, lambada_openai, gsm8k" in message
    assert "lm-eval ls tasks" in message


def test_unknown_benchmark_lists_every_name_when_few():
    few = SimpleNamespace(all_tasks=["demo_copy", "demo_count"])
    with pytest.raises(ValueError, match="'nope'.*\nvalid benchmarks: demo_copy, demo_count"):
        check_benchmarks(["nope"], few)
    with pytest.raises(ValueError, match="no benchmarks"):
        check_benchmarks([], few)


def test_random_baseline():
    assert random_baseline("arc_challenge", "acc_norm") == 0.25
    assert random_baseline("winogrande", "acc,none") == 0.5
    assert random_baseline("gsm8k", "exact_match,strict-match") == 0.0
    assert random_baseline("lambada_openai", "perplexity,none") is None
    assert random_baseline("hellaswag", "acc_stderr,none") is None
    assert random_baseline("some_task", "acc") is None
    assert random_baseline("demo_copy", "acc,none", {"version": 1, "random_baseline": {"acc": 0.1}}) == 0.1
    assert random_baseline("demo_copy", "exact_match", {"random_baseline": {"acc": 0.1}}) is None


def test_generate_until_tasks_are_known_from_their_yaml_without_building_them(tmp_path):
    """The workflow sizes jobs at DAG time: generate_until tasks run plan by plan."""
    from painters.benchmarks import generates_text

    (tmp_path / "mine.yaml").write_text("task: my_gen\noutput_type: generate_until\n")
    (tmp_path / "other.yaml").write_text("task: 'my_choice'\noutput_type: multiple_choice\n")
    assert generates_text("gsm8k") and not generates_text("hellaswag")
    assert generates_text("my_gen", [str(tmp_path)]) and not generates_text("my_choice", [str(tmp_path)])
    assert not generates_text("my_gen") and not generates_text("no_such_task", [str(tmp_path)])
