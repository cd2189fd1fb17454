"""`painters figures`: the study's figures from the summary table (PNG and SVG, and the plotted table as CSV).

Each figure reads only the summary parquet (and, for Fig 3, the similarity matrix; for
layershuffle_umap, the UMAP points of `painters umap-vision`),
so re-plotting never touches a score. Names follow the Painters paper:

    fig02_skip_switch       per layer: skip that layer vs switch it with the next (raw score +- stderr)
    fig03_similarity        layer x layer cosine similarity of the baseline's hidden states
    fig04_skip ... fig09_looped_parallel
                            one variant: normalized score per benchmark (+- stderr) and the normalized median vs M
    fig10_heatmap           looped parallel: normalized median over M x iterations K, best K per M boxed
    fig11_all_variants      every variant's normalized median vs M
    skip_fraction           skip's normalized median vs the fraction of layers skipped, one line per model
    whole_stack             LayerShuffle's plans: normalized median vs the share of layers pruned,
                            layers kept in order (baseline, prune) or shuffled (shuffle_all, shuffle_prune)
    decoder_encoder         Fig 11 of each model side by side, decoders (lm-eval) left, encoders (GLUE) right,
                            as the paper puts Llama 2 and BERT
    layershuffle_order, layershuffle_pruning, layershuffle_merging, layershuffle_layers, layershuffle_umap
                            the LayerShuffle study's (painters.layershuffle.figures)

Every figure is drawn from one table (`table()`), written beside the PNG as FIGURE.csv,
so tests and captions read what was plotted rather than pixels. Rules the table follows:

- A median is always taken over the benchmarks that *every* plotted plan has (per figure),
  so no two points of a figure are medians over different benchmark sets.
- Plans that differ only in their seed are one point: the mean over seeds, with a band
  from the lowest to the highest seed.
- A fine-tuned (GLUE) score is the mean over its fine-tuning seeds (`train_seed`), its
  stderr the spread of that mean where there are several.
- Looped parallel in Figs 9 and 11 is drawn at one K (`line_K`), the same in both.
- Rows are sorted, so the same summary gives the same table and the same PNG bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from painters.results import temp_beside

VARIANT_FIGURES = {
    "fig04_skip": "skip",
    "fig05_middle_repeat": "middle_repeat",
    "fig06_reverse": "reverse",
    "fig07_random": "random",
    "fig08_parallel": "parallel",
    "fig09_looped_parallel": "looped_parallel",
}
# drawn by painters.layershuffle.figures (imported when asked for: it builds on this module)
LAYERSHUFFLE_FIGURES = ("layershuffle_order", "layershuffle_pruning", "layershuffle_merging", "layershuffle_layers",
                        "layershuffle_umap")
FIGURES = ["fig02_skip_switch", "fig03_similarity", *VARIANT_FIGURES, "fig10_heatmap", "fig11_all_variants", "skip_fraction",
           "whole_stack", "decoder_encoder", *LAYERSHUFFLE_FIGURES]
MIDDLE_VARIANTS = list(VARIANT_FIGURES.values())
STACK_VARIANTS = ["shuffle_all", "prune", "shuffle_prune"]
MEDIAN = "median"
# keys of a plan's row in the summary (seed included: seeds are folded together later)
PLAN_KEYS = ["model", "plan", "variant", "M", "K", "seed", "layer", "percent", "num_layers", "fraction"]
# the plotted table: one row per drawn point
TABLE_SCHEMA = {
    "figure": pl.String,
    "model": pl.String,
    "series": pl.String,  # the legend entry (for fig10: the column K)
    "variant": pl.String,
    "benchmark": pl.String,  # a benchmark, or "median"
    "benchmarks": pl.String,  # ";"-joined benchmarks the point spans
    "seeds": pl.String,  # ";"-joined seeds the point averages ("" for unseeded plans)
    "K": pl.Int64,
    "x": pl.Float64,  # M, the layer (fig02), the fraction (skip_fraction) or the share pruned (whole_stack)
    "y": pl.Float64,
    "y_low": pl.Float64,  # band over seeds
    "y_high": pl.Float64,
    "stderr": pl.Float64,  # standard error of y, scaled like y (normalized where y is)
    "best": pl.Boolean,  # fig10: the best K of its M
}
M_LABEL = "M (number of affected middle layers)"


def _label(variant: str) -> str:
    return variant.replace("_", " ")


def _require(frame: pl.DataFrame, figure: str, needs: str) -> pl.DataFrame:
    if frame.is_empty():
        raise ValueError(f"figure {figure}: the summary has no rows for it; it needs {needs}")
    return frame


def _scores(summary: pl.DataFrame, condition: pl.Expr, figure: str, needs: str, normalized: bool = True) -> pl.DataFrame:
    """Per-benchmark primary scores of the plans a figure plots; `stderr_normalized` is the
    standard error scaled like the normalized score."""
    rows = summary.filter(condition & pl.col("primary") & (pl.col("benchmark") != MEDIAN))
    rows = fold_train_seeds(rows.filter(pl.col("normalized" if normalized else "value").is_not_null()))
    scale = (pl.col("baseline_value") - pl.col("random_baseline")).abs()
    return _require(rows, figure, needs).with_columns((pl.col("stderr") / scale).alias("stderr_normalized"))


def fold_train_seeds(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per (plan, benchmark, metric): fine-tuned scores averaged over their fine-tuning seeds,
    with the standard error of that mean where there are several seeds (rows without seeds pass)."""
    if "train_seed" not in rows.columns or rows["train_seed"].null_count() == len(rows):
        return rows
    keys = [c for c in rows.columns if c not in ("train_seed", "value", "normalized", "baseline_value", "stderr",
                                                 "n_samples", "seconds")]
    spread = pl.col("value").std() / pl.len().sqrt()
    return rows.group_by(keys, maintain_order=True).agg(
        pl.col("value").sort().mean(), pl.col("normalized").sort().mean(), pl.col("baseline_value").sort().mean(),
        pl.when(pl.len() > 1).then(spread).otherwise(pl.col("stderr").first()).alias("stderr"),
        pl.col("n_samples").sum(), pl.col("seconds").sum(),
    ).select([c for c in rows.columns if c != "train_seed"])


