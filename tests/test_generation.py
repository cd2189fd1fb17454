"""Generation under plans: the shared prefill, the cache modes, the memory budget.

References: lm-eval's own HFLM generate_until run plan by plan on the model under
`surgery.apply` (no shared prefill), and the real cache tensors for the cost arithmetic. The
reference cache mode is checked against the official Painters code's own generations in
test_official_generation.py.
"""

import random

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from painters import cost, generation, surgery, trie
from painters import plan as plans
from painters.engine import SweepLM
from painters.tiny import tiny_model

DEPTH = 8
# every variant, looped parallel at several K, random at several seeds, and a schedule twice
PLAN_KEYS = [
    "baseline", "skip-N1", "middle_repeat-N2", "reverse-N1", "parallel-N2", "parallel-N1", "random-N2-S0",
    "random-N2-S1", "looped_parallel-N2-K1", "looped_parallel-N2-K2", "looped_parallel-N2-K3",
    "looped_parallel-N1-K3", "looped_parallel-N0-K2", "skip_layer-L5", "switch-L3", "shuffle_all-S0",
    "prune-P25-S0", "order-0_1_2.3_3_7", "order-0_1_2.3_3_7",
]


class PlanByPlanLM(HFLM):
    """lm-eval's HFLM generating under one plan (the model under surgery.apply), no shared prefill;
    in reference mode with the reference's cache."""

    kv_cache = "exact"
    schedule = None

    def _model_generate(self, context, max_length, stop, **kwargs):
        if self.kv_cache == "reference":
            kwargs[generation.cache_argument(self.model)] = generation.PlanCache(self.model.config, self.schedule, "reference")
        return super()._model_generate(context, max_length, stop, **kwargs)


def prompts(tokenizer, count=11, seed=0):
    rng = random.Random(seed)
    words = [tokenizer.decode([i]) for i in range(10, 200)]
    return ["".join(rng.choice(words) for _ in range(rng.randrange(2, 25))) for _ in range(count)]


def instances(texts, max_gen_toks=7, until=("\n\n",)):
    settings = {"until": list(until), "max_gen_toks": max_gen_toks, "do_sample": False}
    return [Instance("generate_until", {}, (text, dict(settings)), idx=0) for text in texts]


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "gemma2"])
def model_and_tokenizer(request, world):
    _, model_dir, _ = world
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = tiny_model(request.param, vocab_size=len(tokenizer), seed=5, layers=DEPTH).eval()
    return model, tokenizer


def plan_by_plan(model, tokenizer, plan, requests, kv_cache, batch_size):
    lm = PlanByPlanLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    lm.kv_cache, lm.schedule = kv_cache, plan.schedule(DEPTH)
    with surgery.apply(model, plan):
        return lm.generate_until(requests, disable_tqdm=True)


def shared_pass(lm, plan_list, requests):
    outputs = {}
    with lm.sweep(plan_list):
        for plan in plan_list:
            lm.plan = plan
            outputs[plan.key] = lm.generate_until(requests, disable_tqdm=True)
    return outputs


@pytest.mark.parametrize("kv_cache", ["exact", "reference"])
def test_shared_prefill_generates_what_hflm_generates_plan_by_plan(model_and_tokenizer, kv_cache):
    model, tokenizer = model_and_tokenizer
    if kv_cache == "reference" and generation.generation_refusal(model, plans.parse("parallel-N2"), kv_cache):
        pytest.skip(generation.generation_refusal(model, plans.parse("parallel-N2"), kv_cache))
    plan_list = [plans.parse(key) for key in PLAN_KEYS]
    requests = instances(prompts(tokenizer))
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=4, kv_cache=kv_cache)
    outputs = shared_pass(lm, plan_list, requests)
    for plan in plan_list:
        assert outputs[plan.key] == plan_by_plan(model, tokenizer, plan, requests, kv_cache, 4), plan.key
    assert outputs["baseline"] != outputs["skip-N1"]  # plans are not handed each other's generations
    assert lm.prefill_store.states == {} and lm.prefill_store.kv == {}  # nothing kept after the pass


def test_reference_mode_changes_only_parallel_plans(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    if generation.generation_refusal(model, plans.parse("parallel-N2"), "reference"):
        pytest.skip("no reference cache for this family")
    plan_list = [plans.parse(key) for key in ("baseline", "reverse-N1", "random-N2-S0", "parallel-N1",
                                              "looped_parallel-N1-K3", "looped_parallel-N0-K2")]
    requests = instances(prompts(tokenizer, count=8, seed=1), max_gen_toks=10)
    exact = shared_pass(SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=8), plan_list, requests)
    reference = shared_pass(SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=8, kv_cache="reference"),
                            plan_list, requests)
    for key in ("baseline", "reverse-N1", "random-N2-S0"):
        assert exact[key] == reference[key]
    assert any(exact[key] != reference[key] for key in ("parallel-N1", "looped_parallel-N1-K3", "looped_parallel-N0-K2"))


def test_prefill_runs_each_distinct_schedule_prefix_once(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    plan_list = [plans.parse(key) for key in ("baseline", "looped_parallel-N1-K1", "looped_parallel-N1-K2",
                                              "looped_parallel-N1-K3", "skip-N2", "reverse-N2")]
    requests = instances(prompts(tokenizer, count=4, seed=2), max_gen_toks=1)  # one token: the prefill only
    calls = []
    handles = [layer.register_forward_pre_hook(lambda module, args: calls.append(1)) for layer in surgery.layer_list(model)]
    try:
        shared_pass(SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=4), plan_list, requests)
    finally:
        for handle in handles:
            handle.remove()
    schedules = [plan.schedule(DEPTH) for plan in plan_list]
    assert len(calls) == trie.distinct_layer_calls(schedules) < trie.layer_calls(schedules)


