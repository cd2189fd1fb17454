"""The LayerShuffle study's jobs, from the config's `layershuffle` block. Plain Python, no I/O.

A trained model is named `BASE.VARIANT.sSEED` (e.g. `vit-digits.layershuffle.s0`): that name is
its folder under `RESULTS/layershuffle/models/` and its model name in the score files, and the
figures read the training variant and seed back from it (`parse_trained_name`).

Its evaluation grid (`evaluation_plans`): the layers in order (`baseline`) and in random orders
(`shuffle_all-S*`), and k = 1, 2, ... layers pruned, kept in order (`prune-P*-S*`) or shuffled
(`shuffle_prune-P*-S*`), with the percent that prunes exactly k layers of its depth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from painters import plan as plans_module


@dataclass(frozen=True, order=True)
class TrainedModel:
    base: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.base}.{self.variant}.s{self.seed}"


def parse_trained_name(name: str) -> TrainedModel | None:
    """The (base, variant, seed) of a trained model's name, or None for any other model name."""
    from painters.layershuffle.training import VARIANTS

    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[1] not in VARIANTS or not parts[2].startswith("s") or not parts[2][1:].isdigit():
        return None
    return TrainedModel(parts[0], parts[1], int(parts[2][1:]))


def trained_models(settings: Mapping) -> list[TrainedModel]:
    return sorted(TrainedModel(base, variant, seed) for base in settings["base_models"]
                  for variant in settings["variants"] for seed in settings["seeds"])


def percent_pruning(k: int, depth: int) -> int:
    """The percent whose prune plan drops exactly k of `depth` layers: the nearest to k / depth."""
    for percent in sorted(range(1, 100), key=lambda p: (abs(p - 100 * k / depth), p)):
        if plans_module._pruned_count(depth, percent) == k:
            return percent
    raise ValueError(f"no prune percent drops {k} of {depth} layers (k must be in 1..{depth - 1})")


def evaluation_plans(settings: Mapping, depth: int) -> list[str]:
    evaluation = settings["evaluation"]
    shuffles = [f"shuffle_all-S{s}" for s in evaluation["order_seeds"]]
    bad = [k for k in evaluation["pruned"] if not 1 <= k < depth]
    if bad:
        raise ValueError(f"layershuffle.evaluation.pruned {bad}: a {depth}-layer model can have 1..{depth - 1} layers pruned")
    pruned = [f"{kind}-P{percent_pruning(k, depth)}-S{s}" for k in evaluation["pruned"] for s in evaluation["prune_seeds"]
              for kind in ("prune", "shuffle_prune")]
    return ["baseline", *shuffles, *pruned, *evaluation.get("plans", [])]