def common_benchmarks(rows: pl.DataFrame, figure: str) -> list[str]:
    """The benchmarks every plan in `rows` has: a median over any other set would compare unlike quantities."""
    sets = [set(b) for b in rows.group_by("model", "plan").agg(pl.col("benchmark"))["benchmark"].to_list()]
    common = set.intersection(*sets)
    if not common:
        raise ValueError(f"figure {figure}: no benchmark is scored for every plotted plan "
                         f"(between them they have {', '.join(sorted(set.union(*sets)))})")
    return sorted(common)


def _medians(rows: pl.DataFrame, benchmarks: list[str]) -> pl.DataFrame:
    """One row per plan: the median of its normalized scores over `benchmarks`."""
    return (
        rows.filter(pl.col("benchmark").is_in(benchmarks))
        .group_by(PLAN_KEYS)
        .agg(pl.col("normalized").median().alias("y"))
        .with_columns(pl.lit(MEDIAN).alias("benchmark"), pl.lit(";".join(benchmarks)).alias("benchmarks"),
                      pl.lit(None, pl.Float64).alias("stderr"))
    )


def _per_benchmark(rows: pl.DataFrame, value: str = "normalized", stderr: str = "stderr_normalized") -> pl.DataFrame:
    return rows.select(*PLAN_KEYS, "benchmark", pl.col("benchmark").alias("benchmarks"), pl.col(value).alias("y"),
                       pl.col(stderr).alias("stderr"))


