"""Model surgery: run a loaded Hugging Face model on a plan's schedule.

`find_stack` finds the model's layer stack (the `nn.ModuleList` of its repeated blocks,
wherever the family keeps it: `layers`, `h`, `encoder.layer`, ...). `apply(model, plan)`
swaps that list for one entry per executed layer call, in schedule order. An entry is the
original layer module (no weight is copied), wrapped (`Call`) where the call needs it; the
calls of a parallel step each run on the step's input and the last returns their mean.
On exit the original list, config and layer indices are put back, so the model is exactly
as before.

Why one entry per call: the model then treats the schedule as a stack of that depth.
- KV cache: attention addresses the cache by `layer_idx` (a few families: `layer_id`), so a
  layer run twice would overwrite its own cache entry and silently give wrong logits. Each
  call sets its layer's index to its own position, and the config's `num_hidden_layers` is the number of
  calls, so the cache makes a slot for each.
- Mixed stacks (Gemma 2/3, GPT-OSS, Cohere 2: sliding-window and full attention): the
  decoder picks a layer's mask and rotary embedding, and the cache the slot's type, from
  `config.layer_types[position]` or the layer's own `attention_type`. Per-layer config lists
  are rebuilt to follow the calls, and a wrapper reads as its layer, so each call keeps its
  own layer's attention type, mask, rotary embedding and cache slot type.

No Snakemake and no I/O here: plain Python, tested directly.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from painters.plan import Plan

_APPLIED_FLAG = "_painters_plan"
_STACK_KEY = "_painters_stack"
_FOUND_KEY = "_painters_stack_found"


def _base_model(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def _config_depth(model: nn.Module) -> int | None:
    """The layer count the model's (text) config declares, if it declares one."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    depth = getattr(text_config, "num_hidden_layers", None)
    return depth if isinstance(depth, int) else None


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_stack(model: nn.Module) -> tuple[nn.Module, str, str]:
    """The module holding the model's layer stack, the list's attribute name, and its qualified name.

    The stack is found, not listed per family: the `nn.ModuleList` under the base model whose
    length is the depth the (text) config declares; where several have that length (a vision
    tower, per-layer norms), the one holding the most parameters: the blocks.
    """
    found = model.__dict__.get(_FOUND_KEY)
    if found is not None:  # found once per model: walking all modules costs more than a tiny forward
        return found
    base = _base_model(model)
    depth = _config_depth(model)
    candidates = [
        (name, module) for name, module in base.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (depth is None or len(module) == depth)
    ]
    if not candidates:
        declared = f"the {depth} layers its config declares" if depth is not None else "its layers"
        raise ValueError(f"{type(model).__name__}: no nn.ModuleList of {declared} found, so there is no layer stack to reorder")
    name, stack = max(candidates, key=lambda item: (_parameter_count(item[1]), -item[0].count(".")))
    owner_name, _, attr = name.rpartition(".")
    owner = base.get_submodule(owner_name) if owner_name else base
    base_prefix = next((n for n, m in model.named_modules() if m is base), "")
    qualified = f"{base_prefix}.{name}" if base_prefix else name
    model.__dict__[_FOUND_KEY] = (owner, attr, qualified)
    return owner, attr, qualified


def _stack_owner(model: nn.Module) -> tuple[nn.Module, str]:
    # while a plan is applied the list in place is the plan's calls: use the stack found before
    applied = model.__dict__.get(_STACK_KEY)
    if applied is not None:
        return applied
    owner, attr, _ = find_stack(model)
    return owner, attr


def refusal(model: nn.Module) -> str | None:
    """Why surgery cannot run this model (one line), or None if it can.

    Beyond finding the stack, the rules below are the families whose layers are not
    self-contained blocks that a plan can move; each says why.
    """
    name = type(model).__name__
    try:
        owner, attr, _ = find_stack(model)
    except ValueError as error:
        return str(error)
    stack = getattr(owner, attr)
    split = [
        child for child, module in owner.named_children()
        if child != attr and isinstance(module, nn.ModuleList) and len(module) == len(stack) and _parameter_count(module)
    ]
    if split:  # XLM: attention, norms and feed-forwards in separate lists, all indexed by position
        return f"{name}: each layer is split over several lists indexed by position ({attr}, {', '.join(split)})"
    if "prev_attn_output" in inspect.signature(stack[0].forward).parameters:  # Reformer
        return f"{name}: reversible layers carry two hidden streams, which a schedule of single layers cannot"
    for config in stack_configs(model):
        if getattr(config, "cross_attention_layers", None):  # Mllama
            return f"{name}: its decoder picks cross-attention layers by position (cross_attention_layers)"
        if getattr(config, "hidden_size_per_layer_input", None):  # Gemma 3n
            return f"{name}: per-layer input embeddings are sliced by position, not carried by the layers"
    return None


