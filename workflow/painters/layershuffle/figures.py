"""The LayerShuffle figures, from the summary table (drawn by `painters figures`, like the others).

    layershuffle_order     test accuracy of each training variant with its layers in order and in
                           random orders (the paper's main comparison): the mean over training seeds
                           (and order seeds), a bar from the lowest to the highest
    layershuffle_pruning   test accuracy against the number of layers pruned, the rest kept in order
                           or shuffled, one line per training variant (LayerDrop included)

The `model` of these figures is a base model (`vit-digits`); its trained models are the summary's
models named BASE.VARIANT.sSEED (painters.layershuffle.study).
"""

from __future__ import annotations

import polars as pl

from painters import figures as core
from painters import plan as plans_module
from painters.layershuffle.study import parse_trained_name
from painters.layershuffle.training import VARIANTS

def _trained_scores(summary: pl.DataFrame, base: str, figure: str) -> pl.DataFrame:
    """Accuracy rows of `base`'s trained models, with their training variant and seed."""
    trained = {name: parse_trained_name(name) for name in summary["model"].unique().to_list()}
    names = [name for name, parsed in trained.items() if parsed is not None and parsed.base == base]
    rows = summary.filter(pl.col("model").is_in(names) & (pl.col("metric") == "acc") & (pl.col("benchmark") != core.MEDIAN))
    rows = core._require(rows, figure, f"scores of models trained from {base} (BASE.VARIANT.sSEED)")
    return rows.with_columns(
        pl.col("model").replace_strict({n: trained[n].variant for n in names}).alias("training"),
        pl.col("model").replace_strict({n: trained[n].seed for n in names}, return_dtype=pl.Int64).alias("train_seed"),
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


def table(figure: str, summary: pl.DataFrame, base: str) -> pl.DataFrame:
    return order_table(summary, base, figure) if figure == "layershuffle_order" else pruning_table(summary, base, figure)


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


def draw_pruning(plotted: pl.DataFrame, base: str, figure: str, ax) -> None:
    import seaborn as sns

    colors = dict(zip(VARIANTS, sns.color_palette(n_colors=len(VARIANTS))))  # a color per training variant
    for name, points in core._series(plotted):
        core._line(ax, points, name, marker="o", color=colors[points["variant"][0]],
                   linestyle="--" if name.endswith("shuffled") else "-")
    core._ticks_at(ax, plotted, "{:.0f}")
    ax.legend(fontsize="x-small", ncol=2)
    ax.set(xlabel="layers pruned", ylabel="test accuracy (band: seeds)", ylim=(0, 1.02),
           title=f"{base}: pruned, the rest in order (solid) or shuffled (dashed)")


DRAW = {"layershuffle_order": draw_order, "layershuffle_pruning": draw_pruning}