def _over_seeds(points: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Plans that differ only in their seed as one point: the mean over seeds, a band from the lowest to
    the highest, and the standard error of that mean (null if any seed's is missing)."""
    # values sorted before summing: float sums depend on order, and group order is not fixed
    stderr = pl.when(pl.col("stderr").null_count() == 0).then(pl.col("stderr").pow(2).sort().sum().sqrt() / pl.len())
    return points.group_by(keys).agg(
        pl.col("y").sort().mean(),
        pl.col("y").min().alias("y_low"),
        pl.col("y").max().alias("y_high"),
        stderr.alias("stderr"),
        pl.col("seed").drop_nulls().unique().sort().cast(pl.String).str.join(";").alias("seeds"),
    )


def _finish(points: pl.DataFrame, figure: str) -> pl.DataFrame:
    """The plotted table: every TABLE_SCHEMA column, in a fixed row order."""
    points = points.with_columns(pl.lit(figure).alias("figure"))
    columns = [pl.col(c).cast(t) if c in points.columns else pl.lit(None, t).alias(c) for c, t in TABLE_SCHEMA.items()]
    table = points.select(columns)
    return table.sort("series", "x", "K", "benchmark", "variant", "seeds", nulls_last=True, maintain_order=True)


def line_K(summary: pl.DataFrame, model: str, K: int | None = None, figure: str = "fig11_all_variants") -> int | None:
    """The one K of looped parallel that Figs 9 and 11 draw (Fig 10 shows every K).

    `K` when given (the workflow passes the first K of the first sweep that runs looped parallel);
    otherwise the K with the most scores (plans x benchmarks), the smallest K on a tie.
    None when the model has no looped-parallel scores.
    """
    looped = summary.filter((pl.col("model") == model) & (pl.col("variant") == "looped_parallel") & pl.col("primary")
                            & (pl.col("benchmark") != MEDIAN) & pl.col("normalized").is_not_null())
    if looped.is_empty():
        return None
    available = sorted(looped["K"].unique().to_list())
    if K is not None:
        if K not in available:
            raise ValueError(f"figure {figure}: K={K} was asked for, but the looped_parallel plans of model {model} "
                             f"have K {', '.join(map(str, available))}")
        return K
    counts = looped.group_by("K").len().sort(["len", "K"], descending=[True, False])
    return int(counts["K"][0])


# ---- tables: what each figure plots


def per_variant_table(summary: pl.DataFrame, model: str, figure: str, K: int | None = None) -> pl.DataFrame:
    variant = VARIANT_FIGURES[figure]
    rows = _scores(summary, (pl.col("model") == model) & (pl.col("variant") == variant), figure,
                   f"plans of variant {variant} (and the baseline) for model {model}")
    if variant == "looped_parallel":  # one K; the heatmap has the rest
        rows = rows.filter(pl.col("K") == line_K(summary, model, K, figure))
    benchmarks = common_benchmarks(rows, figure)
    rows = rows.filter(pl.col("benchmark").is_in(benchmarks))
    points = pl.concat([
        _per_benchmark(rows).with_columns(pl.col("benchmark").alias("series")),
        _medians(rows, benchmarks).with_columns(pl.lit("normalized median").alias("series")),
    ], how="diagonal_relaxed")
    points = _over_seeds(points, ["model", "variant", "series", "benchmark", "benchmarks", "M", "K"])
    return _finish(points.with_columns(pl.col("M").alias("x")), figure)


def all_variants_table(summary: pl.DataFrame, model: str, figure: str, K: int | None = None) -> pl.DataFrame:
    rows = _scores(summary, (pl.col("model") == model) & pl.col("variant").is_in(MIDDLE_VARIANTS), figure,
                   f"plans of the middle-layer variants for model {model}")
    k = line_K(summary, model, K, figure)
    rows = rows.filter((pl.col("variant") != "looped_parallel") | (pl.col("K") == k))
    benchmarks = common_benchmarks(rows, figure)
    points = _over_seeds(_medians(rows, benchmarks), ["model", "variant", "benchmark", "benchmarks", "M", "K"])
    series = pl.when(pl.col("variant") == "looped_parallel").then(pl.format("looped parallel (K={})", pl.col("K")))
    series = series.otherwise(pl.col("variant").str.replace_all("_", " "))
    return _finish(points.with_columns(series.alias("series"), pl.col("M").alias("x")), figure)


def side_by_side_models(summary: pl.DataFrame, figure: str) -> list[str]:
    """The models with middle-layer variants, decoders first, then encoders (fine-tuned: a train_seed)."""
    middle = summary.filter(pl.col("variant").is_in(MIDDLE_VARIANTS) & (pl.col("benchmark") != MEDIAN))
    encoders = set(middle.filter(pl.col("train_seed").is_not_null())["model"].to_list())
    models = sorted(set(middle["model"].to_list()), key=lambda m: (m in encoders, m))
    if not encoders or len(encoders) == len(models):
        raise ValueError(f"figure {figure}: it needs middle-layer variants of a decoder and of an encoder model; "
                         f"the summary has them for {', '.join(models) or 'no model'} (encoders: {', '.join(sorted(encoders)) or 'none'})")
    return models


def decoder_encoder_table(summary: pl.DataFrame, figure: str) -> pl.DataFrame:
    """Fig 11's table of each model, in side_by_side_models order (each model its own K)."""
    return pl.concat([all_variants_table(summary, model, figure) for model in side_by_side_models(summary, figure)])


def skip_switch_table(summary: pl.DataFrame, model: str, figure: str) -> pl.DataFrame:
    rows = _scores(summary, (pl.col("model") == model) & pl.col("variant").is_in(["skip_layer", "switch"]), figure,
                   f"skip_layer-L* and switch-L* plans for model {model}", normalized=False)
    benchmarks = common_benchmarks(rows, figure)
    rows = rows.filter(pl.col("benchmark").is_in(benchmarks))
    names = {"skip_layer": "skip layer", "switch": "switch with next"}
    points = _per_benchmark(rows, value="value", stderr="stderr").with_columns(
        pl.format("{} ({})", pl.col("variant").replace_strict(names), pl.col("benchmark")).alias("series"),
        pl.col("layer").alias("x"), pl.col("y").alias("y_low"), pl.col("y").alias("y_high"), pl.lit("").alias("seeds"))
    # reference levels, drawn as horizontal lines (no x): the full model and chance
    baseline = summary.filter((pl.col("model") == model) & (pl.col("plan") == "baseline") & pl.col("primary")
                              & pl.col("benchmark").is_in(benchmarks))
    references = [baseline.select("model", "variant", "benchmark", pl.col("value").alias("y"),
                                  pl.format("full model ({})", pl.col("benchmark")).alias("series")),
                  baseline.filter(pl.col("random_baseline").is_not_null()).select(
                      "model", "variant", "benchmark", pl.col("random_baseline").alias("y"),
                      pl.format("chance ({})", pl.col("benchmark")).alias("series"))]
    references = pl.concat(references).with_columns(pl.col("benchmark").alias("benchmarks"), pl.lit("").alias("seeds"))
    return _finish(pl.concat([points, references], how="diagonal_relaxed"), figure)


def heatmap_table(summary: pl.DataFrame, model: str, figure: str) -> pl.DataFrame:
    rows = _scores(summary, (pl.col("model") == model) & pl.col("variant").is_in(["looped_parallel", "parallel"]), figure,
                   f"looped_parallel plans with several K for model {model}")
    # parallel is looped parallel with one iteration; a scored looped K=1 plan of the same M wins
    looped_k1 = rows.filter((pl.col("variant") == "looped_parallel") & (pl.col("K") == 1))["M"].unique().to_list()
    rows = rows.filter((pl.col("variant") == "looped_parallel") | ~pl.col("M").is_in(looped_k1))
    rows = rows.with_columns(pl.col("K").fill_null(1))
    _require(rows.filter(pl.col("variant") == "looped_parallel"), figure, f"looped_parallel plans with several K for model {model}")
    benchmarks = common_benchmarks(rows, figure)
    points = _medians(rows, benchmarks)
    # best K per M: the highest median, the smallest K on a tie
    best = points.sort(["M", "y", "K"], descending=[False, True, False]).group_by("M", maintain_order=True).first()
    points = points.join(best.select("M", pl.col("K").alias("best_K")), on="M").with_columns(
        (pl.col("K") == pl.col("best_K")).alias("best"), pl.col("M").alias("x"), pl.format("K={}", pl.col("K")).alias("series"),
        pl.col("y").alias("y_low"), pl.col("y").alias("y_high"), pl.lit("").alias("seeds"))
    return _finish(points, figure)


def skip_fraction_table(summary: pl.DataFrame, figure: str) -> pl.DataFrame:
    # the lm-eval (decoder) models: encoders are scored on other benchmarks, so no median spans both
    rows = _scores(summary, (pl.col("variant") == "skip") & pl.col("train_seed").is_null(), figure,
                   "skip plans of several decoder models")
    benchmarks = common_benchmarks(rows, figure)
    points = _over_seeds(_medians(rows, benchmarks), ["model", "variant", "benchmark", "benchmarks", "fraction"])
    return _finish(points.with_columns(pl.col("model").alias("series"), pl.col("fraction").alias("x")), figure)


def _pruned_share(plan_key: str, num_layers: int) -> float:
    from painters import plan

    return 1 - len(plan.parse(plan_key).schedule(num_layers)) / num_layers


def whole_stack_table(summary: pl.DataFrame, model: str, figure: str) -> pl.DataFrame:
    condition = (pl.col("model") == model) & pl.col("variant").is_in(STACK_VARIANTS)
    _scores(summary, condition, figure, f"shuffle_all, prune or shuffle_prune plans for model {model}")
    rows = _scores(summary, (pl.col("model") == model) & pl.col("variant").is_in(["baseline", *STACK_VARIANTS]), figure, "")
    benchmarks = common_benchmarks(rows, figure)
    points = _medians(rows, benchmarks)
    plans = points.select("plan", "num_layers").unique()
    shares = plans.with_columns(pl.Series("x", [_pruned_share(*key) for key in plans.iter_rows()], dtype=pl.Float64))
    points = points.join(shares, on=["plan", "num_layers"]).with_columns(
        pl.when(pl.col("variant").is_in(["shuffle_all", "shuffle_prune"])).then(pl.lit("layers shuffled"))
        .otherwise(pl.lit("layers in order")).alias("series"),
    )
    # variant stays a key: in order at share 0 is the baseline, shuffled at share 0 is shuffle_all
    points = _over_seeds(points, ["model", "series", "variant", "benchmark", "benchmarks", "x"])
    return _finish(points, figure)


def similarity_table(similarity_frame: pl.DataFrame, model: str, figure: str) -> pl.DataFrame:
    rows = _require(similarity_frame.filter(pl.col("model") == model), figure, f"the similarity matrix of model {model}")
    return rows.select("model", "layer_i", "layer_j", "cosine").sort("layer_i", "layer_j")


def table(figure: str, summary: pl.DataFrame, model: str, similarity_frame: pl.DataFrame | None = None,
          K: int | None = None, umap_frame: pl.DataFrame | None = None) -> pl.DataFrame:
    """The table `figure` plots (one row per drawn point; fig03: the similarity matrix)."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; valid figures: {', '.join(FIGURES)}")
    if figure == "fig03_similarity":
        if similarity_frame is None:
            raise ValueError("figure fig03_similarity needs --similarity (the parquet of `painters similarity`)")
        return similarity_table(similarity_frame, model, figure)
    if figure in VARIANT_FIGURES:
        return per_variant_table(summary, model, figure, K)
    if figure == "fig11_all_variants":
        return all_variants_table(summary, model, figure, K)
    if figure == "fig02_skip_switch":
        return skip_switch_table(summary, model, figure)
    if figure == "fig10_heatmap":
        return heatmap_table(summary, model, figure)
    if figure == "whole_stack":
        return whole_stack_table(summary, model, figure)
    if figure == "decoder_encoder":
        return decoder_encoder_table(summary, figure)
    if figure in LAYERSHUFFLE_FIGURES:
        from painters.layershuffle import figures as layershuffle_figures

        return layershuffle_figures.table(figure, summary, model, umap_frame)
    return skip_fraction_table(summary, figure)


def table_facts(plotted: pl.DataFrame) -> dict:
    """What a caption says about a plotted table: the benchmarks, seeds and K values it holds."""

    def joined(column):
        if column not in plotted.columns:
            return set()
        return {part for cell in plotted[column].cast(pl.String).drop_nulls().to_list() for part in cell.split(";") if part}

    ks = plotted["K"].drop_nulls().to_list() if "K" in plotted.columns else []
    return {"benchmarks": sorted(joined("benchmarks")), "seeds": sorted(int(s) for s in joined("seeds")),
            "K": sorted({int(k) for k in ks})}


class PlottedFacts:
    """A figure's facts (`table_facts`), read from the table beside its PNG when first asked for.

    The workflow hands one to each caption: the table exists only after the figure job ran,
    and an object (not a plain value) is left out of Snakemake's params rerun trigger.
    """

    def __init__(self, table_path):
        self.table_path = str(table_path)

    def __getattr__(self, name):
        facts = table_facts(pl.read_csv(self.table_path, infer_schema_length=None)) if not name.startswith("_") else {}
        if name not in facts:
            raise AttributeError(name)
        return facts[name]

    def __repr__(self):
        return f"PlottedFacts({self.table_path!r})"


# ---- drawing: each figure from its table only


def _series(plotted: pl.DataFrame, last: str | None = None) -> list[tuple[str, pl.DataFrame]]:
    """(name, points sorted by x) per series; `last` is drawn last (on top, last in the legend)."""
    names = sorted(plotted["series"].unique().to_list(), key=lambda s: (s == last, s))
    return [(name, plotted.filter(pl.col("series") == name).sort("x")) for name in names]


def _line(ax, points: pl.DataFrame, label: str, **style) -> None:
    """A line with +-1 stderr error bars where the table has them, and the band over seeds where it is wide."""
    x, y = points["x"].to_numpy(), points["y"].to_numpy()
    stderr = points["stderr"]
    yerr = stderr.fill_null(float("nan")).to_numpy() if stderr.drop_nulls().len() else None
    low, high = points["y_low"].to_numpy(), points["y_high"].to_numpy()
    wide = bool((high - low > 1e-12).any())
    if wide and len(x) == 1 and yerr is None:  # a band needs two points: show the seeds' range as a bar
        yerr = [y - low, high - y]
    drawn = ax.errorbar(x, y, yerr=yerr, label=label, capsize=3 if yerr is not None else 0, **style)
    if wide and len(x) > 1:
        ax.fill_between(x, low, high, color=drawn[0].get_color(), alpha=0.15, linewidth=0)


def _ticks_at(ax, plotted: pl.DataFrame, fmt: str = "{:g}") -> None:
    """x ticks exactly at the x values present (odd M, the layers, the shares)."""
    xs = sorted(plotted["x"].drop_nulls().unique().to_list())
    ax.set_xticks(xs, [fmt.format(x) for x in xs])


def _reference_lines(ax) -> None:
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)


def _k_text(plotted: pl.DataFrame) -> str:
    ks = table_facts(plotted)["K"]
    return f", K={ks[0]}" if len(ks) == 1 else ""


def draw_per_variant(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    n = len(table_facts(plotted)["benchmarks"])
    for name, points in _series(plotted, last="normalized median"):
        if name == "normalized median":
            _line(ax, points, f"normalized median ({n} benchmarks{_k_text(plotted)})", color="black", linewidth=3, marker="o")
        else:
            _line(ax, points, name, marker="o", alpha=0.7)
    _reference_lines(ax)
    _ticks_at(ax, plotted)
    ax.legend(fontsize="small")
    ax.set(xlabel=M_LABEL, ylabel="normalized score (0 = chance, 1 = full model)",
           title=f"{model}: {_label(VARIANT_FIGURES[figure])}{_k_text(plotted)}")


def draw_all_variants(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    markers = "osD^vP*X"
    for index, (name, points) in enumerate(_series(plotted)):
        _line(ax, points, name, marker=markers[index % len(markers)])
    _reference_lines(ax)
    _ticks_at(ax, plotted)
    ax.legend(fontsize="small")
    n = len(table_facts(plotted)["benchmarks"])
    ax.set(xlabel=M_LABEL, ylabel=f"normalized median ({n} benchmarks)", title=f"{model}: all variants")


def draw_skip_switch(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    lines = plotted.filter(pl.col("x").is_not_null())
    for name, points in _series(lines):
        _line(ax, points, name, marker="o")
    for row in plotted.filter(pl.col("x").is_null()).sort("series").iter_rows(named=True):
        ax.axhline(row["y"], color="grey", linewidth=1, linestyle="--" if row["series"].startswith("full") else ":",
                   label=row["series"])
    _ticks_at(ax, lines, "{:.0f}")
    ax.legend(fontsize="small")  # plain labels: no seaborn pseudo-headings
    ax.set(xlabel="layer index", ylabel="score (+- stderr)", title=f"{model}: skip one layer vs switch it with the next")


def draw_heatmap(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    import seaborn as sns
    from matplotlib import patches

    grid = plotted.to_pandas().pivot(index="x", columns="K", values="y").sort_index(ascending=False)
    grid.index = [int(m) for m in grid.index]
    grid.index.name = None
    sns.heatmap(grid, ax=ax, cmap="viridis", annot=grid.shape[1] <= 12, fmt=".2f", cbar_kws={"label": "normalized median"})
    rows, columns = list(grid.index), list(grid.columns)
    for point in plotted.filter(pl.col("best")).iter_rows(named=True):
        ax.add_patch(patches.Rectangle((columns.index(point["K"]), rows.index(int(point["x"]))), 1, 1, fill=False,
                                       edgecolor="red", linewidth=2))
    n = len(table_facts(plotted)["benchmarks"])
    ax.set(xlabel="iterations K", ylabel=M_LABEL, title=f"{model}: looped parallel, median of {n} benchmarks (best K per M boxed)")


def draw_skip_fraction(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    for name, points in _series(plotted):
        _line(ax, points, name, marker="o")
    _reference_lines(ax)
    ax.legend(fontsize="small")
    ax.set(xlabel="fraction of layers skipped (M / T)", ylabel="normalized median", title="skip across model sizes")


def draw_whole_stack(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    for name, points in _series(plotted):
        _line(ax, points, name, marker="o")
    _reference_lines(ax)
    _ticks_at(ax, plotted, "{:.0%}")
    ax.legend(fontsize="small")
    n = len(table_facts(plotted)["benchmarks"])
    ax.set(xlabel="share of layers pruned (dropped / T)", ylabel=f"normalized median ({n} benchmarks)",
           title=f"{model}: whole stack (band: seeds)")


def draw_similarity(plotted: pl.DataFrame, model: str, figure: str, ax) -> None:
    import seaborn as sns

    grid = plotted.to_pandas().pivot(index="layer_i", columns="layer_j", values="cosine")
    sns.heatmap(grid, ax=ax, cmap="magma", vmin=min(0.0, float(grid.min().min())), vmax=1.0, square=True,
                cbar_kws={"label": "cosine similarity"})
    ax.invert_yaxis()
    ax.set(xlabel="layer", ylabel="layer", title=f"{model}: similarity of hidden states between layers")


DRAW = {"fig02_skip_switch": draw_skip_switch, "fig03_similarity": draw_similarity, "fig10_heatmap": draw_heatmap,
        "fig11_all_variants": draw_all_variants, "skip_fraction": draw_skip_fraction, "whole_stack": draw_whole_stack,
        **{figure: draw_per_variant for figure in VARIANT_FIGURES}}


def render(figure: str, summary: pl.DataFrame, model: str, similarity_frame: pl.DataFrame | None = None,
           style: dict | None = None, K: int | None = None, umap_frame: pl.DataFrame | None = None):
    """(the matplotlib Figure, the table it plots); no file is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    plotted = table(figure, summary, model, similarity_frame, K, umap_frame)
    style = style or {}
    sns.set_theme(context=style.get("context", "notebook"), style="whitegrid", palette=style.get("palette", "colorblind"))
    matplotlib.rcParams["svg.hashsalt"] = "painters"  # fixed SVG element ids: same input, same file
    if figure == "decoder_encoder":  # one panel per model, in the table's order
        panels = list(dict.fromkeys(plotted["model"].to_list()))
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
        for name, ax in zip(panels, axes[0]):
            draw_all_variants(plotted.filter(pl.col("model") == name), name, figure, ax)
        fig.tight_layout()
        return fig, plotted
    if figure == "layershuffle_umap":  # one panel per training variant
        from painters.layershuffle import figures as layershuffle_figures

        return layershuffle_figures.draw_umap(plotted, model), plotted
    fig, ax = plt.subplots(figsize=(8, 6) if figure in ("fig03_similarity", "fig10_heatmap") else (8, 5))
    if figure in LAYERSHUFFLE_FIGURES:
        from painters.layershuffle import figures as layershuffle_figures

        layershuffle_figures.DRAW[figure](plotted, model, figure, ax)
    else:
        DRAW[figure](plotted, model, figure, ax)
    fig.tight_layout()
    return fig, plotted


def draw(figure: str, summary: pl.DataFrame, model: str, similarity_frame: pl.DataFrame | None = None,
         style: dict | None = None, K: int | None = None, umap_frame: pl.DataFrame | None = None):
    """The matplotlib Figure for `figure` (no file is written)."""
    return render(figure, summary, model, similarity_frame, style, K, umap_frame)[0]


def save_atomic(fig, png_path: str | Path, dpi: int = 150) -> tuple[Path, Path]:
    """Write PNG and SVG (same stem), each through a temporary file renamed into place."""
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    paths = (png, png.with_suffix(".svg"))
    for path in paths:
        tmp = temp_beside(path)
        try:
            # no date in the SVG, so an unchanged figure gives an unchanged file
            metadata = {"Date": None} if path.suffix == ".svg" else None
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return paths


def run_command(args) -> int:
    import matplotlib.pyplot as plt

    from painters.aggregate import write_csv_atomic

    if not Path(args.summary).is_file():
        raise FileNotFoundError(f"--summary {args.summary}: no such file (made by `painters aggregate`)")
    summary = pl.read_parquet(args.summary)
    similarity_frame = pl.read_parquet(args.similarity) if args.similarity else None
    umap_frame = pl.concat([pl.read_parquet(path) for path in args.umap]) if args.umap else None
    fig, plotted = render(args.figure, summary, args.model, similarity_frame, {"context": args.context, "palette": args.palette},
                          K=args.k, umap_frame=umap_frame)
    png, svg = save_atomic(fig, args.out, dpi=args.dpi)
    plt.close(fig)
    csv = png.with_suffix(".csv")
    write_csv_atomic(plotted, csv)
    facts = table_facts(plotted)
    print(f"{args.figure}: {png} {svg} {csv}; benchmarks {', '.join(facts['benchmarks']) or 'none'}; "
          f"seeds {', '.join(map(str, facts['seeds'])) or 'none'}; K {', '.join(map(str, facts['K'])) or 'none'}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("figures", help="draw one of the study's figures from the summary table")
    parser.add_argument("--summary", required=True, help="summary parquet from `painters aggregate`")
    parser.add_argument("--similarity", help="similarity parquet (fig03_similarity)")
    parser.add_argument("--umap", nargs="+", metavar="FILE", help="UMAP parquets of `painters umap-vision` (layershuffle_umap)")
    parser.add_argument("--model", required=True, help="model name, or `all` for skip_fraction and decoder_encoder")
    parser.add_argument("--figure", required=True, choices=FIGURES)
    parser.add_argument("--out", required=True, help="PNG path; the SVG and the plotted table (CSV) go beside it")
    parser.add_argument("--k", type=int, help="the K of looped parallel drawn in fig09 and fig11 (default: the K with "
                        "the most scores, the smallest on a tie)")
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument("--context", default="notebook", choices=["paper", "notebook", "talk", "poster"])
    parser.add_argument("--palette", default="colorblind")
    parser.set_defaults(func=run_command)