def check_supported(model: nn.Module) -> None:
    """Raise ValueError saying why in one line if surgery cannot handle `model`."""
    reason = refusal(model)
    if reason is not None:
        raise ValueError(reason)


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The layer list the model runs now: its own layers, or the plan's calls while a plan is applied."""
    owner, attr = _stack_owner(model)
    return getattr(owner, attr)


def num_layers(model: nn.Module) -> int:
    """T, the depth of the model as loaded."""
    if getattr(model, _APPLIED_FLAG, None) is not None:
        raise RuntimeError("num_layers() is the depth as loaded: call it outside apply()")
    return len(layer_list(model))


def stack_configs(model: nn.Module) -> list:
    """The configs that describe the stack's layers: the stack owner's and the model's text config
    (one object in most models; composite models may hold copies). Decoders loop over
    `layers[: num_hidden_layers]` and caches size themselves from these."""
    owner, _ = _stack_owner(model)
    found = []
    for module in (owner, _base_model(model), model):
        config = getattr(module, "config", None)
        if config is None:
            continue
        config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        if not any(config is seen for seen in found):
            found.append(config)
    return found


# names under which configs give the depth of the stack (seq2seq decoders: `decoder_layers`)
LAYER_COUNTS = ("num_hidden_layers", "decoder_layers", "num_decoder_layers")


def layer_count_fields(config, depth: int) -> list[str]:
    """The config's fields that give the stack's depth: the decoder loops over
    `layers[: num_hidden_layers]` and its cache makes one slot per layer they count."""
    return [name for name in LAYER_COUNTS if getattr(config, name, None) == depth]


def per_layer_fields(config, depth: int) -> dict[str, list]:
    """The config's per-layer settings: list attributes with one entry per layer (`layer_types`,
    `no_rope_layers`, ...). The decoder reads some of them by loop position, so they follow the
    schedule while a plan is applied."""
    fields = {}
    for name, value in vars(config).items():
        if isinstance(value, (list, tuple)) and len(value) == depth and name not in _NOT_PER_LAYER:
            fields[name] = list(value)
    return fields


_NOT_PER_LAYER = {"architectures", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids"}


def _per_layer_properties(config, depth: int) -> dict[str, list]:
    """Per-layer settings that the config class computes from the layer index (Jamba's
    `layers_block_type`: attention every `attn_layer_period` layers): their values as loaded."""
    key = (type(config), depth)
    if key not in _PROPERTY_NAMES:  # looked up once per class: asking every property costs per plan
        names = []
        for name in {name for klass in type(config).__mro__ for name, value in vars(klass).items() if isinstance(value, property)}:
            try:
                value = getattr(config, name)
            except Exception:  # noqa: BLE001 - a property that cannot answer is not a per-layer list
                continue
            if isinstance(value, (list, tuple)) and len(value) == depth:
                names.append(name)
        _PROPERTY_NAMES[key] = sorted(names)
    return {name: list(getattr(config, name)) for name in _PROPERTY_NAMES[key]}


_PROPERTY_NAMES: dict[tuple[type, int], list[str]] = {}


def follow_calls(config, depth: int, calls: list[int]):
    """Set `config`'s depth to the number of calls and each per-layer setting to list, per
    position, the setting of the layer called there; return a function that puts them back.

    Computed per-layer settings (properties) are shadowed, for the plan, by a subclass of the
    config's class that lets them hold the rebuilt lists.
    """
    counts = layer_count_fields(config, depth)
    fields = per_layer_fields(config, depth)
    computed = _per_layer_properties(config, depth)
    config_class = type(config)
    # heterogeneous configs (Gemma 4) keep per-layer overrides by layer index
    heterogeneity = config.__dict__.get("_heterogeneity_spec")
    if heterogeneity is not None:
        overrides = heterogeneity.per_layer_overrides
        config.__dict__["_heterogeneity_spec"] = dataclasses.replace(
            heterogeneity, per_layer_overrides={p: overrides[i] for p, i in enumerate(calls) if i in overrides})
    if computed:
        config.__class__ = type(config_class.__name__, (config_class,), dict.fromkeys(computed))
    for name in counts:
        setattr(config, name, len(calls))
    for name, values in {**fields, **computed}.items():
        setattr(config, name, [values[index] for index in calls])

    def restore():
        if heterogeneity is not None:
            config.__dict__["_heterogeneity_spec"] = heterogeneity
        for name in computed:
            config.__dict__.pop(name, None)
        config.__class__ = config_class
        for name in counts:
            setattr(config, name, depth)
        for name, values in fields.items():
            setattr(config, name, values)

    return restore


def _device_of(module: nn.Module, first_parameter: torch.Tensor | None) -> torch.device | None:
    # accelerate's device_map hooks know where a layer executes; else where its first parameter is
    # (the same Parameter object follows the module through .to())
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device)
    return None if first_parameter is None else first_parameter.device


