"""Shared contexts: requests that share a prefix are packed into one row (painters.packing, painters.engine).

Reference: today's rows (`share_contexts=False`), which are lm-eval's HFLM run plan by plan under
surgery.apply, bit for bit. Packed answers equal them within float rounding: CPU fp32, log-likelihoods
within 1e-5 or 4e-7 of their size (a few float32 roundings; HFLM itself differs by as much between
batch sizes 1 and 5 on these requests), and the same greedy flags.
"""

import random

import pytest
import transformers
from lm_eval.models.huggingface import HFLM

from painters import packing, surgery
from painters import plan as plans
from painters.engine import SweepLM
from painters.tiny import tiny_model
from test_engine import DEPTH, PLAN_KEYS, engine_answers, plan_at_a_time

TOLERANCE, RELATIVE = 1e-5, 4e-7


def make_lm(world, arch, **kwargs):
    _, model_dir, _ = world
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = tiny_model(arch, vocab_size=len(tokenizer), seed=3, layers=DEPTH).eval()
    logs = []
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, log=logs.append, **{"batch_size": 5, **kwargs})
    lm._packing_for_pass()  # the family's check, as the first pass makes it
    lm.logs = logs
    return lm


# gemma2: sliding (window 4) and full layers alternating, each given its own packed mask
@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gemma2", "gpt2"])
def lm(request, world):
    return make_lm(world, request.param)


def choice_requests(seed=0, documents=14, longest_context=30):
    """Multiple-choice documents (2-5 continuations of 1-8 tokens after one context), WinoGrande-like
    pairs (two contexts sharing the text before a blank, one ending), and lone requests."""
    rng = random.Random(seed)

    def tokens(n):
        return [rng.randrange(3, 200) for _ in range(n)]

    requests = []
    for _ in range(documents):
        context = tokens(rng.randrange(1, longest_context))
        for _ in range(rng.randrange(2, 6)):
            requests.append(((None, None), context, tokens(rng.choice([1, 1, 2, 3, 5, 8]))))
        before, ending = tokens(rng.randrange(2, 12)), tokens(rng.randrange(1, 5))
        for option in (tokens(rng.randrange(1, 3)), tokens(rng.randrange(1, 3))):
            requests.append(((None, None), before + option, ending))
        requests.append(((None, None), tokens(rng.randrange(1, 20)), tokens(rng.randrange(1, 4))))
    rng.shuffle(requests)
    return requests


def run_pass(lm, plan_list, requests, share: bool):
    """Every plan's answers in one pass, and the tokens the pass computed."""
    saved, lm.share_contexts = lm.share_contexts, share
    before = lm.tokens_computed
    try:
        answers, calls = engine_answers(lm, plan_list, requests)
    finally:
        lm.share_contexts = saved
    assert calls == [len(requests)]
    return answers, lm.tokens_computed - before


def assert_close(packed, reference):
    assert len(packed) == len(reference)
    for (value, _), (expected, _) in zip(packed, reference):
        assert value == pytest.approx(expected, abs=TOLERANCE, rel=RELATIVE)
    assert [greedy for _, greedy in packed] == [greedy for _, greedy in reference]


def test_packed_rows_answer_every_variant_as_rows_of_their_own(lm):
    plan_list = [plans.parse(key) for key in PLAN_KEYS]
    requests = choice_requests()
    packed, packed_tokens = run_pass(lm, plan_list, requests, share=True)
    today, today_tokens = run_pass(lm, plan_list, requests, share=False)
    assert lm.packing_refusal is None and lm.logs == []
    assert packed_tokens < 0.75 * today_tokens  # contexts computed once
    for plan in plan_list:
        assert_close(packed[plan.key], today[plan.key])
    assert packed["baseline"] != packed["skip-N3"]


def test_share_contexts_false_is_hflm_bit_for_bit(lm):
    requests = choice_requests(seed=1, documents=6)
    plan_list = [plans.parse(key) for key in ("baseline", "looped_parallel-N2-K3", "random-N2-S1", "switch-L3")]
    today, _ = run_pass(lm, plan_list, requests, share=False)
    packed, _ = run_pass(lm, plan_list, requests, share=True)
    for plan in plan_list:
        reference = plan_at_a_time(lm, plan, requests)
        assert today[plan.key] == reference  # exactly
        assert_close(packed[plan.key], reference)


def test_the_cost_models_token_counts_are_what_the_pass_computes(lm):
    requests = choice_requests(seed=2, documents=8)
    plan_list = [plans.parse("baseline"), plans.parse("skip-N1")]
    _, packed_tokens = run_pass(lm, plan_list, requests, share=True)
    _, today_tokens = run_pass(lm, plan_list, requests, share=False)
    counted = packing.token_counts(requests, max_length=lm.max_length, hidden_size=lm._hidden_size(), batch_size=5)
    assert counted == (today_tokens, packed_tokens)
    assert packed_tokens < today_tokens


