"""`painters evaluate`: parquet per (plan, benchmark), equality with plain lm-eval, kills, bad input."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from painters import cli
from painters.evaluate import Request, parse_limit
from painters.results import SCORE_COLUMNS, score_path

LIMIT = 10
BENCHMARKS = ["arc_easy", "lambada_openai"]


def read_scores(out, plan, benchmark, name="tiny"):
    return pl.read_parquet(score_path(out, name, plan, benchmark))


def test_one_parquet_per_plan_and_benchmark_with_the_schema(session, tmp_path):
    written = session.run(Request("tiny", ("baseline", "skip-N1"), tuple(BENCHMARKS), str(tmp_path), limit=LIMIT))
    assert sorted(written) == sorted(score_path(tmp_path, "tiny", p, b) for p in ("baseline", "skip-N1") for b in BENCHMARKS)
    frame = read_scores(tmp_path, "skip-N1", "arc_easy")
    assert dict(frame.schema) == SCORE_COLUMNS
    assert set(frame["metric"]) == {"acc", "acc_norm"}
    assert frame["value"].is_between(0, 1).all()
    assert (frame["n_samples"] == LIMIT).all() and (frame["limit"] == LIMIT).all()
    row = frame.row(0, named=True)
    assert (row["variant"], row["N"], row["M"], row["num_layers"]) == ("skip", 1, 1, 4)
    assert row["random_baseline"] == 0.25 and row["higher_is_better"] is True and row["seconds"] > 0
    assert row["lm_eval_version"] == "0.4.13" and row["torch_version"].startswith("2.")
    lambada = read_scores(tmp_path, "skip-N1", "lambada_openai")
    perplexity = lambada.filter(pl.col("metric") == "perplexity").row(0, named=True)
    assert perplexity["random_baseline"] is None and perplexity["higher_is_better"] is False
    # nothing but the final files: no temporaries left behind
    assert {p.name for p in (tmp_path / "scores" / "tiny" / "skip-N1").iterdir()} == {f"{b}.parquet" for b in BENCHMARKS}


def test_baseline_equals_plain_lm_eval_on_the_untouched_model(session, world, tmp_path):
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    session.run(Request("tiny", ("baseline",), tuple(BENCHMARKS), str(tmp_path), limit=LIMIT))
    _, model_dir, _ = world
    plain = simple_evaluate(
        model=HFLM(pretrained=str(model_dir), device="cpu", batch_size=16, dtype="float32"),
        tasks=BENCHMARKS,
        task_manager=session.task_manager,
        limit=LIMIT,
        log_samples=False,
        bootstrap_iters=0,
    )["results"]
    for benchmark in BENCHMARKS:
        ours = {r["metric"]: r["value"] for r in read_scores(tmp_path, "baseline", benchmark).iter_rows(named=True)}
        assert ours["acc"] == plain[benchmark]["acc,none"]
        if benchmark == "lambada_openai":
            assert ours["perplexity"] == pytest.approx(plain[benchmark]["perplexity,none"], rel=1e-6)


def test_different_plans_give_different_scores(session, tmp_path):
    session.run(Request("tiny", ("baseline", "reverse-N0", "skip-N0"), ("lambada_openai",), str(tmp_path), limit=LIMIT))
    perplexity = {
        plan: read_scores(tmp_path, plan, "lambada_openai").filter(pl.col("metric") == "perplexity")["value"][0]
        for plan in ("baseline", "reverse-N0", "skip-N0")
    }
    assert len(set(perplexity.values())) == 3, perplexity


def test_existing_results_are_kept_not_recomputed(session, tmp_path):
    request = Request("tiny", ("baseline",), ("arc_easy",), str(tmp_path), limit=LIMIT)
    session.run(request)
    path = score_path(tmp_path, "tiny", "baseline", "arc_easy")
    before = path.stat()
    assert session.run(request) == []
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize(
    ("limit", "expected"), [("10", 10), ("0.5", 0.5), ("1", 1), ("0", None), ("2.5", None), ("ten", None), ("-1", None)]
)
def test_limit_parsing(limit, expected):
    if expected is None:
        with pytest.raises(ValueError, match="--limit"):
            parse_limit(limit)
    else:
        assert parse_limit(limit) == expected


def evaluate_cli(world, out, *extra, plans=("baseline",), benchmarks=("arc_easy",)):
    root, model_dir, data_dir = world
    argv = ["evaluate", "--model", str(model_dir), "--name", "tiny", "--out", str(out), "--limit", str(LIMIT)]
    argv += ["--data-dir", str(data_dir), "--dtype", "float32", "--device", "cpu", "--include-path", str(root / "tasks")]
    return cli.main([*argv, "--plans", *plans, "--benchmarks", *benchmarks, *extra])


def parquets(folder):
    return sorted(p.relative_to(folder) for p in Path(folder).rglob("*.parquet"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "/no/such/model"}, "/no/such/model"),
        ({"model": "org/never-downloaded"}, "org/never-downloaded: not in the local Hugging Face cache.*hf download"),
        ({"benchmarks": ("arc_easy", "arc_eesy")}, "unknown benchmark 'arc_eesy'.*arc_easy"),
        ({"plans": ("baseline", "skip-2")}, "skip-2"),
        ({"plans": ("baseline", "twist-N1")}, "twist.*baseline"),
        ({"plans": ("baseline", "skip-N2")}, "N=2.*4-layer.*0..1"),
        ({"data": "drop gsm8k"}, "gsm8k/test.jsonl.*question"),
    ],
)
def test_bad_input_names_the_value_and_writes_nothing(world, tmp_path, capsys, change, message):
    import re
    import shutil

    root, model_dir, data_dir = world
    plans = change.get("plans", ("baseline",))
    benchmarks = change.get("benchmarks", ("arc_easy",))
    if "model" in change:
        world = (root, Path(change["model"]), data_dir)
    if "data" in change:
        partial = shutil.copytree(data_dir, tmp_path / "partial-data")
        shutil.rmtree(partial / "gsm8k")
        world = (root, model_dir, partial)
        benchmarks = ("arc_easy", "gsm8k")
    # an earlier, finished result must survive the failed run
    kept = score_path(tmp_path / "out", "tiny", "baseline", "lambada_openai")
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"finished earlier")
    started = time.perf_counter()
    assert evaluate_cli(world, tmp_path / "out", plans=plans, benchmarks=benchmarks) == 2
    assert time.perf_counter() - started < 20  # at once: no hub retries (offline here), no task index
    assert re.search(message, capsys.readouterr().err, re.S)
    assert parquets(tmp_path / "out") == [kept.relative_to(tmp_path / "out")]
    assert kept.read_bytes() == b"finished earlier"


# a killed run is resumed on the few-shot benchmarks: the resumed scores must equal an uninterrupted run's
KILLED_BENCHMARKS = ["arc_easy_3shot", "gsm8k"]


def run_evaluate_process(world, out, plans, *extra):
    root, model_dir, data_dir = world
    command = [sys.executable, "-m", "painters", "evaluate", "--model", str(model_dir), "--name", "tiny"]
    command += ["--out", str(out), "--limit", str(LIMIT), "--data-dir", str(data_dir), "--device", "cpu"]
    command += ["--include-path", str(root / "tasks"), "--max-gen-toks", "8"]
    command += ["--benchmarks", *KILLED_BENCHMARKS, "--plans", *plans, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_leaves_only_finished_files_and_a_rerun_completes(session, world, tmp_path):
    plans = ["baseline", "skip-N0", "skip-N1", "reverse-N0", "reverse-N1", "parallel-N0", "parallel-N1", "middle_repeat-N0"]
    out = tmp_path / "out"
    process = run_evaluate_process(world, out, plans)
    deadline = time.monotonic() + 120
    while not list(out.rglob("*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {path: path.stat().st_mtime_ns for path in out.rglob("*.parquet")}
    assert 0 < len(finished) < len(plans) * len(BENCHMARKS)
    for path in finished:  # every file under a final name is whole
        assert len(pl.read_parquet(path)) >= 2
    rerun = run_evaluate_process(world, out, plans)
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log
    assert len(parquets(out)) == len(plans) * len(KILLED_BENCHMARKS)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # kept, not recomputed
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"]  # no temporaries
    # killed, resumed and in another process: the same scores and prompts as one uninterrupted run
    session.run(Request("tiny", tuple(plans), tuple(KILLED_BENCHMARKS), str(tmp_path / "whole"), limit=LIMIT,
                        gen_kwargs={"max_gen_toks": 8}))
    columns = ["metric", "filter", "value", "prompt_hash", "fewshot_seed"]
    for path in parquets(out):
        assert pl.read_parquet(out / path).select(columns).equals(pl.read_parquet(tmp_path / "whole" / path).select(columns))


def test_a_model_it_cannot_load_is_named(world, tmp_path, capsys):
    root, _, data_dir = world
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # no weights, no tokenizer
    assert evaluate_cli((root, broken, data_dir), tmp_path / "out") == 2
    assert str(broken) in capsys.readouterr().err
    assert parquets(tmp_path / "out") == [] if (tmp_path / "out").exists() else True


def test_surgery_follows_layers_placed_by_a_device_map(world):
    """--device-map: accelerate's dispatch hooks move tensors per layer; the plan must still hold.

    On this CPU-only machine every device is the CPU; a GPU node shows the cross-device case."""
    import torch
    from transformers import AutoModelForCausalLM

    from painters import plan, surgery

    _, model_dir, _ = world
    device_map = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    device_map |= {f"model.layers.{i}": "cpu" for i in range(4)}
    mapped = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device_map, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokens = torch.tensor([[1, 5, 9, 14, 3, 7]])
    for key in ("baseline", "reverse-N0", "parallel-N1"):
        with torch.no_grad(), surgery.apply(mapped, plan.parse(key)), surgery.apply(plain, plan.parse(key)):
            assert torch.equal(mapped(tokens).logits, plain(tokens).logits), key


@pytest.mark.parametrize(("flag", "value", "message"), [("--kv-cache", "averaged", "invalid choice: 'averaged'.*'exact', 'reference'"),
                                                        ("--memory-gb", "0", "'0': give the device's memory in GiB")])
def test_bad_generation_settings_are_refused_by_the_parser(world, tmp_path, capsys, flag, value, message):
    import re

    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli(world, tmp_path / "out", flag, value)
    assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_generated_scores_record_the_cache_and_a_plan_that_cannot_fit_is_refused(world, tmp_path, capsys):
    import json

    plans = ("baseline", "parallel-N0", "looped_parallel-N0-K3")
    assert evaluate_cli(world, tmp_path / "out", "--kv-cache", "reference", "--max-gen-toks", "4", "--limit", "3",
                        plans=plans, benchmarks=("gsm8k",)) == 0
    for plan in plans:
        frame = read_scores(tmp_path / "out", plan, "gsm8k")
        assert json.loads(frame["settings"][0])["kv_cache"] == "reference"
        assert frame["batch_size_used"][0] == 16  # the batch asked for fits (CPU memory)
    # a memory budget below the weights: not one sequence fits; refused before any work, naming the plan
    assert evaluate_cli(world, tmp_path / "small", "--memory-gb", "0.0001", "--max-gen-toks", "4", "--limit", "3",
                        plans=plans, benchmarks=("gsm8k",)) == 2
    assert "plan baseline: one sequence cannot fit the memory budget" in capsys.readouterr().err
    assert parquets(tmp_path / "small") == []


def test_score_rows_record_the_requests_and_their_tokens(session, tmp_path):
    session.run(Request("tiny", ("baseline", "skip-N1"), ("arc_easy", "gsm8k"), str(tmp_path), limit=4,
                        gen_kwargs={"max_gen_toks": 2}))
    task = session.task("arc_easy")["tasks"]["arc_easy"]
    expected = sum(len(session.tokenizer(i.args[0] + i.args[1])["input_ids"]) for i in task.instances)
    for plan in ("baseline", "skip-N1"):
        arc = read_scores(tmp_path, plan, "arc_easy").row(0, named=True)
        assert arc["requests"] == len(task.instances) == sum(len(i.doc["choices"]["text"]) for i in task.instances if i.idx == 0)
        # context and continuation tokenized apart, as lm-eval sends them: within a token per request of the joint text
        assert abs(arc["request_tokens"] - expected) <= arc["requests"]
        gsm = read_scores(tmp_path, plan, "gsm8k").row(0, named=True)
        assert gsm["requests"] == 4 and gsm["request_tokens"] > 4 * 100  # 5-shot prompts
