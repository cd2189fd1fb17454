"""The LayerShuffle figures, from the summary table (drawn by `painters figures`, like the others).

    layershuffle_order     test accuracy of each training variant with its layers in order and in
                           random orders (the paper's main comparison): the mean over training seeds
                           (and order seeds), a bar from the lowest to the highest
    layershuffle_pruning   test accuracy against the number of layers pruned, the rest kept in order
                           or shuffled, one line per training variant (LayerDrop included)
    layershuffle_merging   single trained models vs models merged from them vs their ensemble, in
                           order and in random orders, per merged variant (the paper's section 4)
    layershuffle_layers    Painters' Fig 2 in a ViT: test accuracy with one layer skipped (solid) or
                           switched with the next (dashed), one line per training variant
    layershuffle_umap      UMAP of the layer outputs of each training variant run in random orders,
                           colored by the position each layer ran at (from `painters umap-vision`'s
                           points, not the summary; the paper's section 4)

The `model` of these figures is a base model (`vit-digits`); its trained models are the summary's
models named BASE.VARIANT.sSEED, its merged models BASE.VARIANT.mI and its ensembles
BASE.VARIANT.ensemble (painters.layershuffle.study).
"""

from __future__ import annotations

import polars as pl

from painters import figures as core
from painters import plan as plans_module
from painters.layershuffle.study import parse_combined_name, parse_trained_name
from painters.layershuffle.training import VARIANTS

KINDS = ("single", "merged", "ensemble")  # layershuffle_merging's series, in drawing order


def _study_models(summary: pl.DataFrame, base: str) -> dict[str, tuple[str, str, int]]:
    """{model name: (training variant, kind, index)} of `base`'s models in the summary: kind `single`
    (a trained model; index its seed), `merged` (index the merge) or `ensemble` (index 0)."""
    found = {}
    for name in summary["model"].unique().to_list():
        trained, combined = parse_trained_name(name), parse_combined_name(name)
        if trained is not None and trained.base == base:
            found[name] = (trained.variant, "single", trained.seed)
        elif combined is not None and combined.base == base:
            found[name] = (combined.variant, "ensemble", 0) if combined.merge is None else (combined.variant, "merged", combined.merge)
    return found


def _trained_scores(summary: pl.DataFrame, base: str, figure: str, kinds=("single",)) -> pl.DataFrame:
    """Accuracy rows of `base`'s models of `kinds`, with their training variant, kind and `train_seed`
    (a trained model's seed, a merge's index)."""
    models = {name: facts for name, facts in _study_models(summary, base).items() if facts[1] in kinds}
    rows = summary.filter(pl.col("model").is_in(list(models)) & (pl.col("metric") == "acc") & (pl.col("benchmark") != core.MEDIAN))
    rows = core._require(rows, figure, f"scores of models trained from {base} (BASE.VARIANT.sSEED)"
                         + (", merged (BASE.VARIANT.mI) and ensembled (BASE.VARIANT.ensemble)" if "merged" in kinds else ""))
    return rows.with_columns(
        pl.col("model").replace_strict({n: f[0] for n, f in models.items()}).alias("training"),
        pl.col("model").replace_strict({n: f[1] for n, f in models.items()}).alias("kind"),
        pl.col("model").replace_strict({n: f[2] for n, f in models.items()}, return_dtype=pl.Int64).alias("train_seed"),
        pl.struct("plan", "num_layers").map_elements(
            lambda r: r["num_layers"] - len(plans_module.parse(r["plan"]).schedule(r["num_layers"])),
            return_dtype=pl.Int64).alias("pruned"),
    )


