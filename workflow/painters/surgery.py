"""Model surgery: run a loaded Hugging Face model on a plan's schedule.

`apply(model, plan)` swaps the model's layer list for a list of *steps*, one per
schedule step. A step holds references to the original layer modules (no weight
is copied) and runs them; a step of several layers runs each on the same input
and averages their outputs (HF layers return h + f_i(h), so the mean is
h + mean_i f_i(h)). On exit the original list, config and layer indices are put
back, so the model is exactly as before.

KV cache: decoder attention addresses the cache by `layer_idx`, so a layer run
twice would overwrite its own cache entry and silently give wrong logits. Every
executed layer call therefore gets its own cache slot: before each call the
step sets the layer's `layer_idx` to that call's slot, and the config's
`num_hidden_layers` is raised to the number of slots so the cache makes room.

No Snakemake and no I/O here: plain Python, tested directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from painters.plan import Plan

# Base model class name -> (path from the base model to the module holding the layer list, attribute name)
LAYER_STACKS = {
    "LlamaModel": ("", "layers"),
    "MistralModel": ("", "layers"),
    "Qwen2Model": ("", "layers"),
    "GPTNeoXModel": ("", "layers"),
    "BertModel": ("encoder", "layer"),
}
SUPPORTED = ", ".join(LAYER_STACKS)

_APPLIED_FLAG = "_painters_plan"


def _base_model(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def _stack_owner(model: nn.Module) -> tuple[nn.Module, str]:
    """The module that holds the layer list, and the list's attribute name."""
    base = _base_model(model)
    name = type(base).__name__
    if name not in LAYER_STACKS:
        raise ValueError(
            f"unsupported architecture {type(model).__name__} (base model {name}); "
            f"supported base models: {SUPPORTED}"
        )
    path, attr = LAYER_STACKS[name]
    owner = base.get_submodule(path) if path else base
    return owner, attr


