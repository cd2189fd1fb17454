"""The LayerShuffle study's jobs, from the config's `layershuffle` block. Plain Python, no I/O.

A trained model is named `BASE.VARIANT.sSEED` (e.g. `vit-digits.layershuffle.s0`): that name is
its folder under `RESULTS/layershuffle/models/` and its model name in the score files, and the
figures read the training variant and seed back from it (`parse_trained_name`).

Its evaluation grid (`evaluation_plans`): the layers in order (`baseline`) and in random orders
(`shuffle_all-S*`), and k = 1, 2, ... layers pruned, kept in order (`prune-P*-S*`) or shuffled
(`shuffle_prune-P*-S*`), with the percent that prunes exactly k layers of its depth.

The separately trained models of one variant (`merging.seeds`) are merged `merging.merges` times
(`BASE.VARIANT.mI`, painters.layershuffle.merging) and ensembled (`BASE.VARIANT.ensemble`); those
are scored in order and in the random orders of the grid (`merge_plans`).

The layer outputs of the models of `umap.seeds` (`umap_models`), run in the random orders
`umap_plans`, are embedded by UMAP (painters.layershuffle.layer_umap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from painters import plan as plans_module

# painters.layershuffle.vision reads these data sets; here without torch, for planning
IMAGE_DATASETS = ("digits", "imagenet-1k", "cifar100", "imagefolder")
TINY_LAYERS = 6  # depth of the tiny ViT unless given


@dataclass(frozen=True, order=True)
class TrainedModel:
    base: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.base}.{self.variant}.s{self.seed}"


@dataclass(frozen=True, order=True)
class CombinedModel:
    """A merge (index `merge`) or, with `merge` None, the ensemble of `variant`'s models merged."""

    base: str
    variant: str
    merge: int | None

    @property
    def name(self) -> str:
        return f"{self.base}.{self.variant}." + ("ensemble" if self.merge is None else f"m{self.merge}")


def trained_from(model: str, data: str, data_seed: int, data_dir: str | None = None, layers: int | None = None,
                 hidden: int | None = None, pretrained: dict | None = None) -> dict:
    """What a model was trained from besides its training settings: the base model (a tiny ViT's
    depth and width), the data, and the settings of the pretraining it was fine-tuned from (none:
    trained from the base model itself). Its scores record it; a score of a model trained from another is stale."""
    record = {"model": model, "data": data, "data_seed": data_seed, "data_dir": data_dir}
    if model == "tiny":
        record |= {"layers": layers, "hidden": hidden}
    if pretrained is not None:
        record["pretrained"] = pretrained
    return record


def parse_trained_name(name: str) -> TrainedModel | None:
    """The (base, variant, seed) of a trained model's name, or None for any other model name."""
    from painters.layershuffle.training import VARIANTS

    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[1] not in VARIANTS or not parts[2].startswith("s") or not parts[2][1:].isdigit():
        return None
    return TrainedModel(parts[0], parts[1], int(parts[2][1:]))


def parse_combined_name(name: str) -> CombinedModel | None:
    """The (base, variant, merge) of a merged model's or an ensemble's name, or None for any other."""
    from painters.layershuffle.training import VARIANTS

    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[1] not in VARIANTS:
        return None
    if parts[2] == "ensemble":
        return CombinedModel(parts[0], parts[1], None)
    if parts[2].startswith("m") and parts[2][1:].isdigit():
        return CombinedModel(parts[0], parts[1], int(parts[2][1:]))
    return None


def trained_models(settings: Mapping) -> list[TrainedModel]:
    """Every model to train: each variant at each seed, and the models each merged variant is merged from."""
    merging = settings.get("merging", {})
    wanted = {(variant, seed) for variant in settings["variants"] for seed in settings["seeds"]}
    wanted |= {(variant, seed) for variant in merging.get("variants", []) for seed in merging.get("seeds", [])}
    return sorted(TrainedModel(base, variant, seed) for base in settings["base_models"] for variant, seed in wanted)


def merge_sources(settings: Mapping, base: str, variant: str) -> list[TrainedModel]:
    """The separately trained models of `variant` that its merges and its ensemble are made of."""
    return [TrainedModel(base, variant, seed) for seed in settings["merging"]["seeds"]]


def combined_models(settings: Mapping) -> list[CombinedModel]:
    """The merged models and the ensemble of each merged variant of each base model."""
    merging = settings.get("merging", {})
    return [CombinedModel(base, variant, merge) for base in settings["base_models"] for variant in merging.get("variants", [])
            for merge in [*range(merging["merges"]), None]]


def merge_plans(settings: Mapping) -> list[str]:
    """Merged models and ensembles are scored with their layers in order and in the grid's random orders."""
    return ["baseline", *(f"shuffle_all-S{s}" for s in settings["evaluation"]["order_seeds"])]


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


def umap_models(settings: Mapping) -> list[TrainedModel]:
    """The trained models whose layer outputs get a UMAP (painters.layershuffle.layer_umap): every
    variant at each of `umap.seeds`, which must be training seeds."""
    seeds = settings["umap"]["seeds"]
    missing = sorted(set(seeds) - set(settings["seeds"]))
    if missing:
        raise ValueError(f"layershuffle.umap.seeds {missing}: not among layershuffle.seeds {settings['seeds']} (no model is trained "
                         "there); give trained seeds, or [] for no UMAP")
    return sorted(TrainedModel(base, variant, seed) for base in settings["base_models"] for variant in settings["variants"]
                  for seed in seeds)


def umap_plans(settings: Mapping) -> list[str]:
    """The random orders the images run in for the UMAP."""
    return [f"shuffle_all-S{s}" for s in settings["umap"]["order_seeds"]]
