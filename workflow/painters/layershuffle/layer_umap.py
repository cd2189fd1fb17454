"""`painters umap-vision`: UMAP of a trained vision model's layer outputs, each labelled with the
position the layer ran at (LayerShuffle, Freiberger et al., arXiv 2407.04513, section 4).

A sample of test images runs under a few plans (random orders, `shuffle_all-S*`); every layer call's
output is kept, averaged over the tokens (the patches and CLS: what LayerShuffle-predict's position
head reads; the CLS token alone says little about the image in the first layers). UMAP (umap-learn,
seeded) embeds the outputs of all positions together, without being told any position, so the
figure can show whether the outputs group by the position they ran at. The paper: no clean
separation, but grouping by position, clearest at the first layers and somewhat at the last.

Plain functions (`layer_outputs`, `collect`, `embed`, `same_share`) do the work; no I/O.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import torch

from painters import plan as plans_module

NEIGHBOURS = 10  # the 2-D neighbours `same_share` looks at


@torch.no_grad()
def layer_outputs(model, modules, plan: plans_module.Plan, images: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """(outputs [calls, images, hidden], the layer of each call) of `model` on `images` under `plan`:
    each layer call's output averaged over tokens, in the order the calls ran (call i ran at position i).
    The position modules' hooks run as in training (`training.forward`)."""
    from painters import surgery
    from painters.layershuffle import training

    if any(len(step) > 1 for step in plan.schedule(surgery.num_layers(model))):
        raise ValueError(f"plan {plan.key} runs layers in parallel; a position here is one layer's call (use shuffle_all-S*, "
                         "baseline, prune-P*-S*, ...)")
    calls: list[tuple[int, torch.Tensor]] = []

    def keep(layer):
        return lambda module, args, output: calls.append((layer, surgery.output_state(output).mean(dim=1)))

    # hooks on the layers themselves, not on the stack's entries: they fire wherever the plan puts a
    # layer (wrapped or not), in the order the layers run
    handles = [layer.register_forward_hook(keep(index)) for index, layer in enumerate(surgery.layer_list(model))]
    try:
        model.eval()
        training.forward(model, modules, plan, images.to(training.device_of(model)))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([output for _, output in calls]).float().cpu().numpy(), [layer for layer, _ in calls]


