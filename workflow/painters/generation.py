"""Generation under plans: the cache of each mode, the shared prefill, and the memory budget.

`PlanCache` is the K/V cache one plan generates with. In `exact` mode it is transformers'
DynamicCache (surgery gives every layer call its own slot). In `reference` mode the calls of a
parallel step share one slot per iteration, as the official Painters code does during
generation (`loop_parallel` in gpt/routing_llama.py): each call attends to the step's averaged
past plus its own current K/V, and the step then appends the mean of its calls' current K/V.
In the prefill every call attends to its own K/V only, so the prompt's hidden states are
exact in both modes.

Shared prefill: the plans of a pass are visited depth-first in the trie of their schedules
(painters.trie), one generate() each. During a plan's prefill the calls of the prefix it shares
with an earlier plan are skipped: each hands on the stored hidden state and writes the stored
prompt K/V of its slot into the plan's cache (`PrefillStore`), so each distinct schedule prefix
of the prompt is computed once. Decoding then runs every call, from the plan's own cache.
"""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from painters import cost, surgery
from painters.plan import Plan


def shared_slots(schedule) -> dict[int, tuple[int, bool]]:
    """reference mode: for each call slot of a parallel step, the slot its step stores in (the
    step's first) and whether it is the step's last call."""
    slots, position = {}, 0
    for step in schedule:
        if len(step) > 1:
            for i in range(len(step)):
                slots[position + i] = (position, i == len(step) - 1)
        position += len(step)
    return slots


class PlanCache(DynamicCache):
    """The cache one plan generates with (see the module's doc): exact, or the reference's."""

    def __init__(self, config, schedule, kv_cache: str = "exact", store: "PrefillStore | None" = None):
        super().__init__(config=config)
        self.shared = shared_slots(schedule) if cost.check_kv_cache(kv_cache) == "reference" else {}
        self.store = store
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # current K/V of the step's calls so far

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        if self.store is not None:
            self.store.record(layer_idx, key_states, value_states)
        shared = self.shared.get(layer_idx)
        if shared is None:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        storage, last = shared
        layer = self.layers[storage]
        if layer.is_initialized and layer.keys.numel():
            keys = torch.cat([layer.keys, key_states], dim=-2)
            values = torch.cat([layer.values, value_states], dim=-2)
        else:
            keys, values = key_states, value_states
        self._pending.append((key_states, value_states))
        if last:
            mean_keys = torch.stack([k for k, _ in self._pending]).mean(dim=0)
            mean_values = torch.stack([v for _, v in self._pending]).mean(dim=0)
            self._pending = []
            super().update(mean_keys, mean_values, storage, *args, **kwargs)
        return keys, values

    def nbytes(self) -> int:
        """Bytes the cache's tensors hold now."""
        return sum(t.nelement() * t.element_size() for layer in self.layers if layer.is_initialized
                   for t in (layer.keys, layer.values) if t is not None)