# the attribute by which a layer's modules address their cache slot (and any per-layer state):
# `layer_idx` in almost every family, `layer_id` in GPT-Neo, RWKV, Reformer, XLM, Flaubert
POSITION_ATTRIBUTES = ("layer_idx", "layer_id")


def _cache_index_holders(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, attribute) for each place in `layer` (attention blocks, the layer itself) that
    holds the layer's position, by which it addresses the cache."""
    return [
        (module, name) for module in layer.modules() for name in POSITION_ATTRIBUTES
        if isinstance(module.__dict__.get(name), int) and not isinstance(module.__dict__.get(name), bool)
    ]


def output_state(output) -> torch.Tensor:
    """The hidden state a layer returned (alone, or first of a tuple or list)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_state(output, state: torch.Tensor):
    # layers return the hidden state alone, or first in a tuple (a list in OpenAI GPT)
    if isinstance(output, (tuple, list)):
        return type(output)([state, *output[1:]])
    return state


class LayerView(nn.Module):
    """A wrapper that reads as the layer it wraps: attributes it lacks come from `self.wrapped`.

    Decoders read per-layer attributes off what they loop over (`attention_type`, `is_sliding`, ...).
    """

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "wrapped":
                raise
            return getattr(self.wrapped, name)


class ParallelGroup:
    """The calls of one parallel step: each adds its layer's output; the last returns their mean.

    Plain object (not a module): the step's calls share it.
    """

    def __init__(self, size: int):
        self.size = size
        self.states: list[torch.Tensor] = []

    def add(self, position: int, state: torch.Tensor) -> torch.Tensor | None:
        if position == 0:  # a forward that failed half-way must not leave its outputs in the next
            self.states = []
        self.states.append(state)
        if len(self.states) < self.size:
            return None
        device = self.states[0].device
        mean = torch.stack([s.to(device) for s in self.states]).mean(dim=0)
        self.states = []
        return mean


class Call(LayerView):
    """One executed layer call at its own position of the stack, so at its own cache slot.

    A call of a parallel step runs its layer on the step's input and hands that input on
    unchanged to the step's next call; the step's last call returns the mean of their outputs
    (HF layers return h + f_i(h), so the mean is h + mean_i f_i(h)). Giving every call its own
    position lets the decoder hand each its own layer's attention mask and rotary embedding
    (mixed sliding/full stacks), and each a cache slot of its own layer's type.
    """

    def __init__(self, layer: nn.Module, slot: int, group: ParallelGroup | None = None, position: int = 0):
        super().__init__()
        self.wrapped = layer
        self.slot = slot
        self.group, self.position = group, position  # position: which call of its parallel step
        # found once here, not on every call: walking a layer's modules costs more than a tiny layer
        self._cache_holders = _cache_index_holders(layer)
        self._first_parameter = next(layer.parameters(), None)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        for module, name in self._cache_holders:
            setattr(module, name, self.slot)
        device = _device_of(self.wrapped, self._first_parameter)
        step_input = hidden_states
        if device is not None and hidden_states.device != device:
            hidden_states = hidden_states.to(device)
        output = self.wrapped(hidden_states, *args, **kwargs)
        if self.group is None:
            return output
        mean = self.group.add(self.position, output_state(output))
        return with_state(output, step_input if mean is None else mean)


def called_layers(schedule) -> list[int]:
    """The layer index of each executed call of `schedule`, in order."""
    return [index for step in schedule for index in step]


def call_steps(schedule) -> list[int]:
    """For each executed call of `schedule`, in order, the index of the step it belongs to."""
    return [depth for depth, step in enumerate(schedule) for _ in step]


def ends_of_steps(schedule) -> list[bool]:
    """For each executed call of `schedule`, whether it is the last call of its step."""
    depths = call_steps(schedule)
    return [i + 1 == len(depths) or depths[i + 1] != depth for i, depth in enumerate(depths)]


def build_steps(original_layers: nn.ModuleList, schedule) -> nn.ModuleList:
    """The stack for `schedule`: one entry per executed layer call, its position its cache slot.

    A layer that runs once in the schedule, alone, at its own index is placed as it is: it
    needs no wrapper (so the baseline and the first N layers of every plan cost nothing extra).
    """
    uses = Counter(i for step in schedule for i in step)
    calls = []
    for step in schedule:
        group = ParallelGroup(len(step)) if len(step) > 1 else None
        for position, index in enumerate(step):
            layer, slot = original_layers[index], len(calls)
            at_own_slot = all(getattr(m, name) == slot for m, name in _cache_index_holders(layer))
            if group is None and uses[index] == 1 and index == slot and at_own_slot:
                calls.append(layer)
            else:
                calls.append(Call(layer, slot, group, position))
    return nn.ModuleList(calls)


@contextmanager
def apply(model: nn.Module, plan: Plan, steps: nn.ModuleList | None = None) -> Iterator[nn.Module]:
    """Run `model` on `plan`'s schedule inside the `with` block; restore it exactly afterwards.

    `steps`: the plan's stack built beforehand (`build_steps`, possibly wrapped), for a
    caller that applies the same plan many times (painters.engine).
    """
    check_supported(model)
    if getattr(model, _APPLIED_FLAG, None) is not None:
        raise RuntimeError(f"a plan ({getattr(model, _APPLIED_FLAG)}) is already applied to this model")
    owner, attr = _stack_owner(model)
    original_layers = getattr(owner, attr)
    depth = len(original_layers)
    schedule = plan.schedule(depth)
    executed = called_layers(schedule)

    if steps is None:
        steps = build_steps(original_layers, schedule)
    elif len(steps) != len(executed):
        raise ValueError(f"{len(steps)} prebuilt calls for plan {plan.key}, whose schedule makes {len(executed)}")
    configs = stack_configs(model)
    saved_indices = [(m, name, getattr(m, name)) for layer in original_layers for m, name in _cache_index_holders(layer)]
    restores = []
    try:
        setattr(owner, attr, steps)
        # the decoder loops over layers[: num_hidden_layers], sizes its cache from it and
        # picks each call's mask (and rotary) by the per-layer settings at the call's position
        for config in configs:
            restores.append(follow_calls(config, depth, executed))
        setattr(model, _APPLIED_FLAG, plan.key)
        model.__dict__[_STACK_KEY] = (owner, attr)
        yield model
    finally:
        setattr(owner, attr, original_layers)
        for restore in reversed(restores):
            restore()
        for module, name, index in saved_indices:
            setattr(module, name, index)
        model.__dict__.pop(_APPLIED_FLAG, None)
        model.__dict__.pop(_STACK_KEY, None)


@torch.no_grad()
def hidden_states(model: nn.Module, plan: Plan, **inputs) -> list[torch.Tensor]:
    """Hidden states for `inputs` under `plan`: the stack's input (embeddings), then the
    output of every schedule step, in order (before any final norm)."""
    states: list[torch.Tensor] = []

    def record_input(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        states.append(hidden.detach())

    def record_output(module, args, output):
        states.append(output_state(output).detach())

    last_calls = [i for i, ends in enumerate(ends_of_steps(plan.schedule(num_layers(model)))) if ends]
    with apply(model, plan):
        calls = layer_list(model)
        handles = [calls[0].register_forward_pre_hook(record_input, with_kwargs=True)]
        handles += [calls[i].register_forward_hook(record_output) for i in last_calls]
        try:
            model(**inputs, use_cache=False) if _takes_use_cache(model) else model(**inputs)
        finally:
            for handle in handles:
                handle.remove()
    return states


def _takes_use_cache(model: nn.Module) -> bool:
    return "use_cache" in inspect.signature(model.forward).parameters
