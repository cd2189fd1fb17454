"""A tiny random-init model for every model family of the installed transformers.

Why: the coverage table of layer surgery (which families can have their layers skipped,
repeated or reordered) needs one model per family that builds offline, in about a second,
and runs a forward pass. Pretrained checkpoints are far too big and need the hub, so each
family's own config class is built with every size shrunk instead; the layer count stays
a parameter because surgery is about layers.

Configs name the same size in different ways (GPT-2 `n_embd`, OPT `ffn_dim`, DistilBERT
`dim`, ...). Standard names are translated through each class's `attribute_map`; the other
names are in tables below and are applied only where the config class has that field.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
import transformers
from transformers.configuration_utils import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES

ENCODER_FAMILIES = ["bert", "roberta", "deberta-v2", "modernbert", "distilbert", "vit", "deit"]

VOCAB_SIZE = 256
HIDDEN_SIZE = 64
NUM_HEADS = 4
SIDE_LAYERS = 2  # layers of the non-text parts (vision tower, audio encoder, ...)

# Sizes under their standard names, and the other names configs use for the same thing.
SIZES = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": HIDDEN_SIZE,
    "num_attention_heads": NUM_HEADS,
    "num_key_value_heads": 2,
    "head_dim": HIDDEN_SIZE // NUM_HEADS,
    "intermediate_size": 128,
    "max_position_embeddings": 256,
    "initializer_range": 0.2,  # random logits far from flat, so layer surgery visibly changes them
    "init_std": 0.2,  # OPT, XGLM, BART-style name for it
    # other names for the hidden size / heads / FFN / positions
    "embedding_size": HIDDEN_SIZE,
    "input_embedding_size": HIDDEN_SIZE,
    "output_embedding_size": HIDDEN_SIZE,
    "encoder_attention_heads": NUM_HEADS,
    "decoder_attention_heads": NUM_HEADS,
    "num_kv_heads": 2,
    "kv_n_heads": 2,
    # separate sizes of sliding-window layers (Inkling)
    "swa_num_attention_heads": NUM_HEADS,
    "swa_num_key_value_heads": 2,
    "swa_head_dim": HIDDEN_SIZE // NUM_HEADS,
    "text_hidden_size": HIDDEN_SIZE,  # audio/vision towers project into the text width
    "ffn_dim": 128,
    "n_inner": 128,  # GPT-2/GPT-J FFN (None means 4 * hidden)
    "d_ff": 128,
    "dim_ff": 128,
    "dff": 128,
    "d_inner": 128,
    "hidden_dim": 128,  # DistilBERT's FFN size (its `dim` is the hidden size)
    "ffn_hidden_size": 128,
    "feed_forward_size": 128,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "intermediate_size_mlp": 128,
    "dense_intermediate_size": 128,
    "mlp_dim": 128,
    "n_positions": 256,
    "n_ctx": 256,
    "max_seq_len": 256,
    "context_length": 256,
    "max_source_positions": 256,
    "max_target_positions": 256,
    # mixture of experts: few small experts, two per token, one dense layer first
    "num_experts": 4,
    "n_routed_experts": 4,
    "num_local_experts": 4,
    "moe_num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_k": 2,
    "moe_topk": 2,
    "moe_top_k": 2,
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "moe_intermediate_size": 32,
    "expert_ffn_hidden_size": 32,
    "shared_expert_intermediate_size": 32,
    "shared_experts_intermediate_size": 32,
    "shared_intermediate_size": 32,
    "moe_shared_expert_intermediate_size": 32,
    # DeepSeek-style latent attention and its sparse indexer
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "index_head_dim": 16,
    "index_n_heads": 2,
    "index_topk": 4,
    "indexer_n_heads": 2,
    "indexer_kv_heads": 1,
    "indexer_head_dim": 16,
    "indexer_budget": 8,
    "indexer_compress_ratio": 2,
    # linear attention (Qwen3-Next, Kimi): heads of the same small size
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_num_heads": 4,
    "linear_head_dim": 16,
    # state-space layers: mamba_expand * hidden == heads * head_dim (2 * 64 == 8 * 16)
    "state_size": 16,
    "mamba_d_state": 16,
    "ssm_state_size": 16,
    "mamba_n_heads": 8,
    "mamba_num_heads": 8,
    "mamba_head_dim": 16,
    "mamba_d_head": 16,
    "mamba_n_groups": 1,
    "n_groups": 1,
    # vision towers: a 32x32 image in 8x8 patches
    "image_size": 32,
    "patch_size": 8,
    "out_hidden_size": HIDDEN_SIZE,
    "adapter_in_dim": HIDDEN_SIZE,
    "adapter_out_dim": HIDDEN_SIZE,
    "adapter_input_size": HIDDEN_SIZE,
    "mm_embed_dim": HIDDEN_SIZE,
    "mm_posemb_size": 16,
    "output_proj_dims": HIDDEN_SIZE,
    # audio encoders' conv widths (Phi-4 multimodal)
    "nemo_conv_channels": HIDDEN_SIZE,
    "ext_pw_out_channel": HIDDEN_SIZE,
    "depthwise_separable_out_channel": HIDDEN_SIZE,
    # extra embedding tables (RoCBert glyph/pinyin ids) and LongCat's identity ("zero") experts
    "shape_vocab_size": VOCAB_SIZE,
    "shape_embed_dim": HIDDEN_SIZE,
    "pronunciation_vocab_size": VOCAB_SIZE,
    "pronunciation_embed_dim": HIDDEN_SIZE,
    "zero_expert_num": 2,
    # more names: attention heads of vision towers / xLSTM / Mamba-2 (`num_heads`), partial rotary
    # (GPT-J, CodeGen: must fit in head_dim 16), Falcon-H1's SSM width (8 heads * 16), BLT's trunk width
    "num_heads": NUM_HEADS,
    "rotary_dim": 8,
    "mamba_d_ssm": 128,
    "hidden_size_global": HIDDEN_SIZE,
    "encoder_hash_byte_group_vocab": VOCAB_SIZE,
    # Mamba/Mamba-2 inner width is expand * hidden; 1 makes it num_heads * head_dim (4 * 16)
    "expand": 1,
    # Jamba: attention in every other layer (default one in eight), so short stacks mix both
    "attn_layer_period": 2,
    "attn_layer_offset": 1,
}

# Sizes set only where the family uses them (non-zero default): Gemma 3n/4 per-layer token inputs.
USED_SIZES = {
    "vocab_size_per_layer_input": VOCAB_SIZE,
    "hidden_size_per_layer_input": 16,
}

# Attention windows of 4 tokens, so sliding and full attention differ on a 12-token input.
# `sliding_window` is set wherever the config has it: families like Mixtral, Starcoder2, Phi-3
# default it to None but their checkpoints often use one. The other names are set only where
# the family uses them (non-None default).
SLIDING_WINDOW = 4
WINDOWS = {
    "window_size": 4,
    "attention_window_size": 4,
    "sliding_window_size": 4,
    "attention_chunk_size": 4,
    "local_attention": 4,
}

# Names of the layer count; the text part gets `layers`, other parts SIDE_LAYERS. LongCat-Flash
# derives num_hidden_layers as twice its `num_layers` blocks; the blocks are what surgery moves.
LAYER_COUNTS = [
    "num_hidden_layers", "num_layers", "encoder_layers", "decoder_layers", "num_decoder_layers", "depth", "num_blocks",
]

# Config fields holding special token ids (pad/bos/eos, image placeholders, ...).
TOKEN_ID_SUFFIXES = ("_token_id", "_token_index")

# Per-layer lists of layer kinds: their length must equal the layer count.
LAYER_KIND_LISTS = ["layer_types", "mlp_layer_types", "layers_block_type"]

# Sub-configs that hold the text model (the part whose layers surgery changes); BLT's is its
# global transformer between the byte encoder and decoder.
TEXT_SUB_CONFIGS = {"text_config", "decoder", "text_decoder", "language_config", "llm_config", "global_config"}


def _cycle(kinds, layers: int) -> list:
    return [kinds[i % len(kinds)] for i in range(layers)]


def _gpt_neo_attention(layers: int) -> list:
    pairs = [[["global", "local"], layers // 2]]
    return (pairs + [[["global"], 1]]) if layers % 2 else pairs


DOTS3_SLIDING = {
    "swa_num_attention_heads": NUM_HEADS,
    "swa_num_key_value_heads": NUM_HEADS,
    "swa_q_lora_rank": 32,
    "swa_kv_lora_rank": 16,
    "swa_head_dim": 16,
    "swa_qk_nope_head_dim": 8,
}

# Family-specific settings the tables cannot express, as functions of `layers`: for the text
# config, except a dict under a sub-config key, which goes to that sub-config.
FAMILY_RULES = {
    # GPT-Neo lists its attention kinds as [[kinds, repeats]], expanded to one per layer
    "gpt_neo": lambda layers: {"attention_types": _gpt_neo_attention(layers)},
    # hybrids whose default config is all SSM/conv layers: alternate them with attention
    "bamba": lambda layers: {"attn_layer_indices": list(range(1, layers, 2))},
    "granitemoehybrid": lambda layers: {"layer_types": _cycle(["linear_attention", "full_attention"], layers)},
    "lfm2": lambda layers: {"layer_types": _cycle(["conv", "full_attention"], layers)},
    "lfm2_moe": lambda layers: {"layer_types": _cycle(["conv", "full_attention"], layers)},
    # Zamba ties the shared transformer of its hybrid layers to the first one: needs two or more
    "zamba": lambda layers: {"layers_block_type": _cycle(["linear_attention", "hybrid"], layers)},
    # ZAYA routes each token to exactly one expert
    "zaya": lambda layers: {"num_experts_per_tok": 1},
    # X-MOD picks a language adapter per input; without a default it refuses plain input_ids
    "xmod": lambda layers: {"default_language": "en_XX"},
    # Reformer: one layer per `attn_layers` entry; axial position factors must multiply to the
    # max length and sum to the hidden size
    "reformer": lambda layers: {
        "attn_layers": _cycle(["local", "lsh"], layers),
        "axial_pos_shape": [16, 16],
        "axial_pos_embds_dim": [32, 32],
    },
    # xLSTM's recurrent step sizes heads from hidden * qk_dim_factor, its state from that rounded
    # up to a multiple of 64: make the two agree (64 * 1.0)
    "xlstm": lambda layers: {"qk_dim_factor": 1.0},
    # Dots 3: sliding layers take their sizes from `swa_*` kwargs, the vision tower its experts
    # per layer from a 42-entry `pyramid_num_routed`
    "dots3_note_text": lambda layers: DOTS3_SLIDING,
    "dots3_note": lambda layers: {**DOTS3_SLIDING, "vision_config": {"pyramid_num_routed": [-1, 4]}},
    # DBRX reads rope_theta and a clip_qkv bound from attn_config; checkpoints carry them, the
    # defaults lack the first and leave the second None, which its attention cannot take
    "dbrx": lambda layers: {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    # its default rope_parameters are flat, but its model reads them per layer type
    "cohere_compass_text": lambda layers: {
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    },
}

# Families that build but cannot run alone.
NOT_STANDALONE = {
    "gemma4_assistant": "a draft model: its forward needs the target model's shared KV states",
    "gemma4_unified_assistant": "a draft model: its forward needs the target model's shared KV states",
}


# Decoders over audio codebooks take one row of input_ids per codebook and batch element.
CODEBOOK_ROWS = {"musicgen_decoder", "musicgen_melody_decoder"}


class TinyModelError(RuntimeError):
    """A family that cannot be built from a tiny config; the message says why in one line."""


def causal_lm_families() -> list[str]:
    """Every model_type that has a causal-LM class in the installed transformers, sorted."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def one_line(error: BaseException) -> str:
    """An exception as `TypeName: message` on one line, cut at 300 characters."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _field_defaults(config_class) -> dict:
    """The dataclass fields of a config class with their class defaults."""
    defaults = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
        else:
            defaults[field.name] = None
    return defaults


def _sub_config_classes(config_class) -> dict:
    """Sub-config key -> (its config class, the init kwargs the family's spec adds)."""
    classes = {}
    for key, sub_class in config_class.sub_configs.items():
        spec = config_class.sub_configs_defaults.get(key)  # absent for older composites (DBRX)
        if spec is not None and not issubclass(spec.config_class, PreTrainedConfig):
            sub_class = CONFIG_MAPPING[spec.model_type]  # an AutoConfig spec names a model_type
        classes[key] = (sub_class, spec.init_kwargs if spec is not None else {})
    return classes


def _beyond_vocab(value, vocab_size: int) -> bool:
    """Whether a token id, or any in a list of them, is outside the vocab."""
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, int) and not isinstance(v, bool) and v >= vocab_size for v in values)