def test_contexts_near_the_model_length_are_cut_as_hflm_cuts_them(world):
    """Requests longer than the model are cut from the left and stay on rows of their own; those that
    just fit are packed; every answer is HFLM's."""
    lm = make_lm(world, "llama", max_length=24)
    rng = random.Random(4)
    requests = []
    for length in (14, 20, 22, 23, 24, 26, 31):
        context = [rng.randrange(3, 200) for _ in range(length)]
        for size in (1, 2, 3, 6):
            requests.append(((None, None), context, [rng.randrange(3, 200) for _ in range(size)]))
    cut = [r for r in requests if packing.truncated(r[1], r[2], 24)]
    assert 0 < len(cut) < len(requests)
    plan_list = [plans.parse(key) for key in ("baseline", "reverse-N1", "looped_parallel-N2-K2")]
    packed, packed_tokens = run_pass(lm, plan_list, requests, share=True)
    _, today_tokens = run_pass(lm, plan_list, requests, share=False)
    assert packed_tokens < today_tokens
    assert packing.token_counts(requests, 24, lm._hidden_size(), 5) == (today_tokens, packed_tokens)
    for plan in plan_list:
        assert_close(packed[plan.key], plan_at_a_time(lm, plan, requests))


@pytest.mark.parametrize(("arch", "reason"), [
    ("bloom", "its forward takes no position_ids"),  # ALiBi from the 2D mask
    ("gpt_neo", "a packed row gives log-probabilities"),  # local attention of its own: found by the check
])
def test_a_family_refused_for_packing_falls_back_with_the_reason(world, arch, reason):
    lm = make_lm(world, arch)
    assert lm.packing_refusal is not None and lm.packing_refusal.startswith(reason)
    assert len(lm.logs) == 1 and lm.logs[0].startswith(f"shared contexts: off for {type(lm.model).__name__} ({reason}")
    requests = choice_requests(seed=5, documents=5)
    plan_list = [plans.parse(key) for key in ("baseline", "reverse-N1", "parallel-N2")]
    answers, tokens = run_pass(lm, plan_list, requests, share=True)
    assert tokens == packing.token_counts(requests, lm.max_length)[0]  # nothing packed
    for plan in plan_list:
        assert answers[plan.key] == plan_at_a_time(lm, plan, requests)  # today's rows, bit for bit
    assert len(lm.logs) == 1  # said once


def test_a_short_window_without_masks_per_layer_type_packs_only_requests_within_it(world):
    """Phi-3 (every layer sliding, window 4, one mask for all layers): requests of at most 4 input
    tokens are packed (the window then sees each whole request), longer ones keep their rows."""
    lm = make_lm(world, "phi3")
    assert lm.packing_refusal is None and lm._packing.layer_masks is None and lm._packing.max_input == 4
    rng = random.Random(6)
    requests = []
    for length in (1, 2, 2, 3, 6, 9):
        context = [rng.randrange(3, 200) for _ in range(length)]
        for size in (1, 2, 3):
            requests.append(((None, None), context, [rng.randrange(3, 200) for _ in range(size)]))
    plan_list = [plans.parse(key) for key in ("baseline", "reverse-N1", "looped_parallel-N1-K3")]
    packed, packed_tokens = run_pass(lm, plan_list, requests, share=True)
    _, today_tokens = run_pass(lm, plan_list, requests, share=False)
    assert packed_tokens < today_tokens
    for plan in plan_list:
        assert_close(packed[plan.key], plan_at_a_time(lm, plan, requests))


@pytest.mark.parametrize("logits_cache", [True, False])
def test_batch_size_auto_sizes_packed_rows(world, logits_cache):
    lm = make_lm(world, "gemma2", batch_size="auto", max_batch_size=8, logits_cache=logits_cache)
    probed = []
    original = lm._packed_call

    def spy(packing_, batch):
        probed.append(tuple(batch.input_ids.shape))
        return original(packing_, batch)

    lm._packed_call = spy
    requests = choice_requests(seed=7, documents=8)
    plan_list = [plans.parse(key) for key in ("baseline", "skip-N1", "looped_parallel-N2-K2")]
    packed, _ = run_pass(lm, plan_list, requests, share=True)
    longest = max(len(packing.model_input(c, r, None)) for _, c, r in requests)
    assert lm.detected_batch_size == 8 and probed[0] == (8, longest)  # the probe: 8 longest inputs
    for plan in plan_list:
        assert_close(packed[plan.key], plan_at_a_time(lm, plan, requests))


def test_rolling_loglikelihood_stays_on_its_rows(world):
    from lm_eval.api.instance import Instance

    lm = make_lm(world, "llama")
    texts = [" ".join(random.Random(i).choice(["w1", "w2", "w3", "w4"]) for _ in range(30)) for i in range(4)]
    instances = [Instance("loglikelihood_rolling", {}, (text,), idx=0) for text in texts]
    plan_list = [plans.parse(k) for k in ("baseline", "reverse-N1")]
    packed = []
    lm._answer_packed = lambda *args: packed.append(args)
    with lm.sweep(plan_list):
        got = {}
        for plan in plan_list:
            lm.plan = plan
            got[plan.key] = lm.loglikelihood_rolling(instances, disable_tqdm=True)
        lm.plan = None
        for plan in plan_list:
            with surgery.apply(lm.model, plan):
                assert got[plan.key] == pytest.approx(HFLM.loglikelihood_rolling(lm, instances, disable_tqdm=True), abs=TOLERANCE, rel=RELATIVE)
    assert packed == []


