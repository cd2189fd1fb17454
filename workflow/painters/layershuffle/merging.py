"""Merged ("Frankenstein") models and ensembles of separately trained models (LayerShuffle, section 4).

A merge takes the layer at each position from another trained model of the same variant: with as
many models as layers, each position from a different model (a permutation, as the paper's 100
merges out of 12!); with fewer, each model gives the same number of layers (one more for some),
at positions drawn at random. Everything outside the layer stack (embeddings, final norm, head)
and the position embedding come from one model (`rest`); each layer brings its own position
projection and head. An ensemble averages the models' logits.

`painters merge-vision` (the workflow's merge job of one variant) scores the merged models
(`NAME.mI`) and the ensemble (`NAME.ensemble`) under plans, as score files like
`painters evaluate-vision`'s.
"""

from __future__ import annotations

import copy
import math
import random

import torch
from torch import nn

from painters import surgery
from painters.plan import Plan


def merge_assignments(n_models: int, depth: int, n_merges: int, seed: int) -> list[tuple[int, ...]]:
    """For each merge, which model gives the layer at each position; drawn from `seed`, no merge twice."""
    if n_models < 2:
        raise ValueError(f"a merge needs at least 2 trained models, got {n_models}")
    possible = distinct_merges(n_models, depth)
    if not 1 <= n_merges <= possible:
        raise ValueError(f"{n_merges} merges: {n_models} models over {depth} layers make 1..{possible} distinct merges")
    rng = random.Random(seed)
    # with fewer models than layers, each model gives its share of the layers (no merge is mostly one model)
    shares = [index % n_models for index in range(depth)]
    assignments: dict[tuple[int, ...], None] = {}  # in the order drawn
    while len(assignments) < n_merges:
        if n_models >= depth:
            drawn = tuple(rng.sample(range(n_models), depth))
        else:
            rng.shuffle(shares)
            drawn = tuple(shares)
        assignments.setdefault(drawn)
    return list(assignments)


def distinct_merges(n_models: int, depth: int) -> int:
    """How many different merges `merge_assignments` can draw."""
    if n_models >= depth:
        return math.perm(n_models, depth)
    shares = [depth // n_models + (index < depth % n_models) for index in range(n_models)]
    return math.factorial(depth) // math.prod(math.factorial(share) for share in shares)


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


def ensemble_accuracies(models: list[nn.Module], modules: list, plans: list[Plan], split, batch_size: int = 256,
                        precision: str = "fp32", workers: int = 0) -> list[float]:
    """Top-1 accuracy of the models' mean logits on `split` under each of `plans`, in one pass over
    the data, on the models' device."""
    from painters.layershuffle.training import device_of, plan_accuracies

    return plan_accuracies(lambda plan, images: ensemble_logits(models, modules, plan, images), plans, split,
                           device_of(models[0]), batch_size, precision, workers)


# ---- `painters merge-vision`: the merges and the ensemble of one variant's trained models, scored


def run_command(args) -> int:
    import time
    from pathlib import Path

    from painters import results
    from painters.evaluate import check_plan_keys
    from painters.layershuffle import evaluation, training

    results.safe_name(args.name, "--name")
    check_plan_keys(args.plans)
    if len(args.trained) < 2:
        raise ValueError(f"--trained: merging needs at least 2 trained models, got {len(args.trained)}")
    device = training.select_device(args.device)
    training.check_workers(args.workers)
    loaded = [evaluation.load_trained(folder, device) for folder in args.trained]
    models, modules, facts = (list(column) for column in zip(*loaded))
    # one variant, one data set, one architecture: only the seed may differ
    shared = [{key: value for key, value in f["settings"].items() if key != "seed"} | {"data": f["data"], "data_seed": f["data_seed"],
              "base_model": f["base_model"], "trained_from": f.get("trained_from")} for f in facts]
    differing = [str(folder) for folder, same in zip(args.trained, shared) if same != shared[0]]
    if differing:
        raise ValueError(f"--trained {', '.join(differing)}: trained otherwise than {args.trained[0]} (merged models must "
                         "differ in their seed only)")
    precision = facts[0]["settings"].get("precision", "fp32")  # as they were trained
    training.check_precision(precision, device)
    depth = surgery.num_layers(models[0])
    plans = check_plan_keys(args.plans, depth)
    assignments = merge_assignments(len(models), depth, args.merges, args.merge_seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = evaluation.trained_data(args.trained[0], facts[0])
    sources = [f["settings"] for f in facts]
    model_id = ";".join(str(Path(folder).resolve()) for folder in args.trained)
    options = {"precision": precision, "workers": args.workers}

    def score(name, training_record, accuracies_of):
        pending = evaluation.pending_plans(args.out, name, plans, data.name, args.overwrite)
        if pending:
            started = time.perf_counter()
            evaluation.write_scores(args.out, name, model_id, pending, accuracies_of(pending), depth=depth, data=data,
                                    training=training_record, seconds=time.perf_counter() - started, device=device,
                                    trained_from=facts[0].get("trained_from"))

    for index, assignment in enumerate(assignments):
        score(f"{args.name}.m{index}", merged_training(sources, assignment),
              lambda pending, assignment=assignment: training.accuracies(*merge(models, assignment, modules), pending, data.test, **options))
    score(f"{args.name}.ensemble", ensemble_training(sources),
          lambda pending: ensemble_accuracies(models, modules, pending, data.test, **options))
    return 0


def merged_training(sources: list[dict], assignment) -> dict:
    """What a merged model's scores record as its training (a changed one makes them stale): its
    source models' training settings and which of them gave each layer."""
    return {"merged_from": sources, "assignment": list(assignment)}


def ensemble_training(sources: list[dict]) -> dict:
    return {"ensemble_of": sources}


def register(subparsers) -> None:
    from painters.layershuffle.training import add_runtime_arguments

    parser = subparsers.add_parser("merge-vision", help="merge and ensemble one variant's trained vision models, scored")
    parser.add_argument("--trained", nargs="+", required=True, metavar="FOLDER",
                        help="the separately trained models (folders `painters train-vision` wrote), differing in seed only")
    parser.add_argument("--name", required=True, help="the merged models are named NAME.mI, the ensemble NAME.ensemble")
    parser.add_argument("--merges", type=int, required=True, help="how many merged models")
    parser.add_argument("--merge-seed", type=int, default=0, help="draws which model gives each merged layer")
    parser.add_argument("--plans", nargs="+", required=True, metavar="KEY")
    parser.add_argument("--out", required=True, help="results folder")
    add_runtime_arguments(parser)
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run_command)
