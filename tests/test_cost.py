"""The cost model against what torch counts and holds (painters.cost).

References: torch.utils.flop_counter.FlopCounterMode over real forwards of tiny models of
several families under every variant (plan by plan, and the engine's shared walk), and the
engine's measured kept states. The generation cache's bytes are checked against the real
cache tensors in test_generation.py.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from painters import cost, surgery, trie
from painters import plan as plans
from painters.engine import SweepLM
from painters.tiny import tiny_model

DEPTH = 6
PLAN_KEYS = ["baseline", "skip-N1", "middle_repeat-N1", "reverse-N0", "random-N1-S3", "parallel-N1",
             "looped_parallel-N0-K2", "looped_parallel-N1-K3", "skip_layer-L2", "switch-L4", "shuffle_all-S1",
             "prune-P34-S0", "order-0_1.2_2_5"]


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "qwen2", "gemma2", "gpt2"])
def eager_model(request):
    model = tiny_model(request.param, vocab_size=300, seed=0, layers=DEPTH)
    model.set_attn_implementation("eager")  # attention as matrix products, which the counter sees
    return model


def counted_flops(run) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def test_flops_of_every_plan_equal_the_counted_ones(eager_model):
    shape = cost.ModelShape.from_config(eager_model.config)
    inputs = torch.randint(3, 290, (3, 11))
    for key in PLAN_KEYS:
        plan = plans.parse(key)
        schedule = plan.schedule(DEPTH)

        def forward():
            with surgery.apply(eager_model, plan):
                eager_model(inputs, use_cache=False)

        assert counted_flops(forward) == cost.pass_flops([schedule], shape, 3, 11).total, key


def test_flops_of_the_shared_walk_equal_the_counted_ones(eager_model, world):
    import transformers

    _, model_dir, _ = world
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    lm = SweepLM(pretrained=eager_model, tokenizer=tokenizer, batch_size=4)
    shape = cost.ModelShape.from_config(eager_model.config)
    plan_list = [plans.parse(key) for key in PLAN_KEYS]
    schedules = [plan.schedule(DEPTH) for plan in plan_list]
    inputs = torch.randint(3, 290, (4, 9))
    with lm.sweep(plan_list):
        lm.store.peak_bytes = 0
        counted = counted_flops(lambda: list(lm._walk(inputs)))
        kept = lm.store.peak_bytes
    shared = cost.pass_flops(schedules, shape, 4, 9)
    assert counted == shared.total < cost.pass_flops(schedules, shape, 4, 9, shared=False).total
    assert shared.lm_head == len(plan_list) * cost.lm_head_flops(shape, 36)
    # the hidden states the walk kept at once: what the cost model says it keeps
    states = cost.most_kept_states(trie.walk(schedules))
    assert kept == states * 4 * 9 * shape.hidden_size * 4
    assert cost.loglikelihood_kept_bytes(shape, states, 4, 9, 4) == kept + 4 * 9 * shape.vocab_size * 8


def test_a_cached_decode_step_counts_attention_over_the_cache(eager_model):
    shape = cost.ModelShape.from_config(eager_model.config)
    inputs = torch.randint(3, 290, (2, 10))
    plan = plans.parse("looped_parallel-N1-K2")
    with surgery.apply(eager_model, plan), torch.no_grad():
        past = eager_model(inputs, use_cache=True).past_key_values
        step = counted_flops(lambda: eager_model(inputs[:, :1], past_key_values=past, use_cache=True))
    assert step == cost.decode_step_flops(plan.schedule(DEPTH), shape, 2, 10)
    if not shape.layer_types:  # every call attends to the 10 cached tokens and the new one
        calls = len(surgery.called_layers(plan.schedule(DEPTH)))
        assert step == calls * cost.call_flops(shape, 2, 1, 11) + cost.lm_head_flops(shape, 2)


def test_shape_from_a_config_json_equals_the_loaded_models():
    model = tiny_model("qwen2", vocab_size=300, layers=DEPTH)
    assert cost.ModelShape.from_config_dict(model.config.to_dict()) == cost.ModelShape.from_config(model.config)
    with pytest.raises(ValueError, match="model_type 'nonesuch'"):
        cost.ModelShape.from_config_dict({"model_type": "nonesuch"})


LLAMA_7B = cost.ModelShape(depth=32, hidden_size=4096, num_heads=32, num_kv_heads=32, head_dim=128,
                           intermediate_size=11008, vocab_size=32000)


def test_llama_7b_arithmetic_matches_the_design_figures():
    # DESIGN.md 4c: ~0.40 GFLOP per token per layer call, 0.26 for the lm head, 0.40 GB of weights
    # per layer (bf16), 16 KiB of K/V per token per call, ~15 GB per sequence for looped_parallel-N0-K28
    assert cost.call_flops(LLAMA_7B, 1, 1, 0) == pytest.approx(0.405e9, rel=0.01)
    assert cost.lm_head_flops(LLAMA_7B, 1) == pytest.approx(0.262e9, rel=0.01)
    assert LLAMA_7B.layer_matmul_parameters() * 2 == pytest.approx(0.405e9, rel=0.01)
    assert LLAMA_7B.kv_elements_per_token() * 2 == 16 * 1024
    deepest = plans.parse("looped_parallel-N0-K28").schedule(32)
    assert cost.cache_bytes(deepest, LLAMA_7B, 1080, 2) == pytest.approx(15.4e9, rel=0.01)
    assert cost.cache_bytes(deepest, LLAMA_7B, 1080, 2, "reference") * 869 == cost.cache_bytes(deepest, LLAMA_7B, 1080, 2) * 29


def test_a_job_that_cannot_hold_its_batch_generates_in_smaller_batches_and_fits_the_device():
    h100 = cost.DEVICES["h100"]
    gsm8k = cost.benchmark_tokens("gsm8k", True, 256, None)
    deepest = [plans.parse("looped_parallel-N0-K28").schedule(32)]
    exact = cost.job_cost(deepest, LLAMA_7B, gsm8k, h100, 2, 32)
    reference = cost.job_cost(deepest, LLAMA_7B, gsm8k, h100, 2, 32, "reference")
    assert exact.peak_bytes <= h100.memory_gb * 2**30 and reference.peak_bytes <= h100.memory_gb * 2**30
    assert exact.seconds > 2 * reference.seconds  # its batches are a few sequences: decode reads all weights per step
    assert 1.5 * 3600 < exact.seconds < 6 * 3600  # DESIGN 4c: the deepest heatmap plan, ~3 GPU-hours on gsm8k


def test_sharing_costs_less_and_more_plans_cost_more():
    h100 = cost.DEVICES["h100"]
    hellaswag = cost.benchmark_tokens("hellaswag", False, None, None)
    assert hellaswag.tokens == pytest.approx(3.1e6, rel=0.01)  # as sent; a context once per document: ~1.4 M (issue 25)
    assert hellaswag.computed_tokens == pytest.approx(1.44e6, rel=0.01)
    assert cost.benchmark_tokens("hellaswag", False, None, None, shared_contexts=False).computed_tokens == hellaswag.tokens
    assert cost.benchmark_tokens("lambada_openai", False, None, None).computed == 1.0  # one continuation per document
    row = [plans.parse(f"looped_parallel-N5-K{k}").schedule(32) for k in range(1, 9)]
    one = cost.job_cost(row[:1], LLAMA_7B, hellaswag, h100, 2, 32)
    eight = cost.job_cost(row, LLAMA_7B, hellaswag, h100, 2, 32)
    unshared = sum(cost.job_cost([s], LLAMA_7B, hellaswag, h100, 2, 32).seconds for s in row)
    assert one.seconds < eight.seconds < unshared
    assert cost.benchmark_tokens("hellaswag", False, None, 100).requests == 400  # limit: 100 documents x 4 endings


def test_device_profiles_by_name_or_fields():
    assert cost.device_profile("h100").bandwidth == 3.35e12
    custom = cost.device_profile({"name": "mine", "flops": 1e12, "bandwidth": 1e11, "memory_gb": 16})
    assert custom.seconds(1e12, 0) == 2.0 and custom.seconds(0, 8e10) == 1.0
    with pytest.raises(ValueError, match="cost.device 'h1000' is not a known profile.*h100"):
        cost.device_profile("h1000")
    with pytest.raises(ValueError, match="missing bandwidth, memory_gb"):
        cost.device_profile({"name": "x", "flops": 1})