def cache_argument(model: nn.Module) -> str:
    """The name under which this transformers version's generate() takes a Cache object."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def plan_cache_refusal(model: nn.Module) -> str | None:
    """Why this model cannot generate with a PlanCache (so neither share its prefill nor use the
    reference cache), or None. A PlanCache is a DynamicCache of attention layers; families whose
    generation keeps other state (recurrent, convolution, encoder-decoder caches) are left to
    their own cache, plan by plan."""
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        return f"{name}: an encoder-decoder model generates with an encoder-decoder cache"
    if not type(model)._supports_default_dynamic_cache():
        return f"{name}: its generation does not use a transformers Cache"
    reason = module_state_refusal(model)
    if reason:
        return reason
    layers = DynamicCache(config=model.config.get_text_config(decoder=True)).layers
    others = sorted({type(layer).__name__ for layer in layers if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer)})
    if others:
        return f"{name}: its generation cache holds {', '.join(others)} layers, not only attention K/V"
    return None


def module_state_refusal(model: nn.Module) -> str | None:
    """Why cached generation keeps state inside the layer modules (so a layer called twice would
    share it), or None. RecurrentGemma keeps its recurrent and attention states in the modules."""
    holders = sorted({type(m).__name__ for m in surgery.layer_list(model).modules() if hasattr(m, "_setup_cache")})
    if holders:
        return f"{type(model).__name__}: its layers keep their generation state in their modules ({', '.join(holders)})"
    return None


def generation_refusal(model: nn.Module, plan: Plan, kv_cache: str) -> str | None:
    """Why generate_until cannot run exactly under `plan` on this model, or None (checked before any work)."""
    schedule = plan.schedule(surgery.num_layers(model))
    called = surgery.called_layers(schedule)
    repeated = sorted({i for i in called if called.count(i) > 1})
    reason = module_state_refusal(model)
    if reason and repeated:
        return (f"plan {plan.key} calls layer {repeated[0]} {called.count(repeated[0])} times, and {reason}: "
                "cached generation would mix the calls' states")
    if kv_cache == "reference" and cost.has_parallel_step(schedule):
        reason = plan_cache_refusal(model)
        if reason:
            return f"kv_cache reference under plan {plan.key}: {reason}"
        if _sliding_in_parallel(model, schedule):
            return f"kv_cache reference under plan {plan.key}: the reference averages full-attention caches only"
    return None


def _sliding_in_parallel(model, schedule) -> bool:
    shape = cost.ModelShape.from_config(model.config)
    return any(shape.is_sliding(i) for step in schedule if len(step) > 1 for i in step)


class PrefillStore:
    """What a shared prefill keeps for later plans: hidden states after `depth` steps (as the
    loglikelihood pass's painters.shared_pass.PrefixStore) and each kept call's prompt K/V by slot.

    Active only during a plan's prefill (`prefilling`); decoding runs every call.
    """

    def __init__(self):
        self.states: dict[int, object] = {}
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.start, self.keep = 0, ()
        self.slot_steps: list[int] = []
        self.cache: PlanCache | None = None
        self.prefilling = False
        self.peak_bytes = 0

    @property
    def resuming(self) -> bool:
        return self.prefilling

    def begin(self, start: int, keep: tuple[int, ...], slot_steps: list[int], cache: PlanCache) -> None:
        for depth in [d for d in self.states if d > start]:
            del self.states[depth]
        for slot in [s for s in self.kv if s >= len(slot_steps) or slot_steps[s] >= start]:
            del self.kv[slot]
        self.start, self.keep, self.slot_steps, self.cache = start, keep, slot_steps, cache
        self.prefilling = True

    def end_prefill(self) -> None:
        self.prefilling = False

    def put(self, depth: int, output) -> None:
        self.states[depth] = output
        self._measure()

    def record(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        if self.prefilling and self.start <= self.slot_steps[slot] < max(self.keep, default=0):
            self.kv[slot] = (keys, values)
            self._measure()

    def replay(self, slot: int) -> None:
        """A skipped call's prompt K/V into the plan's cache, as the call itself would have written it."""
        if slot in self.kv:
            self.cache.update(*self.kv[slot], slot)

    def clear(self) -> None:
        self.states.clear()
        self.kv.clear()
        self.cache = None
        self.prefilling = False

    def _measure(self) -> None:
        held = sum(surgery.output_state(s).nelement() * surgery.output_state(s).element_size() for s in self.states.values())
        held += sum(t.nelement() * t.element_size() for pair in self.kv.values() for t in pair)
        self.peak_bytes = max(self.peak_bytes, held)


def memory_budget(model: nn.Module, memory_gb: float | None) -> tuple[int, str]:
    """Bytes generation may use beyond what is loaded, and where the number comes from.

    memory_gb (evaluation.memory_gb, --memory-gb): the device's memory, minus the model's weights
    and buffers. Otherwise the free memory of the model's GPUs (already net of what is loaded),
    or on a CPU the memory the system reports available.
    """
    loaded = sum(t.nelement() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if memory_gb is not None:
        return int(memory_gb * 2**30) - loaded, f"--memory-gb {memory_gb:g} minus {cost.gib(loaded)} loaded"
    devices = sorted({p.device for p in model.parameters()}, key=str)
    gpus = [d for d in devices if d.type == "cuda"]
    if gpus:
        free = sum(torch.cuda.mem_get_info(d)[0] for d in gpus)
        return free, f"free memory of {', '.join(str(d) for d in gpus)}"
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available, "available system memory"
