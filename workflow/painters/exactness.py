"""Is surgery exact on this model? Checks against an independent reference.

The reference for a plan is the model *rebuilt*: a new instance of the same class, from a
config whose depth is the number of executed layer calls and whose per-layer settings
(`layer_types`, ...) list each call's layer, with the weights copied so that position j holds
the layer that the schedule's j-th call runs. Its cache indices, masks and rotary embeddings
come from the model's own construction, not from surgery. A parallel step's layers sit at
consecutive positions; forward hooks (not surgery's wrappers) make each pass its input on and
the last give the mean of their outputs.

Checks per plan: logits under surgery equal the rebuilt model's; the baseline equals the
untouched model bit for bit; for models that generate, cached greedy generation gives the
tokens of uncached generation and each cached step's logits equal a full forward's.

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


def rebuilt_model(model: nn.Module, plan: Plan) -> nn.Module:
    """`model` rebuilt with the plan's layer calls physically in a new stack (see module doc)."""
    depth = surgery.num_layers(model)
    schedule = plan.schedule(depth)
    calls = [index for step in schedule for index in step]
    _, _, stack_name = surgery.find_stack(model)

    config = copy.deepcopy(model.config)
    text_config = config.get_text_config()
    per_layer = surgery.per_layer_fields(text_config, depth)
    text_config.num_hidden_layers = len(calls)
    for name, values in per_layer.items():
        setattr(text_config, name, [values[index] for index in calls])
    rebuilt = type(model)(config)

    state = model.state_dict()
    prefix = stack_name + "."
    moved = {}
    for key in rebuilt.state_dict():
        if key.startswith(prefix):
            position, rest = key[len(prefix):].split(".", 1)
            moved[key] = state[f"{prefix}{calls[int(position)]}.{rest}"]
        else:
            moved[key] = state[key]
    rebuilt.load_state_dict(moved, strict=True)
    rebuilt.to(next(model.parameters()).dtype).eval()

    stack = rebuilt.get_submodule(stack_name)
    position = 0
    for step in schedule:
        if len(step) > 1:
            _average_in_place([stack[p] for p in range(position, position + len(step))])
        position += len(step)
    return rebuilt


def _average_in_place(members: list[nn.Module]) -> None:
    """Hooks that make consecutive layers act as one parallel step: every member runs on the
    step's input (each hands its input on), the last returns the mean of their outputs."""
    outputs: list[torch.Tensor] = []

    def state_of(value):
        return value[0] if isinstance(value, tuple) else value

    def replace_state(value, state):
        return (state, *value[1:]) if isinstance(value, tuple) else state

    def hand_on(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        if module is members[0]:
            outputs.clear()
        outputs.append(state_of(output))
        if module is members[-1]:
            return replace_state(output, torch.stack(outputs).mean(dim=0))
        return replace_state(output, hidden)

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


def _scale(values: torch.Tensor) -> float:
    return max(1.0, float(values.float().abs().max()))


def check_plan(model: nn.Module, plan: Plan, inputs: dict, new_tokens: int = 6) -> PlanCheck:
    """One plan's checks on `model` (eval mode) for `inputs` (see module doc)."""
    with surgery.apply(model, plan):
        got = _forward(model, inputs)
    if plan.variant == "baseline":
        untouched = _forward(model, inputs)
        if not torch.equal(got, untouched):
            return PlanCheck(plan.key, False, f"baseline differs from the untouched model by {_largest_difference(got, untouched):.2e}")
        expected = untouched
    else:
        expected = _forward(rebuilt_model(model, plan), inputs)
    difference = _largest_difference(got, expected)
    if got.shape != expected.shape or not difference <= TOLERANCE * _scale(expected):
        return PlanCheck(plan.key, False, f"logits differ from the rebuilt model by {difference:.2e}")
    if _generates(model):
        problem = _generation_problem(model, plan, inputs, new_tokens)
        if problem:
            return PlanCheck(plan.key, False, problem)
    return PlanCheck(plan.key, True, f"max difference {difference:.1e}")


def _generation_problem(model: nn.Module, plan: Plan, inputs: dict, new_tokens: int) -> str | None:
    """Why cached generation under `plan` is not exact, or None."""
    prompt = {name: value[:1] for name, value in inputs.items()}  # one row: no padding questions
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with surgery.apply(model, plan), torch.no_grad():
        cached = model.generate(**prompt, **settings, use_cache=True, return_dict_in_generate=True, output_logits=True)
        uncached = model.generate(**prompt, **settings, use_cache=False)
        full = _forward(model, {"input_ids": cached.sequences})
    if not torch.equal(cached.sequences, uncached):
        return "cached generation gives other tokens than uncached generation"
    start = prompt["input_ids"].shape[1] - 1
    step_logits = torch.stack(cached.logits, dim=1)
    full_logits = full[:, start: start + step_logits.shape[1]]
    difference = _largest_difference(step_logits, full_logits)
    if not difference <= TOLERANCE * _scale(full_logits):
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
