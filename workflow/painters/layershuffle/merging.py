"""Merged ("Frankenstein") models and ensembles of separately trained models (LayerShuffle, section 4).

A merge takes the layer at each position from another trained model of the same variant: with as
many models as layers, each position from a different model (a permutation, as the paper's 100
merges out of 12!); with fewer, drawn with replacement. Everything outside the layer stack
(embeddings, final norm, head) and the position embedding come from one model (`rest`); each
layer brings its own position projection and head. An ensemble averages the models' logits.
Plain Python on loaded models; no I/O.
"""

from __future__ import annotations

import copy
import random

import torch
from torch import nn

from painters import surgery
from painters.plan import Plan


def merge_assignments(n_models: int, depth: int, n_merges: int, seed: int) -> list[tuple[int, ...]]:
    """For each merge, which model gives the layer at each position; drawn from `seed`, no merge twice
    (as far as there are enough distinct ones)."""
    rng = random.Random(seed)
    assignments: list[tuple[int, ...]] = []
    for _ in range(n_merges * 100):
        if len(assignments) == n_merges:
            break
        if n_models >= depth:
            drawn = tuple(rng.sample(range(n_models), depth))
        else:
            drawn = tuple(rng.randrange(n_models) for _ in range(depth))
        if drawn not in assignments:
            assignments.append(drawn)
    return assignments


def merge(models: list[nn.Module], assignment: tuple[int, ...], modules: list | None = None, rest: int = 0):
    """(merged model, its position modules or None): a copy of models[rest] whose layer i holds the
    weights of models[assignment[i]]'s layer i (and that layer's position projection and head)."""
    depth = surgery.num_layers(models[rest])
    if len(assignment) != depth or not all(0 <= m < len(models) for m in assignment):
        raise ValueError(f"a merge of {depth} layers needs one model index in 0..{len(models) - 1} per layer, got {assignment}")
    merged = copy.deepcopy(models[rest])
    layers = surgery.layer_list(merged)
    for position, source in enumerate(assignment):
        layers[position].load_state_dict(surgery.layer_list(models[source])[position].state_dict())
    merged_modules = None
    if modules is not None and modules[rest] is not None:
        merged_modules = copy.deepcopy(modules[rest])
        for position, source in enumerate(assignment):
            for name in ("projections", "heads"):
                if hasattr(merged_modules, name):
                    getattr(merged_modules, name)[position].load_state_dict(getattr(modules[source], name)[position].state_dict())
    return merged.eval(), merged_modules


@torch.no_grad()
def ensemble_logits(models: list[nn.Module], modules: list, plan: Plan, images: torch.Tensor) -> torch.Tensor:
    """The mean of the models' logits on `images`, each run under `plan`."""
    from painters.layershuffle.training import forward

    return torch.stack([forward(model, extra, plan, images)[0] for model, extra in zip(models, modules)]).mean(dim=0)


@torch.no_grad()
def ensemble_accuracy(models: list[nn.Module], modules: list, plan: Plan, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 256) -> float:
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = ensemble_logits(models, modules, plan, images[start : start + batch_size])
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)