def generate_exactly(model, plan, inputs, new_tokens, kv_cache):
    """Greedy generation of exactly `new_tokens` under `plan` with a PlanCache; returns the cache."""
    schedule = plan.schedule(surgery.num_layers(model))
    with surgery.apply(model, plan):
        cache = generation.PlanCache(model.config, schedule, kv_cache)
        model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                       **{generation.cache_argument(model): cache})
    return cache


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "qwen2", "gemma2"])
@pytest.mark.parametrize("kv_cache", ["exact", "reference"])
def test_cache_bytes_predicted_equal_the_real_tensors(world, arch, kv_cache):
    _, model_dir, _ = world
    model = tiny_model(arch, vocab_size=300, seed=1, layers=DEPTH).eval()
    shape = cost.ModelShape.from_config(model.config)
    prompt, new_tokens = 13, 6
    inputs = torch.randint(5, 290, (3, prompt))
    for key in ("baseline", "skip-N2", "middle_repeat-N1", "parallel-N1", "looped_parallel-N0-K3", "looped_parallel-N2-K4"):
        plan = plans.parse(key)
        schedule = plan.schedule(DEPTH)
        if kv_cache == "reference" and generation.generation_refusal(model, plan, kv_cache):
            continue
        cache = generate_exactly(model, plan, inputs, new_tokens, kv_cache)
        # the last generated token is never fed back: the cache holds prompt + new_tokens - 1
        predicted = 3 * cost.cache_bytes(schedule, shape, prompt + new_tokens - 1, 4, kv_cache)
        assert cache.nbytes() == predicted, key
        calls, steps = len(surgery.called_layers(schedule)), len(schedule)
        if kv_cache == "reference" and calls > steps and not any(shape.is_sliding(i) for i in range(DEPTH)):
            assert predicted == 3 * cost.cache_bytes(schedule, shape, prompt + new_tokens - 1, 4, "exact") * steps // calls


def test_a_batch_that_cannot_fit_is_lowered_and_recorded(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    logged = []
    plan_list = [plans.parse("baseline"), plans.parse("looped_parallel-N0-K4")]
    requests = instances(prompts(tokenizer, count=6, seed=3), max_gen_toks=5)
    shape, depth = cost.ModelShape.from_config(model.config), DEPTH
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=6, log=logged.append)
    prompt = max(len(lm.tok_encode(r.args[0])) for r in requests)
    deep = cost.cache_bytes(plan_list[1].schedule(depth), shape, prompt + 5, 4)
    loaded = sum(p.nelement() * p.element_size() for p in model.parameters()) + sum(
        b.nelement() * b.element_size() for b in model.buffers())
    extra = cost.shared_prefill_bytes([p.schedule(depth) for p in plan_list], trie.walk([p.schedule(depth) for p in plan_list]),
                                      shape, prompt, 4) + cost.working_bytes(shape, prompt, 4)
    lm.memory_gb = (loaded + 2.5 * (deep + extra)) / 2**30  # room for two sequences of the deep plan
    sizes = lm.generation_batch_size(requests, plan_list)
    assert sizes["looped_parallel-N0-K4"] == 2 and 2 < sizes["baseline"] <= 6  # each plan at what fits it
    assert len(logged) == 1 and "lowered" in logged[0] and "down to 2 for looped_parallel-N0-K4" in logged[0]
    outputs = {}
    with lm.sweep(plan_list):
        for plan in plan_list:
            lm.plan = plan
            outputs[plan.key] = lm.generate_until(requests, disable_tqdm=True)
        assert lm.generation_batch_sizes == sizes  # what the score rows record as batch_size_used
    for plan in plan_list:  # the lowered batch generates what plan-by-plan HFLM does at that batch size
        assert outputs[plan.key] == plan_by_plan(model, tokenizer, plan, requests, "exact", sizes[plan.key])


def test_a_plan_whose_single_sequence_cannot_fit_is_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=2)
    loaded = sum(p.nelement() * p.element_size() for p in [*model.parameters(), *model.buffers()])
    lm.memory_gb = (loaded + 1000) / 2**30
    with pytest.raises(ValueError, match=r"plan baseline: one sequence cannot fit .* exact cache is .* slots x"):
        lm.generation_batch_size(instances(prompts(tokenizer, count=2)), [plans.parse("baseline")])


def test_recurrent_state_in_layer_modules_is_refused_for_a_repeated_layer():
    model = tiny_model("recurrent_gemma", vocab_size=300, seed=0, layers=4).eval()
    assert generation.generation_refusal(model, plans.parse("baseline"), "exact") is None
    assert generation.generation_refusal(model, plans.parse("reverse-N0"), "exact") is None  # each layer once
    reason = generation.generation_refusal(model, plans.parse("looped_parallel-N0-K2"), "exact")
    assert reason and "calls layer 1 2 times" in reason and "in their modules" in reason
    assert "does not use" in generation.generation_refusal(model, plans.parse("parallel-N0"), "reference") or \
        "kv_cache reference" in generation.generation_refusal(model, plans.parse("parallel-N0"), "reference")