def collect(model, modules, plans: list[plans_module.Plan], images: torch.Tensor, batch_size: int = 64) -> tuple[pl.DataFrame, np.ndarray]:
    """(labels, outputs): one row per (plan, layer call, image), with the plan, its seed (`order_seed`),
    the image's index in `images`, the layer and the position it ran at; and the rows' outputs."""
    labels, outputs = [], []
    for plan in plans:
        batches = [layer_outputs(model, modules, plan, images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        per_call = np.concatenate([batch for batch, _ in batches], axis=1)  # [calls, images, hidden]
        layers = batches[0][1]
        calls, n_images = per_call.shape[:2]
        labels.append(pl.DataFrame({
            "plan": plan.key, "order_seed": plan.seed, "image": np.tile(np.arange(n_images), calls),
            "layer": np.repeat(layers, n_images), "position": np.repeat(np.arange(calls), n_images),
        }, schema={"plan": pl.String, "order_seed": pl.Int64, "image": pl.Int64, "layer": pl.Int64, "position": pl.Int64}))
        outputs.append(per_call.reshape(calls * n_images, -1))
    return pl.concat(labels), np.concatenate(outputs)


def embed(outputs: np.ndarray, n_neighbors: int = 15, n_epochs: int = 200, seed: int = 0) -> np.ndarray:
    """UMAP's 2-D embedding [rows, 2] of `outputs` (Euclidean), the same for the same seed."""
    import umap
    from sklearn.neighbors import NearestNeighbors

    if len(outputs) <= n_neighbors:
        raise ValueError(f"UMAP of {len(outputs)} outputs with n_neighbors {n_neighbors}: it needs more outputs than neighbours")
    _cache_umap_compilation()
    # the exact neighbours from scikit-learn: umap-learn's own, for fewer than 4,096 points, call its
    # distance from Python for every pair (4 s for 3,000 points; this: 0.1 s)
    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(outputs).kneighbors(outputs)
    reducer = umap.UMAP(n_neighbors=n_neighbors, n_epochs=n_epochs, random_state=seed,
                        precomputed_knn=(indices, distances.astype(np.float32), None))
    with warnings.catch_warnings():
        # that there is no search index for transform() (not used), and that a seed means one thread
        warnings.filterwarnings("ignore", message=".*(knn_search_index|overridden to 1 by setting random_state).*")
        return reducer.fit_transform(outputs)


def _cache_umap_compilation() -> None:
    """umap-learn compiles its numba functions anew in every process (4 of a 5 s fit of 3,600 points);
    with numba's disk cache on (beside umap's sources, or numba's user-wide cache folder) the next
    job loads them instead (a 1.3 s fit)."""
    from numba.core.registry import CPUDispatcher
    from umap import layouts, umap_, utils

    for module in (umap_, layouts, utils):
        for function in vars(module).values():
            if isinstance(function, CPUDispatcher):
                try:
                    function.enable_caching()
                except RuntimeError:  # no writable cache folder: compile in memory, as umap does
                    return


def same_share(points: pl.DataFrame, column: str, neighbours: int = NEIGHBOURS) -> pl.Series:
    """`same_COLUMN`: for each point of one embedding (x, y), the share of its `neighbours` nearest other
    points with its value of `column` (`position`: about 1 / depth without grouping by position, 1 with
    clean separation)."""
    from sklearn.neighbors import NearestNeighbors

    xy = points.select("x", "y").to_numpy()
    k = min(neighbours, len(xy) - 1)
    _, indices = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    values = points[column].to_numpy()
    same = (values[indices[:, 1:]] == values[:, None]).mean(axis=1)  # column 0: the point itself
    return pl.Series(f"same_{column}", same, dtype=pl.Float64)


def run_command(args) -> int:
    from painters import results, surgery
    from painters.evaluate import check_plan_keys
    from painters.layershuffle import training
    from painters.layershuffle.evaluation import load_trained, trained_data
    from painters.layershuffle.study import parse_trained_name

    results.safe_name(args.name, "--name")
    check_plan_keys(args.plans)  # the keys, before loading anything
    if args.images < 1:
        raise ValueError(f"--images {args.images}: must be >= 1")
    device = training.select_device(args.device)
    started = time.perf_counter()
    model, modules, facts = load_trained(args.trained, device)
    plans = check_plan_keys(args.plans, surgery.num_layers(model))
    if args.threads:
        torch.set_num_threads(args.threads)
    test = trained_data(args.trained, facts).test  # the test split of its training
    # the first images: digits' split is a seeded permutation, and the others' test splits are not sorted by class
    rows = range(min(args.images, len(test)))
    images = test.images(rows)
    labels, outputs = collect(model, modules, plans, images)
    xy = embed(outputs, args.n_neighbors, args.n_epochs, args.seed)
    trained = parse_trained_name(args.name)
    frame = labels.with_columns(
        pl.lit(args.name).alias("model"), pl.lit(trained.base if trained else args.name).alias("base"),
        pl.lit(facts["settings"]["variant"]).alias("training"), pl.lit(facts["settings"]["seed"], pl.Int64).alias("train_seed"),
        pl.lit(facts["data"]).alias("data"), pl.Series("label", test.labels[: len(rows)].numpy()[labels["image"].to_numpy()]),
        pl.Series("x", xy[:, 0], dtype=pl.Float64), pl.Series("y", xy[:, 1], dtype=pl.Float64),
    ).select("model", "base", "training", "train_seed", "data", "plan", "order_seed", "image", "label", "layer", "position", "x", "y")
    results.write_atomic(frame, Path(args.out))
    print(f"{args.name}: UMAP of {len(frame)} layer outputs ({len(images)} images, {len(plans)} plans) "
          f"in {time.perf_counter() - started:.1f} s -> {args.out}", flush=True)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("umap-vision", help="UMAP of a trained vision model's layer outputs, by position")
    parser.add_argument("--trained", required=True, help="a folder written by `painters train-vision`")
    parser.add_argument("--name", required=True, help="the trained model's name (BASE.VARIANT.sSEED)")
    parser.add_argument("--plans", nargs="+", default=["shuffle_all-S0", "shuffle_all-S1", "shuffle_all-S2"], metavar="KEY",
                        help="the orders the images run in (default: three random orders)")
    parser.add_argument("--images", type=int, default=200, help="test images (the first of the test split)")
    parser.add_argument("--n-neighbors", type=int, default=15, help="UMAP's n_neighbors")
    parser.add_argument("--n-epochs", type=int, default=200, help="UMAP's n_epochs")
    parser.add_argument("--seed", type=int, default=0, help="UMAP's random_state")
    parser.add_argument("--out", required=True, help="the parquet to write")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if there is a GPU, else cpu)")
    parser.add_argument("--threads", type=int)
    parser.set_defaults(func=run_command)