def check_supported(model: nn.Module) -> None:
    """Raise ValueError naming the model's class and the supported ones if surgery cannot handle it."""
    owner, attr = _stack_owner(model)
    if getattr(_base_model(model).config, "is_heterogeneous", False):
        raise ValueError(f"{type(model).__name__} has a heterogeneous per-layer config, which surgery does not support")
    if not isinstance(getattr(owner, attr), nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: expected an nn.ModuleList at .{attr}")


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The layer list the model runs now: its own layers, or the Steps while a plan is applied."""
    owner, attr = _stack_owner(model)
    return getattr(owner, attr)


def num_layers(model: nn.Module) -> int:
    """T, the depth of the model as loaded."""
    if getattr(model, _APPLIED_FLAG, None) is not None:
        raise RuntimeError("num_layers() is the depth as loaded: call it outside apply()")
    return len(layer_list(model))


def _device_of(module: nn.Module, first_parameter: torch.Tensor | None) -> torch.device | None:
    # accelerate's device_map hooks know where a layer executes; else where its first parameter is
    # (the same Parameter object follows the module through .to())
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device)
    return None if first_parameter is None else first_parameter.device


def _cache_index_holders(layer: nn.Module) -> list[nn.Module]:
    """The submodules of `layer` (attention blocks) that address the KV cache by `layer_idx`."""
    return [m for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]


class Step(nn.Module):
    """One schedule step: run one layer, or several on the same input and average them.

    `slots[i]` is the KV-cache slot of the i-th layer's call in this step.
    """

    def __init__(self, step_layers: list[nn.Module], slots: list[int]):
        super().__init__()
        self.step_layers = nn.ModuleList(step_layers)
        self.slots = slots
        # found once here, not on every call: walking a layer's modules costs more than a tiny layer
        self._cache_holders = [_cache_index_holders(layer) for layer in step_layers]
        self._first_parameters = [next(layer.parameters(), None) for layer in step_layers]
        # some decoders read per-layer attributes off the layer they loop over
        for name in ("attention_type",):
            if hasattr(step_layers[0], name):
                setattr(self, name, getattr(step_layers[0], name))

    def _call(self, i: int, hidden_states: torch.Tensor, args, kwargs):
        layer = self.step_layers[i]
        for holder in self._cache_holders[i]:
            holder.layer_idx = self.slots[i]
        device = _device_of(layer, self._first_parameters[i])
        if device is not None and hidden_states.device != device:
            hidden_states = hidden_states.to(device)
        return layer(hidden_states, *args, **kwargs)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if len(self.step_layers) == 1:
            return self._call(0, hidden_states, args, kwargs)
        outputs = [self._call(i, hidden_states, args, kwargs) for i in range(len(self.step_layers))]
        first = outputs[0]
        states = [out[0] if isinstance(out, tuple) else out for out in outputs]
        device = states[0].device
        mean = torch.stack([s.to(device) for s in states]).mean(dim=0)
        return (mean, *first[1:]) if isinstance(first, tuple) else mean


def build_steps(original_layers: nn.ModuleList, schedule) -> nn.ModuleList:
    """A ModuleList of Steps for `schedule`, numbering cache slots in execution order.

    A layer that runs once in the schedule, alone, at its own index as cache slot is placed
    as it is: it needs no wrapper (so the baseline and the first N layers of every plan cost
    nothing extra). A layer that runs twice is always wrapped: each call sets its slot.
    """
    uses = Counter(i for step in schedule for i in step)
    steps, next_slot = [], 0
    for step in schedule:
        slots = list(range(next_slot, next_slot + len(step)))
        next_slot += len(step)
        layer = original_layers[step[0]]
        at_own_slot = all(h.layer_idx == slots[0] for h in _cache_index_holders(layer))
        if len(step) == 1 and uses[step[0]] == 1 and step[0] == slots[0] and at_own_slot:
            steps.append(layer)
        else:
            steps.append(Step([original_layers[i] for i in step], slots))
    return nn.ModuleList(steps)


@contextmanager
def apply(model: nn.Module, plan: Plan, steps: nn.ModuleList | None = None) -> Iterator[nn.Module]:
    """Run `model` on `plan`'s schedule inside the `with` block; restore it exactly afterwards.

    `steps`: the plan's steps built beforehand (`build_steps`, possibly wrapped), for a
    caller that applies the same plan many times (painters.engine).
    """
    check_supported(model)
    if getattr(model, _APPLIED_FLAG, None) is not None:
        raise RuntimeError(f"a plan ({getattr(model, _APPLIED_FLAG)}) is already applied to this model")
    owner, attr = _stack_owner(model)
    original_layers = getattr(owner, attr)
    schedule = plan.schedule(len(original_layers))
    config = _base_model(model).config
    num_slots = sum(len(step) for step in schedule)

    saved_indices = [(m, m.layer_idx) for layer in original_layers for m in _cache_index_holders(layer)]
    saved_num_layers = config.num_hidden_layers
    saved_layer_types = getattr(config, "layer_types", None)
    if saved_layer_types is not None and len(set(saved_layer_types)) > 1 and plan.variant != "baseline":
        # a step index would select the wrong attention mask for mixed sliding/full stacks
        raise ValueError(
            f"{type(model).__name__} mixes attention types {sorted(set(saved_layer_types))}; "
            "surgery supports only models whose layers share one attention type"
        )

    if steps is None:
        steps = build_steps(original_layers, schedule)
    elif len(steps) != len(schedule):
        raise ValueError(f"{len(steps)} prebuilt steps for plan {plan.key}, whose schedule has {len(schedule)}")
    try:
        setattr(owner, attr, steps)
        # the decoder loops over layers[: num_hidden_layers] and the cache sizes itself from it
        config.num_hidden_layers = max(num_slots, len(steps))
        if saved_layer_types is not None:
            config.layer_types = [saved_layer_types[0]] * config.num_hidden_layers
        setattr(model, _APPLIED_FLAG, plan.key)
        yield model
    finally:
        setattr(owner, attr, original_layers)
        config.num_hidden_layers = saved_num_layers
        if saved_layer_types is not None:
            config.layer_types = saved_layer_types
        for module, index in saved_indices:
            module.layer_idx = index
        model.__dict__.pop(_APPLIED_FLAG, None)


@torch.no_grad()
def hidden_states(model: nn.Module, plan: Plan, **inputs) -> list[torch.Tensor]:
    """Hidden states for `inputs` under `plan`: the stack's input (embeddings), then the
    output of every schedule step, in order (before any final norm)."""
    states: list[torch.Tensor] = []

    def record_input(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        states.append(hidden.detach())

    def record_output(module, args, output):
        states.append((output[0] if isinstance(output, tuple) else output).detach())

    with apply(model, plan):
        steps = layer_list(model)
        handles = [steps[0].register_forward_pre_hook(record_input, with_kwargs=True)]
        handles += [step.register_forward_hook(record_output) for step in steps]
        try:
            model(**inputs, use_cache=False) if _is_decoder(model) else model(**inputs)
        finally:
            for handle in handles:
                handle.remove()
    return states


def _is_decoder(model: nn.Module) -> bool:
    return type(_base_model(model)).__name__ != "BertModel"
