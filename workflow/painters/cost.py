"""What a plan costs in memory: the arithmetic of its generation cache and of a shared pass.

One place for the numbers that generation (how many sequences fit a device) and job sizing
need: a model's shape as its config gives it, the K/V cache a plan builds per sequence in
each cache mode, and what a shared pass keeps besides. Plain Python with no I/O and no torch,
tested against the real tensors (tests/test_cost.py).

Cache modes (`evaluation.kv_cache`):
- `exact`: one cache slot per executed layer call (painters' default), so cached generation
  gives the tokens of uncached generation under every plan.
- `reference`: the official Painters code's (`loop_parallel` in gpt/routing_llama.py): the calls
  of a parallel step share one slot per iteration, holding the mean of their K/V; each call of
  the step attends to that averaged past plus its own current K/V. Sequential steps keep one
  slot per call, so only plans with a parallel step change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from painters.plan import Schedule

KV_CACHE_MODES = ("exact", "reference")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def check_kv_cache(mode: str) -> str:
    if mode not in KV_CACHE_MODES:
        raise ValueError(f"kv_cache {mode!r} is not one of {', '.join(KV_CACHE_MODES)}")
    return mode


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a torch dtype name (`torch.bfloat16` or `bfloat16`)."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r}: bytes per element unknown (known: {', '.join(DTYPE_BYTES)})")
    return DTYPE_BYTES[name]


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that its memory and compute follow, read off its (text) config."""

    depth: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int | None = None
    vocab_size: int | None = None
    layer_types: tuple[str, ...] | None = None  # per layer, where the config lists them
    sliding_window: int | None = None

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config object (its text config for a multimodal one)."""
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        hidden = text.hidden_size
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        layer_types = getattr(text, "layer_types", None)
        return cls(
            depth=text.num_hidden_layers,
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=getattr(text, "intermediate_size", None),
            vocab_size=getattr(text, "vocab_size", None),
            layer_types=tuple(layer_types) if layer_types else None,
            sliding_window=getattr(text, "sliding_window", None),
        )

    @classmethod
    def from_config_dict(cls, config: Mapping) -> "ModelShape":
        """From a config.json's contents, through the family's config class (as the depth is read)."""
        from transformers import CONFIG_MAPPING

        model_type = config.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"model_type {model_type!r}: no transformers config class to read its shape from")
        return cls.from_config(CONFIG_MAPPING[model_type].from_dict(dict(config)))

    def is_sliding(self, layer: int) -> bool:
        if self.layer_types is not None:
            return self.layer_types[layer] == "sliding_attention" and bool(self.sliding_window)
        return False

    def kv_elements_per_token(self) -> int:
        """K and V elements one cache slot holds per token."""
        return 2 * self.num_kv_heads * self.head_dim


def cache_slot_layers(schedule: Schedule, kv_cache: str = "exact") -> list[int]:
    """The layer whose attention fills each cache slot the plan makes, in slot order.

    exact: one slot per call. reference: one slot per step (a parallel step's calls share it).
    """
    check_kv_cache(kv_cache)
    if kv_cache == "reference":
        return [step[0] for step in schedule]
    return [index for step in schedule for index in step]


def slot_tokens(shape: ModelShape, layer: int, tokens: int) -> int:
    """Tokens a slot of `layer` holds after `tokens` have been cached: a sliding-window layer keeps
    its last sliding_window - 1 (transformers' DynamicSlidingWindowLayer)."""
    if shape.is_sliding(layer):
        return min(tokens, shape.sliding_window - 1)
    return tokens


def cache_bytes(schedule: Schedule, shape: ModelShape, tokens: int, element_bytes: int, kv_cache: str = "exact") -> int:
    """Bytes of the K/V cache of one sequence after `tokens` tokens under `schedule`."""
    per_token = shape.kv_elements_per_token() * element_bytes
    return sum(slot_tokens(shape, layer, tokens) * per_token for layer in cache_slot_layers(schedule, kv_cache))


def has_parallel_step(schedule: Schedule) -> bool:
    """Whether the two cache modes differ for this schedule."""
    return any(len(step) > 1 for step in schedule)


def shared_prefill_bytes(schedules: Sequence[Schedule], visits, shape: ModelShape, prompt_tokens: int,
                         element_bytes: int) -> int:
    """Most bytes per sequence that a shared prefill keeps for later plans at once: the hidden
    states at the branch points still ahead and the prompt's K/V of every call before the deepest.

    `visits`: the walk of `schedules`' trie (painters.trie.walk). An upper bound: the plan that is
    decoding shares the K/V of its own prefix with what is kept, counted here twice.
    """
    state = prompt_tokens * shape.hidden_size * element_bytes
    per_token = shape.kv_elements_per_token() * element_bytes
    most, held = 0, {}  # depth -> the schedule whose prefix state is kept there
    for visit in visits:
        held = {depth: schedule for depth, schedule in held.items() if depth <= visit.start}
        held.update(dict.fromkeys(visit.keep, schedules[visit.plan]))
        if held:
            deepest = max(held)
            prefix = held[deepest][:deepest]
            kv = sum(slot_tokens(shape, index, prompt_tokens) * per_token for step in prefix for index in step)
            most = max(most, len(held) * state + kv)
    return most


def working_bytes(shape: ModelShape, prompt_tokens: int, element_bytes: int) -> int:
    """A prefill's transient activations per sequence, beyond the cache: a layer's input, output and
    feed-forward intermediates over the prompt, and one row of float32 logits."""
    intermediate = shape.intermediate_size or 4 * shape.hidden_size
    return prompt_tokens * (3 * shape.hidden_size + 2 * intermediate) * element_bytes + 4 * (shape.vocab_size or 0)


def fitting_batch(per_sequence_bytes: int, budget_bytes: int) -> int:
    """How many sequences of `per_sequence_bytes` fit `budget_bytes` (0: not even one)."""
    if per_sequence_bytes <= 0:
        raise ValueError("per_sequence_bytes must be positive")
    return max(0, int(budget_bytes // per_sequence_bytes))


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"
