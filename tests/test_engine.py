"""The sweep engine answers every plan of a pass as the plan-at-a-time HFLM does.

Reference: lm-eval's own HFLM request loop run on the model under `surgery.apply`
(one plan at a time, no shared states), on the same requests. The scores of a whole
pass through `Session.run` are compared with lm-eval's `simple_evaluate` in
test_reproducible.py and below.
"""

import dataclasses
import random

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.evaluator import simple_evaluate
from lm_eval.models.huggingface import HFLM

from painters import plan as plans
from painters import surgery, trie
from painters.engine import SweepLM
from painters.evaluate import Request
from painters.tiny import tiny_model

# every variant, looped parallel at several K, random and the whole-stack plans at several seeds
PLAN_KEYS = [
    "baseline", "skip-N1", "skip-N3", "middle_repeat-N2", "reverse-N1", "parallel-N2", "random-N2-S0",
    "random-N2-S1", "random-N1-S0", "looped_parallel-N2-K1", "looped_parallel-N2-K2",
    "looped_parallel-N2-K3", "looped_parallel-N1-K3", "skip_layer-L5", "switch-L3", "shuffle_all-S0",
    "shuffle_all-S1", "prune-P25-S0", "shuffle_prune-P25-S2", "order-0_1_2.3_3_7",
    "order-0_1_2.3_3_7",  # the same schedule twice: the later visit starts from the full stored state
]
DEPTH = 8


# gemma2: sliding/full attention alternating (a mask and cache slot type per call); gpt2: stack `transformer.h`
@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gemma2", "gpt2"])
def lm(request, world):
    _, model_dir, _ = world
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = tiny_model(request.param, vocab_size=len(tokenizer), seed=3, layers=DEPTH).eval()
    assert surgery.num_layers(model) == DEPTH
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=5)
    lm._packing_for_pass()  # its check's forwards (once per model) before any test counts calls
    return lm


def token_requests(seed=0, count=23):
    """Multiple-choice-like requests: shared contexts, one- and many-token continuations, varied lengths."""
    rng = random.Random(seed)
    requests = []
    for _ in range(count):
        context = [rng.randrange(3, 200) for _ in range(rng.randrange(1, 30))]
        for _ in range(rng.randrange(1, 4)):
            continuation = [rng.randrange(3, 200) for _ in range(rng.choice([1, 1, 2, 5]))]
            requests.append(((None, None), context, continuation))
    return requests


def plan_at_a_time(lm, plan, requests):
    with surgery.apply(lm.model, plan):
        return HFLM._loglikelihood_tokens(lm, requests)


def engine_answers(lm, plan_list, requests):
    """Each plan's answers, all computed in the first plan's call; the rest are read from the table."""
    calls = []
    with lm.sweep(plan_list):
        original = lm._answer_all_plans

        def counted(*args, **kwargs):
            calls.append(len(args[0]))
            return original(*args, **kwargs)

        lm._answer_all_plans = counted
        try:
            answers = {}
            for plan in plan_list:
                lm.plan = plan
                answers[plan.key] = lm._loglikelihood_tokens(requests)
        finally:
            del lm._answer_all_plans
    return answers, calls


def assert_same(engine, reference):
    # requests that share a context are packed into one row (painters.packing): equal within float
    # rounding, in fp32 1e-5 or 4e-7 of the value (README, "Reproducible scores"); share_contexts=False
    # is bit for bit (tests/test_shared_contexts.py)
    assert len(engine) == len(reference)
    for (value, greedy), (expected, expected_greedy) in zip(engine, reference):
        assert value == pytest.approx(expected, abs=1e-5, rel=4e-7)
        assert greedy == expected_greedy


def test_one_pass_answers_every_plan_as_plan_at_a_time_does(lm):
    plan_list = [plans.parse(key) for key in PLAN_KEYS]
    requests = token_requests()
    counts = {"layers": 0, "forwards": 0}

    def count(name):
        def hook(*_):
            counts[name] += 1
        return hook

    handles = [layer.register_forward_pre_hook(count("layers")) for layer in surgery.layer_list(lm.model)]
    handles.append(lm.model.get_input_embeddings().register_forward_pre_hook(count("forwards")))
    try:
        answers, calls = engine_answers(lm, plan_list, requests)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [len(requests)]  # one pass answered all plans
    # per batch, each distinct schedule prefix ran once: the layer calls the trie counts, no more
    batches = counts["forwards"] / len(plan_list)
    schedules = [plan.schedule(DEPTH) for plan in plan_list]
    assert counts["layers"] == batches * trie.distinct_layer_calls(schedules) < batches * trie.layer_calls(schedules)
    for plan in plan_list:
        assert_same(answers[plan.key], plan_at_a_time(lm, plan, requests))
    # different plans give different answers (the table does not hand one plan's to another)
    assert answers["baseline"] != answers["skip-N3"]
    assert lm.store.states == {}  # nothing kept after the pass


def test_answers_do_not_depend_on_the_other_plans_of_the_pass(lm):
    requests = token_requests(seed=1, count=9)
    together, _ = engine_answers(lm, [plans.parse(k) for k in PLAN_KEYS], requests)
    for key in ("looped_parallel-N2-K3", "random-N2-S1", "baseline"):
        alone, _ = engine_answers(lm, [plans.parse(key)], requests)
        assert alone[key] == together[key]