def test_token_counts_of_a_multiple_choice_document():
    context, choices = list(range(10, 30)), [[1, 2, 3], [4, 5], [6, 7, 8, 9], [2]]
    requests = [(context, choice) for choice in choices]
    as_sent, shared = packing.token_counts(requests)
    assert as_sent == sum(len(context) + len(c) - 1 for c in choices)
    assert shared == len(context) + sum(len(c) - 1 for c in choices)
    # cut at the model's length (21): the 3- and 4-token choices are cut from the left and share nothing,
    # the other two (21 and 20 tokens, one the other's prefix) share the context
    assert packing.token_counts(requests, max_length=21) == (21 + 21 + 21 + 20, 21 + 21 + 21)
    # lm-eval's form, and one-token continuations of one context counted once (HFLM's logits cache)
    ones = [((None, None), context, [t]) for t in (1, 2, 3)]
    assert packing.token_counts(ones) == (len(context), len(context))
    # a pass whose rows would save under a tenth of its tokens packs nothing (its rows would cost batches)
    lone = [(list(range(100 + 30 * i, 130 + 30 * i)), [7, 8]) for i in range(10)]
    sent = 10 * 31 + 21 + 20  # packing the two would save 20
    assert packing.token_counts(lone + [(list(range(40, 60)), [1, 2]), (list(range(40, 60)), [3])]) == (sent, sent)


def test_a_packed_row_is_the_trie_of_its_inputs():
    row = packing.trie_row([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6, 7], [9]])
    assert row.tokens == (1, 2, 3, 4, 6, 7, 5, 9) and row.depths == (0, 1, 2, 3, 3, 4, 2, 0)
    for member, path in zip(row.members, row.paths):
        tokens = [[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6, 7], [9]][member]
        assert [row.tokens[i] for i in path] == tokens
        # each token sees exactly its own request's earlier tokens
        for q in path:
            seen = [k for k in range(len(row)) if k <= q < row.ends[k]]
            assert seen == list(path[: path.index(q) + 1])


def test_the_cli_turns_sharing_off(world, tmp_path):
    import argparse

    from painters import evaluate

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    _, model_dir, _ = world
    args = parser.parse_args(["evaluate", "--model", str(model_dir), "--plans", "baseline", "--out", str(tmp_path)])
    assert evaluate.spec_from_args(args).share_contexts is True
    args = parser.parse_args(["evaluate", "--model", str(model_dir), "--plans", "baseline", "--out", str(tmp_path),
                              "--no-share-contexts"])
    assert evaluate.spec_from_args(args).share_contexts is False


@pytest.mark.parametrize("benchmark", ["arc_easy", "winogrande"])
def test_a_pass_through_session_run_with_shared_contexts_equals_simple_evaluate(session, tmp_path, benchmark):
    """The metrics written with packed rows equal lm-eval's simple_evaluate plan by plan; the setting is
    not recorded in the score (it is not a setting of a score)."""
    import json

    import polars as pl

    from painters.evaluate import Request
    from painters.results import score_path
    from test_engine import assert_scores_equal_simple_evaluate

    packed = []
    original = session.lm._answer_packed
    session.lm._answer_packed = lambda *args: packed.append(len(args[1])) or original(*args)
    keys = ["baseline", "skip-N1", "reverse-N0", "looped_parallel-N0-K2"]
    try:
        session.run(Request("tiny", tuple(keys), (benchmark,), str(tmp_path), limit=8))
    finally:
        del session.lm._answer_packed
    assert session.lm.packing_refusal is None and sum(packed) > 0  # rows were packed
    assert_scores_equal_simple_evaluate(session, tmp_path, "tiny", keys, benchmark, limit=8, bootstrap_iters=0)
    settings = json.loads(pl.read_parquet(score_path(tmp_path, "tiny", "baseline", benchmark))["settings"][0])
    assert "share_contexts" not in settings


def test_a_packed_batch_that_fails_falls_back_to_rows_of_their_own(world):
    """A family that takes the check but fails on packed rows under some plan: said once, every request
    then scored on its own row (HFLM's, bit for bit)."""
    lm = make_lm(world, "llama")
    calls = []
    original = lm._packed_call

    def failing(packing_, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("The size of tensor a (25) must match the size of tensor b (44)")
        return original(packing_, batch)

    lm._packed_call = failing
    requests = choice_requests(seed=8, documents=5)
    plan_list = [plans.parse(key) for key in ("baseline", "looped_parallel-N2-K3", "reverse-N1")]
    answers, _ = run_pass(lm, plan_list, requests, share=True)
    assert lm.packing_refusal == "a packed batch fails: RuntimeError: The size of tensor a (25) must match the size of tensor b (44)"
    assert len(lm.logs) == 1 and lm.packing_refusal in lm.logs[0]
    for plan in plan_list:
        assert answers[plan.key] == plan_at_a_time(lm, plan, requests)