def _points(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Mean accuracy per `keys`: first over the plan seeds of each trained model, then over its training
    seeds; the band spans every value."""
    per_model = rows.group_by(*keys, "train_seed").agg(pl.col("value").sort().mean().alias("y"),
                                                       pl.col("value").min().alias("low"), pl.col("value").max().alias("high"))
    return per_model.group_by(keys).agg(
        pl.col("y").sort().mean(), pl.col("low").min().alias("y_low"), pl.col("high").max().alias("y_high"),
        pl.col("train_seed").unique().sort().cast(pl.String).str.join(";").alias("seeds"))


def order_table(summary: pl.DataFrame, base: str, figure: str) -> pl.DataFrame:
    rows = _trained_scores(summary, base, figure)
    rows = rows.filter(pl.col("variant").is_in(["baseline", "shuffle_all"])).with_columns(
        pl.when(pl.col("variant") == "baseline").then(pl.lit("layers in order")).otherwise(pl.lit("random order")).alias("series"))
    points = _points(rows, ["training", "series"])
    order = {variant: index for index, variant in enumerate(VARIANTS)}
    points = points.with_columns(pl.col("training").replace_strict(order, return_dtype=pl.Float64).alias("x"),
                                 pl.col("training").alias("variant"), pl.lit(base).alias("model"),
                                 pl.lit(rows["benchmark"][0]).alias("benchmark"), pl.lit(rows["benchmark"][0]).alias("benchmarks"))
    return core._finish(points, figure)


def pruning_table(summary: pl.DataFrame, base: str, figure: str) -> pl.DataFrame:
    rows = _trained_scores(summary, base, figure)
    rows = rows.filter(pl.col("variant").is_in(["baseline", "shuffle_all", "prune", "shuffle_prune"])).with_columns(
        pl.when(pl.col("variant").is_in(["shuffle_all", "shuffle_prune"])).then(pl.lit("shuffled")).otherwise(pl.lit("in order"))
        .alias("order"))
    points = _points(rows, ["training", "order", "pruned"])
    points = points.with_columns(pl.format("{}, {}", pl.col("training").str.replace_all("_", " "), pl.col("order")).alias("series"),
                                 pl.col("pruned").cast(pl.Float64).alias("x"), pl.col("training").alias("variant"),
                                 pl.lit(base).alias("model"), pl.lit(rows["benchmark"][0]).alias("benchmark"),
                                 pl.lit(rows["benchmark"][0]).alias("benchmarks"))
    return core._finish(points, figure)


def merging_table(summary: pl.DataFrame, base: str, figure: str) -> pl.DataFrame:
    """Per merged variant, in order and in random order: the single trained models (mean over seeds),
    the merged models (mean over merges) and the ensemble; bands span the models (and orders)."""
    rows = _trained_scores(summary, base, figure, kinds=KINDS)
    merged_variants = rows.filter(pl.col("kind") == "merged")["training"].unique().to_list()
    rows = core._require(rows.filter(pl.col("training").is_in(merged_variants)), figure,
                         f"scores of merged models of {base} (BASE.VARIANT.mI)")
    rows = rows.filter(pl.col("variant").is_in(["baseline", "shuffle_all"])).with_columns(
        pl.when(pl.col("variant") == "baseline").then(pl.lit("in order")).otherwise(pl.lit("random order")).alias("order"))
    points = _points(rows, ["training", "order", "kind"])
    order = {variant: index for index, variant in enumerate(VARIANTS)}
    points = points.with_columns(
        (pl.col("training").replace_strict(order, return_dtype=pl.Float64) * 2 + (pl.col("order") == "random order")).alias("x"),
        pl.col("kind").alias("series"), pl.col("training").alias("variant"), pl.lit(base).alias("model"),
        pl.lit(rows["benchmark"][0]).alias("benchmark"), pl.lit(rows["benchmark"][0]).alias("benchmarks"))
    return core._finish(points, figure)


def layers_table(summary: pl.DataFrame, base: str, figure: str) -> pl.DataFrame:
    rows = _trained_scores(summary, base, figure).filter(pl.col("variant").is_in(["skip_layer", "switch"]))
    rows = core._require(rows, figure, f"skip_layer-L* or switch-L* scores of {base}'s trained models (layershuffle.evaluation.plans)")
    points = _points(rows, ["training", "variant", "layer"]).rename({"variant": "plan_variant"})
    points = points.with_columns(pl.format("{}, {}", pl.col("training").str.replace_all("_", " "), pl.col("plan_variant").str.replace("_", " "))
                                 .alias("series"), pl.col("layer").cast(pl.Float64).alias("x"), pl.col("training").alias("variant"),
                                 pl.lit(base).alias("model"), pl.lit(rows["benchmark"][0]).alias("benchmark"),
                                 pl.lit(rows["benchmark"][0]).alias("benchmarks"))
    return core._finish(points, figure)


TABLES = {"layershuffle_order": order_table, "layershuffle_pruning": pruning_table, "layershuffle_merging": merging_table,
          "layershuffle_layers": layers_table}


def table(figure: str, summary: pl.DataFrame, base: str, umap_frame: pl.DataFrame | None = None) -> pl.DataFrame:
    if figure == "layershuffle_umap":  # from the UMAP points, not the summary
        if umap_frame is None:
            raise ValueError("figure layershuffle_umap needs --umap (the parquets of `painters umap-vision`)")
        return umap_table(umap_frame, base, figure)
    return TABLES[figure](summary, base, figure)


def draw_order(plotted: pl.DataFrame, base: str, figure: str, ax) -> None:
    present = sorted(set(plotted["variant"].to_list()), key=VARIANTS.index)
    for offset, (name, points) in zip((-0.1, 0.1), core._series(plotted)):
        points = points.sort("x")
        ax.errorbar(points["x"].to_numpy() + offset, points["y"].to_numpy(), label=name, marker="o", linestyle="none",
                    capsize=3, yerr=[points["y"].to_numpy() - points["y_low"].to_numpy(),
                                     points["y_high"].to_numpy() - points["y"].to_numpy()])
    ax.set_xticks([VARIANTS.index(v) for v in present], [v.replace("_", " ") for v in present], rotation=15)
    ax.legend(fontsize="small")
    ax.set(xlabel="training variant", ylabel="test accuracy (bar: seeds)", ylim=(0, 1.02),
           title=f"{base}: layers in order vs in random order")


def _training_lines(plotted: pl.DataFrame, ax, dashed: str, xlabel: str, title: str) -> None:
    """One line per series, colored by its training variant, dashed where the series name ends in `dashed`."""
    import seaborn as sns

    colors = dict(zip(VARIANTS, sns.color_palette(n_colors=len(VARIANTS))))  # a color per training variant
    for name, points in core._series(plotted):
        core._line(ax, points, name, marker="o", color=colors[points["variant"][0]],
                   linestyle="--" if name.endswith(dashed) else "-")
    core._ticks_at(ax, plotted, "{:.0f}")
    ax.legend(fontsize="x-small", ncol=2)
    ax.set(xlabel=xlabel, ylabel="test accuracy (band: seeds)", ylim=(0, 1.02), title=title)


def draw_pruning(plotted: pl.DataFrame, base: str, figure: str, ax) -> None:
    _training_lines(plotted, ax, "shuffled", "layers pruned", f"{base}: pruned, the rest in order (solid) or shuffled (dashed)")


def draw_merging(plotted: pl.DataFrame, base: str, figure: str, ax) -> None:
    for offset, kind in zip((-0.2, 0.0, 0.2), KINDS):
        points = plotted.filter(pl.col("series") == kind).sort("x")
        if points.is_empty():
            continue
        y = points["y"].to_numpy()
        ax.errorbar(points["x"].to_numpy() + offset, y, label=kind, marker="o", linestyle="none", capsize=3,
                    yerr=[y - points["y_low"].to_numpy(), points["y_high"].to_numpy() - y])
    xs = sorted(set(plotted["x"].to_list()))
    labels = [f"{VARIANTS[int(x) // 2].replace('_', ' ')}\n{'random order' if int(x) % 2 else 'in order'}" for x in xs]
    ax.set_xticks(xs, labels, fontsize="small")
    ax.legend(fontsize="small")
    ax.set(xlabel="training variant, layer order", ylabel="test accuracy (bar: models, orders)", ylim=(0, 1.02),
           title=f"{base}: single models, merged models, ensemble")


def draw_layers(plotted: pl.DataFrame, base: str, figure: str, ax) -> None:
    _training_lines(plotted, ax, "switch", "layer", f"{base}: one layer skipped (solid) or switched with the next (dashed)")


DRAW = {"layershuffle_order": draw_order, "layershuffle_pruning": draw_pruning, "layershuffle_merging": draw_merging,
        "layershuffle_layers": draw_layers}


# ---- layershuffle_umap: from the UMAP points of `painters umap-vision`, not from the summary


def umap_table(points: pl.DataFrame, base: str, figure: str) -> pl.DataFrame:
    """The UMAP points of `base`'s trained models, one row per point, each with the share of its
    nearest points (in its own model's embedding) that ran at the same position (`same_position`) and
    that are the same layer (`same_layer`)."""
    from painters.layershuffle.layer_umap import same_share

    rows = core._require(points.filter(pl.col("base") == base), figure,
                         f"UMAP points of models trained from {base} (painters umap-vision, layershuffle.umap)")
    per_model = [group.sort("plan", "position", "image").pipe(lambda g: g.with_columns(same_share(g, "position"), same_share(g, "layer")))
                 for _, group in rows.group_by("model")]
    table = pl.concat(per_model).with_columns(
        pl.lit(figure).alias("figure"), pl.col("base").alias("model"), pl.col("data").alias("benchmarks"),
        pl.col("train_seed").cast(pl.String).alias("seeds"),
        pl.col("training").replace_strict({v: i for i, v in enumerate(VARIANTS)}, return_dtype=pl.Int64).alias("variant_index"))
    return table.sort("variant_index", "train_seed", "plan", "position", "image").select(
        "figure", "model", "training", "train_seed", "plan", "order_seed", "image", "label", "layer", "position", "x", "y",
        "same_position", "same_layer", "benchmarks", "seeds")


def draw_umap(plotted: pl.DataFrame, base: str):
    """One panel per training variant (a row per training seed), points colored by position."""
    import matplotlib.pyplot as plt

    from painters.layershuffle.layer_umap import NEIGHBOURS

    variants = list(dict.fromkeys(plotted["training"].to_list()))  # the table's order: VARIANTS'
    seeds = sorted(set(plotted["train_seed"].to_list()))
    depth = int(plotted["position"].max()) + 1
    colors = plt.get_cmap("viridis", depth)  # sequential, one color per position
    fig, axes = plt.subplots(len(seeds), len(variants), figsize=(3.6 * len(variants) + 1, 3.6 * len(seeds)), squeeze=False,
                             layout="constrained")
    for row, seed in enumerate(seeds):
        for column, variant in enumerate(variants):
            ax = axes[row][column]
            points = plotted.filter((pl.col("training") == variant) & (pl.col("train_seed") == seed))
            drawn = ax.scatter(points["x"].to_numpy(), points["y"].to_numpy(), c=points["position"].to_numpy(), cmap=colors,
                               vmin=-0.5, vmax=depth - 0.5, s=4, alpha=0.7, linewidths=0,
                               rasterized=True)  # thousands of points: an image in the SVG, not a path each
            ax.set(xticks=[], yticks=[], title=f"{variant.replace('_', ' ')}" + (f", seed {seed}" if len(seeds) > 1 else "")
                   + f"\nsame position among {NEIGHBOURS} nearest: {points['same_position'].mean():.2f}")
    fig.colorbar(drawn, ax=axes.ravel().tolist(), ticks=range(depth), label="position (where the layer ran)")
    fig.suptitle(f"{base}: UMAP of layer outputs in random orders\n(same position by chance: about {1 / depth:.2f})")
    return fig
