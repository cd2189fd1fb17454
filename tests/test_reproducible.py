"""Scores that do not depend on the run: few-shot prompts seeded as lm-eval's simple_evaluate seeds them.

Two few-shot benchmarks, as the study has: a 3-shot loglikelihood task (lm-eval's
arc_easy, 3-shot) and gsm8k (5-shot generate_until, exact match). The references
are lm-eval's own `simple_evaluate` on the untouched model and on a model rebuilt
with a plan's layers physically in place; the requests lm-eval sends to the model
are recorded and compared too, since greedy generation on a tiny random model
scores 0 whatever the prompt.
"""

import copy
import subprocess
import sys
from contextlib import contextmanager

import polars as pl
import pytest
import torch

from painters import plan as plans
from painters.evaluate import Request
from painters.results import score_path

FEWSHOT = ("arc_easy_3shot", "gsm8k")
LIMIT = 12
GEN_KWARGS = {"max_gen_toks": 8}


def request(out, plan_keys, benchmarks=FEWSHOT, **settings) -> Request:
    settings = {"limit": LIMIT, "gen_kwargs": GEN_KWARGS, **settings}
    return Request("tiny", tuple(plan_keys), tuple(benchmarks), str(out), **settings)


def scores(out, plan_key, benchmark) -> dict:
    """{(metric, filter): (value, prompt_hash)} of one score file."""
    frame = pl.read_parquet(score_path(out, "tiny", plan_key, benchmark))
    return {(r["metric"], r["filter"]): (r["value"], r["prompt_hash"]) for r in frame.iter_rows(named=True)}


def all_scores(out, plan_keys, benchmarks=FEWSHOT) -> dict:
    return {(p, b): scores(out, p, b) for p in plan_keys for b in benchmarks}


@contextmanager
def recorded_requests(lm):
    """Record the arguments of every request lm-eval hands to `lm` (an HFLM instance)."""
    seen = []

    def recording(method):
        def record(requests, *args, **kwargs):
            seen.extend((r.doc_id, r.idx, r.args) for r in requests)
            return method(requests, *args, **kwargs)

        return record

    originals = {name: getattr(lm, name) for name in ("loglikelihood", "generate_until")}
    for name, method in originals.items():
        setattr(lm, name, recording(method))
    try:
        yield seen
    finally:
        for name in originals:
            delattr(lm, name)  # the class's methods show through again


def reference(lm, session, benchmark) -> tuple[dict, list]:
    """lm-eval's simple_evaluate with its default seeds: ({(metric, filter): value}, requests)."""
    from lm_eval.evaluator import simple_evaluate

    with recorded_requests(lm) as seen:
        output = simple_evaluate(model=lm, tasks=[benchmark], task_manager=session.task_manager, limit=LIMIT,
                                 gen_kwargs=dict(GEN_KWARGS), bootstrap_iters=0, log_samples=False)
    values = {
        tuple(key.split(",", 1)): value
        for key, value in output["results"][benchmark].items()
        if "," in key and "_stderr," not in key
    }
    return values, seen


def rebuilt(model_dir, plan_key):
    """The model rebuilt with the plan's layers physically in a new list (copies), cache indices renumbered."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    layers = model.model.layers
    schedule = plans.parse(plan_key).schedule(len(layers))
    assert all(len(step) == 1 for step in schedule), "physical rebuilds take one layer per step"
    new_layers = torch.nn.ModuleList()
    for slot, (index,) in enumerate(schedule):
        layer = copy.deepcopy(layers[index])
        layer.self_attn.layer_idx = slot
        new_layers.append(layer)
    model.model.layers = new_layers
    model.config.num_hidden_layers = len(new_layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[index] for (index,) in schedule]
    return model.eval()


@pytest.mark.parametrize("benchmark", FEWSHOT)
@pytest.mark.parametrize("plan_key", ["baseline", "reverse-N0", "middle_repeat-N0"])
def test_scores_and_prompts_equal_simple_evaluate(session, world, tmp_path, benchmark, plan_key):
    """Baseline: the untouched model. A plan: the model rebuilt with that plan's layers in place."""
    from lm_eval.models.huggingface import HFLM

    with recorded_requests(session.lm) as ours:
        session.run(request(tmp_path, [plan_key], [benchmark]))
    _, model_dir, _ = world
    model = str(model_dir) if plan_key == "baseline" else rebuilt(model_dir, plan_key)
    values, theirs = reference(HFLM(pretrained=model, tokenizer=session.tokenizer, device="cpu", batch_size=16,
                                    dtype="float32"), session, benchmark)
    assert ours == theirs  # the same few-shot prompts, in the same order
    mine = scores(tmp_path, plan_key, benchmark)
    assert {key: value for key, (value, _) in mine.items()} == values


