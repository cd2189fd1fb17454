"""Is surgery exact on this model? Checks against an independent reference.

The reference for a plan is the model *rebuilt*: a deep copy whose layer stack is a new list
holding a copy of the layer of each executed call, in schedule order, with each copy's cache
index renumbered to its position, and the config's depth and per-layer settings
(`layer_types`, ...) rebuilt to list each call's layer. No surgery wrapper runs in it: the
model's own loop hands each copy its mask, rotary embedding and cache slot. A parallel step's
copies sit at consecutive positions; forward hooks make each pass its input on and the last
give the mean of their outputs.

Checks per plan: logits under surgery equal the rebuilt model's; the baseline equals the
untouched model bit for bit; for models that generate, cached greedy generation gives the
rebuilt model's tokens and step logits, and equals uncached generation (tokens, and each
step's logits against a full forward) wherever the rebuilt model's own does.

Used by the tests (a representative set of families) and by benchmarks/surgery_coverage.py
(every family). No I/O.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from painters import surgery
from painters.plan import Plan

# logits are compared up to float32 rounding of differently fused kernels
TOLERANCE = 1e-4


@dataclass(frozen=True)
class PlanCheck:
    plan: str
    ok: bool
    detail: str  # what differed, or the largest difference seen


def rebuilt_model(model: nn.Module, plan: Plan, tie_repeated: bool = False) -> nn.Module:
    """A copy of `model` with the plan's layer calls physically in a new stack (see module doc).

    `tie_repeated`: the copies of a layer called several times share its parameters
    (`tie_repeated_calls`), the reference for training under a plan."""
    depth = surgery.num_layers(model)
    schedule = plan.schedule(depth)
    calls = surgery.called_layers(schedule)
    _, _, stack_name = surgery.find_stack(model)

    rebuilt = copy.deepcopy(model)
    configs = surgery.stack_configs(rebuilt)  # found while its stack still has the declared depth
    rebuilt.__dict__.pop(surgery._FOUND_KEY, None)  # its stack changes below
    layers = rebuilt.get_submodule(stack_name)
    stack = nn.ModuleList(copy.deepcopy(layers[index]) for index in calls)
    # renumbered here, not through surgery's own lookup of the index holders: the reference
    # must not share a mistake in it
    for position, layer in enumerate(stack):
        for module in layer.modules():
            for name in surgery.POSITION_ATTRIBUTES:
                if isinstance(module.__dict__.get(name), int):
                    setattr(module, name, position)
    owner_name, _, attr = stack_name.rpartition(".")
    setattr(rebuilt.get_submodule(owner_name) if owner_name else rebuilt, attr, stack)

    for config in configs:
        surgery.follow_calls(config, depth, calls)  # for good: the copy is the reference

    position = 0
    for step in schedule:
        if len(step) > 1:
            _average_in_place([stack[p] for p in range(position, position + len(step))])
        position += len(step)
    if tie_repeated:
        tie_repeated_calls(stack, calls)
    return rebuilt.eval()


def tie_repeated_calls(stack: nn.ModuleList, calls: list[int]) -> None:
    """Make every later copy in `stack` of a layer (`calls`: the layer index of each copy) hold the
    very nn.Parameter objects of its first copy: in training, a repeated layer is one set of weights."""
    first: dict[int, nn.Module] = {}
    for layer, index in zip(stack, calls):
        if index not in first:
            first[index] = layer
            continue
        for name, module in layer.named_modules():
            source = first[index].get_submodule(name)
            for parameter_name in list(module._parameters):
                setattr(module, parameter_name, source._parameters[parameter_name])


def _average_in_place(members: list[nn.Module]) -> None:
    """Hooks that make consecutive layers act as one parallel step: every member runs on the
    step's input (each hands its input on), the last returns the mean of their outputs."""
    outputs: list[torch.Tensor] = []

    def hand_on(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        if module is members[0]:
            outputs.clear()
        outputs.append(surgery.output_state(output))
        if module is members[-1]:
            return surgery.with_state(output, torch.stack(outputs).mean(dim=0))
        return surgery.with_state(output, hidden)

    for member in members:
        member.register_forward_hook(hand_on, with_kwargs=True)


def _forward(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        kwargs = dict(inputs)
        if _generates(model):
            kwargs["use_cache"] = False
        out = model(**kwargs)
    for name in ("logits", "last_hidden_state"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    return out[0]


def _generates(model: nn.Module) -> bool:
    return hasattr(model, "can_generate") and model.can_generate()


def _largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _beyond_tolerance(got: torch.Tensor, expected: torch.Tensor) -> float | None:
    """The largest difference if it exceeds the tolerance (relative to `expected`'s scale), else None."""
    difference = _largest_difference(got, expected)
    scale = max(1.0, float(expected.float().abs().max()))
    return difference if not difference <= TOLERANCE * scale else None


def check_plan(model: nn.Module, plan: Plan, inputs: dict, new_tokens: int = 6) -> PlanCheck:
    """One plan's checks on `model` (eval mode) for `inputs` (see module doc)."""
    with surgery.apply(model, plan):
        got = _forward(model, inputs)
    reference = model if plan.variant == "baseline" else rebuilt_model(model, plan)
    expected = _forward(reference, inputs)
    if plan.variant == "baseline" and not torch.equal(got, expected):
        return PlanCheck(plan.key, False, f"baseline differs from the untouched model by {_largest_difference(got, expected):.2e}")
    if got.shape != expected.shape:
        return PlanCheck(plan.key, False, f"logits of shape {tuple(got.shape)}, the rebuilt model's {tuple(expected.shape)}")
    difference = _beyond_tolerance(got, expected)
    if difference is not None:
        return PlanCheck(plan.key, False, f"logits differ from the rebuilt model by {difference:.2e}")
    note = f"max difference {_largest_difference(got, expected):.1e}"
    if _generates(model):
        try:
            expected_run = _generation(reference, inputs, new_tokens)
        except Exception as error:  # noqa: BLE001 - the family's own generate, not surgery
            return PlanCheck(plan.key, True, f"{note}; generation not checked: the model itself fails ({type(error).__name__})")
        with surgery.apply(model, plan):
            run = _generation(model, inputs, new_tokens)
        problem = _generation_problem(run, expected_run)
        if problem:
            return PlanCheck(plan.key, False, problem)
    return PlanCheck(plan.key, True, note)


@dataclass(frozen=True)
class Generation:
    cached: torch.Tensor  # tokens, generated with the KV cache
    step_logits: torch.Tensor  # the logits of each cached step
    uncached: torch.Tensor  # tokens, generated without a cache
    full_logits: torch.Tensor  # one forward over the cached tokens, at the generated positions


def _generation(model: nn.Module, inputs: dict, new_tokens: int) -> Generation:
    prompt = {name: value[:1] for name, value in inputs.items()}  # one row: no padding questions
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(**prompt, **settings, use_cache=True, return_dict_in_generate=True, output_logits=True)
        uncached = model.generate(**prompt, **settings, use_cache=False)
        full = _forward(model, {"input_ids": cached.sequences})
    start = prompt["input_ids"].shape[1] - 1
    step_logits = torch.stack(cached.logits, dim=1)
    return Generation(cached.sequences, step_logits, uncached, full[:, start: start + step_logits.shape[1]])


def _generation_problem(run: Generation, reference: Generation) -> str | None:
    """Why generation under a plan is not exact, or None. Cached generation must give the
    rebuilt model's tokens and step logits; and the uncached tokens too, wherever the rebuilt
    model's own cached and uncached generation agree (some families' do not, plan or not)."""
    if not torch.equal(run.cached, reference.cached):
        return "cached generation gives other tokens than the rebuilt model's"
    difference = _beyond_tolerance(run.step_logits, reference.step_logits)
    if difference is not None:
        return f"cached step logits differ from the rebuilt model's by {difference:.2e}"
    reference_consistent = torch.equal(reference.cached, reference.uncached) and _beyond_tolerance(
        reference.step_logits, reference.full_logits) is None
    if reference_consistent:
        if not torch.equal(run.cached, run.uncached):
            return "cached generation gives other tokens than uncached generation"
        difference = _beyond_tolerance(run.step_logits, run.full_logits)
        if difference is not None:
            return f"cached step logits differ from a full forward by {difference:.2e}"
    return None


def check_model(model: nn.Module, plans: list[Plan], inputs: dict) -> list[PlanCheck]:
    """`check_plan` for each plan; an exception in a plan is that plan's failure, in one line."""
    results = []
    for plan in plans:
        try:
            results.append(check_plan(model, plan, inputs))
        except Exception as error:  # noqa: BLE001 - a coverage table reports any failure as a row
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            results.append(PlanCheck(plan.key, False, f"{type(error).__name__}: {message}"[:200]))
    return results