def _fit_ids(value, vocab_size: int, free_ids):
    """A token id (or list of them) with ids beyond the vocab replaced by fresh ones."""
    if isinstance(value, list):
        return [next(free_ids) if _beyond_vocab(v, vocab_size) else v for v in value]
    return next(free_ids) if _beyond_vocab(value, vocab_size) else value


def _shrunk_kwargs(config_class, layers: int, is_text: bool, free_ids) -> dict:
    """Constructor kwargs that shrink every size `config_class` has, sub-configs included;
    special token ids beyond the tiny vocab take ids from `free_ids`."""
    defaults = _field_defaults(config_class)
    alias = config_class.attribute_map

    def put(name, value, only_if_used=False):
        # every field that ends up as the same attribute: the name, its alias, other aliases of it
        # (Kimi has both `num_local_experts` and `num_experts` fields, one aliased to the other)
        target = alias.get(name, name)
        for field, default in defaults.items():
            if target in (field, alias.get(field)) or field == name:
                if default or not only_if_used:
                    kwargs[field] = value

    kwargs = {}
    for name, value in SIZES.items():
        put(name, value)
    for name, value in USED_SIZES.items():
        put(name, value, only_if_used=True)
    put("sliding_window", SLIDING_WINDOW)
    for name, value in WINDOWS.items():
        put(name, value, only_if_used=True)
    for name in LAYER_COUNTS:
        put(name, layers if is_text else SIDE_LAYERS)
    # Qwen2/3-style: sliding windows are off unless asked for, and then apply from
    # layer `max_window_layers` on; half the layers full and half sliding exercises both.
    if "use_sliding_window" in defaults:
        kwargs["use_sliding_window"] = True
        put("max_window_layers", layers // 2)
    # DeepSeek-style latent attention: keys/values are expanded to every head, and the
    # rotary part of a head is qk_rope_head_dim wide (the families call that head_dim).
    if "kv_lora_rank" in defaults:
        put("num_key_value_heads", SIZES["num_attention_heads"])
        put("head_dim", SIZES["qk_rope_head_dim"])
    # Gemma 3n/4 layers at the end reuse the KV cache of earlier layers: keep two of them.
    if defaults.get("num_kv_shared_layers"):
        kwargs["num_kv_shared_layers"] = 2 if layers >= 4 else 0
    for field, default in defaults.items():
        if field.endswith(TOKEN_ID_SUFFIXES) and _beyond_vocab(default, VOCAB_SIZE):
            kwargs[field] = _fit_ids(default, VOCAB_SIZE, free_ids)

    for key, (sub_class, init_kwargs) in _sub_config_classes(config_class).items():
        if key == "backbone_config":
            continue  # timm/vision backbones have their own kwargs; left at their defaults
        sub_kwargs = _shrunk_kwargs(sub_class, layers, key in TEXT_SUB_CONFIGS, free_ids)
        kwargs[key] = {**init_kwargs, **sub_kwargs}
    return kwargs


def _text_kwargs(kwargs: dict) -> dict:
    """The part of the constructor kwargs that configures the text model."""
    for key in TEXT_SUB_CONFIGS:
        if isinstance(kwargs.get(key), dict):
            return kwargs[key]
    return kwargs


def _config_tree(config):
    """The config and its sub-configs, depth first."""
    yield config
    for key in type(config).sub_configs:
        sub_config = config.__dict__.get(key)
        if isinstance(sub_config, PreTrainedConfig):
            yield from _config_tree(sub_config)


def _special_token_fields(config) -> dict:
    names = [name for name in config.__dict__ if name.endswith(TOKEN_ID_SUFFIXES)]
    return {name: config.__dict__[name] for name in names}


def _fit_special_tokens(config, vocab_size: int, free_ids) -> None:
    """Special token ids that the family sets after its constructor (post-init) and that fall
    outside the tiny vocab: each to a fresh id."""
    for node in _config_tree(config):
        for name, value in _special_token_fields(node).items():
            if _beyond_vocab(value, vocab_size):
                setattr(node, name, _fit_ids(value, vocab_size, free_ids))


def _kinds_in_order(values) -> list:
    kinds = []
    for value in values:
        if value not in kinds:
            kinds.append(value)
    return kinds


def _mix_layer_kinds(config, reference, layers: int) -> None:
    """Keep every layer kind the family mixes (sliding/full, linear/full, dense/sparse MoE):
    the family's own rule may yield a single kind at few layers (Gemma 3 has one full layer
    in six); then the kinds are cycled instead. KV-sharing layers (Gemma 3n/4) reuse the cache
    of an earlier layer of their kind, so every kind must occur before them."""
    shared = config.__dict__.get("num_kv_shared_layers") or 0
    for name in LAYER_KIND_LISTS:
        ours = config.__dict__.get(name)
        theirs = reference.__dict__.get(name) if reference is not None else None
        if not isinstance(ours, list):
            continue
        kinds = _kinds_in_order(theirs if isinstance(theirs, list) else ours)
        unshared = ours[: layers - shared] if name == "layer_types" else ours
        if len(ours) != layers or len(set(unshared)) < len(kinds) <= layers - shared:
            setattr(config, name, _cycle(kinds, layers))


def _text_config(config):
    try:
        return config.get_text_config(decoder=True)
    except ValueError:
        return config


def _reference_config(config_class):
    """The family at its default (full) size, text part: which layer kinds it mixes. Its own
    warnings (some defaults are inconsistent) say nothing about the tiny config: silenced."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return _text_config(config_class())
    except Exception:
        return None
    finally:
        transformers.logging.set_verbosity(verbosity)


def tiny_config(model_type: str, layers: int = 6):
    """The family's config with every size shrunk and `layers` layers in its text part."""
    if model_type not in CONFIG_MAPPING:
        raise TinyModelError(f"{model_type}: unknown model_type in transformers {transformers.__version__}")
    config_class = CONFIG_MAPPING[model_type]
    # Special token ids outside the vocab (image placeholders, ...) move to the top of it, each to
    # its own id; ids that fit (pad/bos/eos 0..2 mostly) stay.
    free_ids = iter(range(VOCAB_SIZE - 1, 0, -1))
    kwargs = _shrunk_kwargs(config_class, layers, True, free_ids)
    for key, value in FAMILY_RULES.get(model_type, lambda layers: {})(layers).items():
        if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
            kwargs[key].update(value)
        else:
            _text_kwargs(kwargs)[key] = value
    reference = _reference_config(config_class)
    try:
        config = config_class(**kwargs)
    except Exception as error:
        # Some families build their per-layer kind list at full-size length (Zamba2): pass it cycled.
        kind_lists = {
            name: _cycle(_kinds_in_order(kinds), layers)
            for name in LAYER_KIND_LISTS
            if isinstance(kinds := (reference.__dict__.get(name) if reference is not None else None), list)
        }
        if not kind_lists:
            raise TinyModelError(f"{model_type}: tiny config rejected: {one_line(error)}") from error
        _text_kwargs(kwargs).update(kind_lists)
        try:
            config = config_class(**kwargs)
        except Exception:
            raise TinyModelError(f"{model_type}: tiny config rejected: {one_line(error)}") from error
    text_config = _text_config(config)
    _mix_layer_kinds(text_config, reference, layers)
    _fit_special_tokens(config, text_config.__dict__.get("vocab_size") or VOCAB_SIZE, free_ids)
    return config


def _model_class(model_type: str, kind: str):
    if kind == "causal_lm":
        names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    elif kind == "encoder":
        names = MODEL_MAPPING_NAMES
    else:
        raise ValueError(f"kind must be 'causal_lm' or 'encoder', got {kind!r}")
    if model_type not in names:
        raise TinyModelError(f"{model_type}: no {kind} class in transformers {transformers.__version__}")
    class_name = names[model_type]
    if isinstance(class_name, (tuple, list)):
        class_name = class_name[0]
    try:
        return getattr(transformers, class_name)
    except Exception as error:  # a lazy import that needs an optional package
        raise TinyModelError(f"{model_type}: {class_name} not importable: {one_line(error)}") from error


def build_tiny(model_type: str, layers: int = 6, kind: str = "causal_lm"):
    """The family's tiny model (causal LM class, or the base model for encoders), float32,
    eval mode, random init seeded with 0."""
    if model_type in NOT_STANDALONE:
        raise TinyModelError(f"{model_type}: {NOT_STANDALONE[model_type]}")
    model_class = _model_class(model_type, kind)
    config = tiny_config(model_type, layers)
    if not isinstance(config, model_class.config_class):
        # Llama 4, Emu3, Qwen3.5, MusicGen: the causal LM is the text part of a composite config
        config = _text_config(config)
    if kind == "causal_lm" and "is_decoder" in config.__dict__:
        config.is_decoder = True  # encoder families (BERT, Reformer, ...) as LMs: causal attention
    torch.manual_seed(0)
    try:
        model = model_class._from_config(config, dtype=torch.float32, attn_implementation="eager")
    except Exception as error:
        raise TinyModelError(f"{model_type}: {model_class.__name__} does not build: {one_line(error)}") from error
    if config.model_type in CODEBOOK_ROWS:
        # MusicGen starts generating every codebook from its pad id; only checkpoints' generation configs say so
        model.generation_config.decoder_start_token_id = config.pad_token_id
    return model.eval()


def _avoided_token_ids(config) -> set:
    """Special ids (image/audio placeholders, ...) that random text must not contain."""
    avoided = set()
    for node in _config_tree(config):
        for value in _special_token_fields(node).values():
            values = value if isinstance(value, list) else [value]
            avoided.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return avoided


def example_inputs(model, batch: int = 2, length: int = 12, seed: int = 0) -> dict:
    """Minimal inputs the model's forward accepts: pixels for vision encoders, else random
    token ids (1..vocab-1, no special ids) and an all-ones attention mask."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    accepted = inspect.signature(model.forward).parameters
    if "pixel_values" in accepted and "input_ids" not in accepted:
        channels = getattr(config, "num_channels", 3)
        size = config.image_size
        return {"pixel_values": torch.randn(batch, channels, size, size, generator=generator)}

    vocab_size = _text_config(config).__dict__.get("vocab_size") or model.get_input_embeddings().num_embeddings
    avoided = _avoided_token_ids(config)
    allowed = torch.tensor([i for i in range(1, vocab_size) if i not in avoided])
    rows = batch
    if config.model_type in CODEBOOK_ROWS:
        rows = batch * config.num_codebooks
    picks = torch.randint(len(allowed), (rows, length), generator=generator)
    inputs = {"input_ids": allowed[picks]}
    if "attention_mask" in accepted:
        inputs["attention_mask"] = torch.ones(batch, length, dtype=torch.long)
    return inputs