def test_a_score_does_not_depend_on_what_ran_before_it(session, tmp_path):
    plan_keys = ["baseline", "skip-N1"]
    session.run(request(tmp_path / "a", plan_keys))
    # other benchmarks, other generation settings and the same plans in another order, in the same process
    session.run(request(tmp_path / "other", ["reverse-N0"], ("gsm8k", "arc_easy"), gen_kwargs={"max_gen_toks": 3}))
    session.run(request(tmp_path / "b", plan_keys[::-1], FEWSHOT[::-1]))
    first = all_scores(tmp_path / "a", plan_keys)
    assert all_scores(tmp_path / "b", plan_keys) == first
    # the prompts really are few-shot prompts shared by every plan of a benchmark
    assert first[("baseline", "gsm8k")][("exact_match", "strict-match")][1] == first[("skip-N1", "gsm8k")][("exact_match", "strict-match")][1]


def test_the_fewshot_seed_changes_the_prompts_and_every_row_records_its_settings(session, tmp_path):
    session.run(request(tmp_path / "default", ["baseline"]))
    session.run(request(tmp_path / "seed7", ["baseline"], fewshot_seed=7))
    default, seed7 = all_scores(tmp_path / "default", ["baseline"]), all_scores(tmp_path / "seed7", ["baseline"])
    for benchmark in FEWSHOT:
        hashes = {h for _, h in default[("baseline", benchmark)].values()} | {h for _, h in seed7[("baseline", benchmark)].values()}
        assert len(hashes) == 2, benchmark  # one hash per file, and they differ
    frame = pl.concat([pl.read_parquet(score_path(tmp_path / "seed7", "tiny", "baseline", b)) for b in FEWSHOT])
    assert set(frame["fewshot_seed"]) == {7} and set(frame["batch_size"]) == {"16"}
    assert set(frame["num_fewshot"]) == {3, 5} and set(frame["bootstrap_iters"]) == {1000}
    generation = frame.filter(pl.col("benchmark") == "gsm8k")["generation_kwargs"].unique().to_list()
    assert len(generation) == 1 and '"max_gen_toks": 8' in generation[0] and '"do_sample": false' in generation[0]
    assert frame.filter(pl.col("benchmark") == "arc_easy_3shot")["generation_kwargs"].is_null().all()


def cli_argv(world, out, plan_keys, *extra):
    root, model_dir, data_dir = world
    argv = ["evaluate", "--model", str(model_dir), "--name", "tiny", "--out", str(out), "--limit", str(LIMIT),
            "--data-dir", str(data_dir), "--include-path", str(root / "tasks"), "--dtype", "float32",
            "--device", "cpu", "--max-gen-toks", str(GEN_KWARGS["max_gen_toks"])]
    return [*argv, "--plans", *plan_keys, "--benchmarks", *FEWSHOT, *extra]


def test_a_fresh_process_and_a_busy_session_give_the_same_scores(session, world, tmp_path):
    """In a fresh process, and in a session that first served another request (other plans,
    another generation length) and then takes the plans in reverse order: the same scores."""
    plan_keys = ["baseline", "skip-N1"]
    session.run(request(tmp_path / "in_process", plan_keys))
    fresh = subprocess.run([sys.executable, "-m", "painters", *cli_argv(world, tmp_path / "fresh", plan_keys)],
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    session.run(request(tmp_path / "other", ["skip-N1", "reverse-N0"], gen_kwargs={"max_gen_toks": 3}))
    session.run(request(tmp_path / "busy", plan_keys[::-1]))
    expected = all_scores(tmp_path / "in_process", plan_keys)
    assert all_scores(tmp_path / "fresh", plan_keys) == expected
    assert all_scores(tmp_path / "busy", plan_keys) == expected