def test_rolling_loglikelihood_through_the_pass(lm):
    words = [f"w{i}" for i in range(40)]
    rng = random.Random(2)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(5, 60))) for _ in range(6)]
    instances = [Instance("loglikelihood_rolling", {}, (text,), idx=0) for text in texts]
    plan_list = [plans.parse(k) for k in ("baseline", "looped_parallel-N2-K2", "looped_parallel-N2-K3", "reverse-N1")]
    with lm.sweep(plan_list):
        engine = {}
        for plan in plan_list:
            lm.plan = plan
            engine[plan.key] = lm.loglikelihood_rolling(instances, disable_tqdm=True)
    for plan in plan_list:
        with surgery.apply(lm.model, plan):
            reference = lm.loglikelihood_rolling(instances, disable_tqdm=True)
        assert engine[plan.key] == pytest.approx(reference, abs=1e-5)


def test_kept_states_are_the_branch_points_only(lm):
    """Memory: at most one kept state per depth of the deepest schedule, each one batch of hidden states."""
    plan_list = [plans.parse(key) for key in PLAN_KEYS]
    requests = token_requests(seed=3, count=10)
    lm.store.peak_bytes = 0
    engine_answers(lm, plan_list, requests)
    longest = max(len(c) + len(r) for _, c, r in requests)
    hidden = lm.model.config.hidden_size
    deepest = max(len(p.schedule(DEPTH)) for p in plan_list)
    one_state = lm.batch_size * longest * hidden * 4
    assert 0 < lm.store.peak_bytes <= deepest * one_state
    # the walk keeps far fewer states than it visits plans
    visits = trie.walk([p.schedule(DEPTH) for p in plan_list])
    assert max(len(v.keep) for v in visits) < len(plan_list)


def assert_scores_equal_simple_evaluate(session, results_dir, model_name, keys, benchmark, limit, bootstrap_iters):
    """Each plan's metrics written by Session.run equal lm-eval's simple_evaluate on the model under that plan."""
    import polars as pl

    from painters.results import score_path

    for key in keys:
        frame = pl.read_parquet(score_path(results_dir, model_name, key, benchmark))
        got = {(r["metric"], r["filter"]): r["value"] for r in frame.iter_rows(named=True)}
        with surgery.apply(session.model, plans.parse(key)):
            reference = simple_evaluate(
                model=HFLM(pretrained=session.model, tokenizer=session.tokenizer, batch_size=session.spec.batch_size),
                tasks=[benchmark], limit=limit, task_manager=session.task_manager, bootstrap_iters=bootstrap_iters,
                verbosity="WARNING",
            )
        for name, values in reference["results"].items():
            for metric_key, value in values.items():
                if "," in metric_key and "_stderr," not in metric_key:
                    metric, filter_name = metric_key.split(",", 1)
                    assert got[(metric, filter_name)] == pytest.approx(value, abs=1e-6), (key, metric)


@pytest.mark.parametrize("benchmark", ["hellaswag", "arc_easy_3shot", "lambada_openai"])
def test_a_pass_through_session_run_equals_simple_evaluate_per_plan(session, tmp_path, benchmark):
    """Metrics of a shared pass equal lm-eval's simple_evaluate run plan by plan on the model under the plan."""
    keys = ["baseline", "skip-N1", "looped_parallel-N0-K2", "looped_parallel-N0-K3", "random-N0-S4", "shuffle_all-S1"]
    session.run(Request("tiny", tuple(keys), (benchmark,), str(tmp_path), limit=8))
    assert_scores_equal_simple_evaluate(session, tmp_path, "tiny", keys, benchmark, limit=8, bootstrap_iters=1000)


def test_painters_evaluate_runs_other_families_as_lm_eval_does_plan_by_plan(world, tmp_path):
    """A saved Gemma 2 (mixed sliding/full attention) through Session.run: each plan's metrics
    equal simple_evaluate on the model under that plan."""
    from conftest import spec_of
    from painters.evaluate import Session
    from painters.tiny import save_tiny_causal_lm

    model_dir = save_tiny_causal_lm(tmp_path / "gemma2", arch="gemma2", seed=1, layers=6)
    spec = dataclasses.replace(spec_of(world), model=str(model_dir))
    session = Session(spec, log=lambda _: None)
    assert type(session.model).__name__ == "Gemma2ForCausalLM" and session.num_layers == 6
    keys = ["baseline", "reverse-N0", "looped_parallel-N0-K2"]
    session.run(Request("gemma", tuple(keys), ("arc_easy",), str(tmp_path / "results"), limit=6))
    assert_scores_equal_simple_evaluate(
        session, tmp_path / "results", "gemma", keys, "arc_easy", limit=6, bootstrap_iters=0)


def test_batch_size_auto_is_recorded(world, tmp_path):
    import polars as pl

    from conftest import spec_of
    from painters.evaluate import Session
    from painters.results import score_path

    spec = spec_of(world)
    session = Session(dataclasses.replace(spec, batch_size="auto"), log=lambda _: None)
    session.run(Request("tiny", ("baseline", "skip-N1"), ("arc_easy",), str(tmp_path), limit=4))
    frame = pl.read_parquet(score_path(tmp_path, "tiny", "skip-N1", "arc_easy"))
    assert set(frame["batch_size"]) == {"auto"}
    assert frame["batch_size_used"][0] >= 1
    assert torch.is_grad_enabled()  # the probe leaves global state alone
