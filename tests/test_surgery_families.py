"""Surgery on many Hugging Face families, each checked against the model rebuilt with the
scheduled layers physically in place (painters.exactness). The full table over every family
is benchmarks/surgery_coverage.py; these are a representative set: plain decoders under other
stack names, mixed sliding/full attention, MoE, MLA, parallel-attention blocks, encoders."""

import pytest
import torch

from painters import exactness, families, surgery
from painters.plan import parse

PLANS = [parse(key) for key in ["baseline", "skip-N1", "reverse-N0", "looped_parallel-N0-K2", "random-N0-S0", "middle_repeat-N1"]]

DECODERS = [
    "gpt2",  # stack `transformer.h`
    "opt",  # `model.decoder.layers`
    "falcon",
    "bloom",
    "gpt_neo",  # alternating global/local attention, its own per-layer list
    "gemma2",  # sliding/full alternating: masks picked by layer_types
    "gemma3_text",  # ... and a rotary embedding per attention type
    "gpt_oss",  # sliding/full + MoE
    "qwen3_moe",
    "deepseek_v3",  # multi-head latent attention, dense then MoE layers
    "phi3",
    "smollm3",  # per-layer rope on/off
    "jamba",  # Mamba + attention hybrid whose per-layer kinds are computed config properties
    "gemma4_unified_text",  # heterogeneous config: per-layer overrides by layer index
]
ENCODERS = ["bert", "distilbert", "modernbert", "vit"]


def checks_of(family, kind="causal_lm"):
    model = families.build_tiny(family, layers=6, kind=kind)
    return exactness.check_model(model, PLANS, families.example_inputs(model))


@pytest.mark.parametrize("family", DECODERS)
def test_every_plan_equals_the_rebuilt_decoder_and_caches_exactly(family):
    failed = [(check.plan, check.detail) for check in checks_of(family) if not check.ok]
    assert failed == []


@pytest.mark.parametrize("family", ENCODERS)
def test_every_plan_equals_the_rebuilt_encoder(family):
    failed = [(check.plan, check.detail) for check in checks_of(family, kind="encoder") if not check.ok]
    assert failed == []


def mixed_model():
    model = families.build_tiny("gemma2", layers=6)
    types = model.config.layer_types
    assert "sliding_attention" in types and "full_attention" in types
    return model


def test_the_rebuilt_reference_catches_a_call_given_another_layer_type():
    # the check is only worth something if it fails when a call gets another layer's mask
    model = mixed_model()
    inputs = families.example_inputs(model)
    plan = parse("skip-N1")
    expected = exactness._forward(exactness.rebuilt_model(model, plan), inputs)
    with surgery.apply(model, plan):
        right = exactness._forward(model, inputs)
        model.config.layer_types = ["sliding_attention"] * len(model.config.layer_types)
        wrong = exactness._forward(model, inputs)
    assert torch.allclose(right, expected, atol=1e-5)
    assert not torch.allclose(wrong, expected, atol=1e-2)


def test_the_generation_check_catches_calls_sharing_a_cache_slot(monkeypatch):
    model = mixed_model()
    inputs = families.example_inputs(model)
    plans = [parse("middle_repeat-N1")]
    assert exactness.check_model(model, plans, inputs)[0].ok
    # calls that never renumber their layer's cache index write over each other's entries
    monkeypatch.setattr(surgery, "_cache_index_holders", lambda layer: [])
    assert not exactness.check_model(model, plans, inputs)[0].ok


def test_config_and_layer_indices_restored_on_a_mixed_stack():
    model = mixed_model()
    types = list(model.config.layer_types)
    indices = [layer.self_attn.layer_idx for layer in surgery.layer_list(model)]
    with surgery.apply(model, parse("looped_parallel-N0-K2")):
        assert len(model.config.layer_types) == 1 + 2 * 5
        assert model.config.layer_types[1:6] == types[1:6]  # each call keeps its own layer's type
    assert model.config.layer_types == types
    assert model.config.num_hidden_layers == 6
    assert [layer.self_attn.layer_idx for layer in surgery.layer_list(model)] == indices


def test_computed_per_layer_settings_follow_the_calls_and_are_restored():
    model = families.build_tiny("jamba", layers=6)
    config_class, kinds = type(model.config), list(model.config.layers_block_type)
    assert len(set(kinds)) == 2  # attention and mamba layers
    with surgery.apply(model, parse("reverse-N0")):
        assert model.config.layers_block_type == [kinds[0], *kinds[:0:-1]]
    assert type(model.config) is config_class
    assert model.config.layers_block_type == kinds
    assert "layers_block_type" not in vars(model.config)
