"""`painters figures`: the study's figures from the summary table (seaborn; PNG and SVG).

Each figure reads only the summary parquet (and, for Fig 3, the similarity matrix),
so re-plotting never touches a score. Names follow the Painters paper:

    fig02_skip_switch       per layer: skip that layer vs switch it with the next
    fig03_similarity        layer x layer cosine similarity of the baseline's hidden states
    fig04_skip ... fig09_looped_parallel
                            one variant: normalized score per benchmark and the normalized median vs M
    fig10_heatmap           looped parallel: normalized median over M x iterations K, best K per M boxed
    fig11_all_variants      every variant's normalized median vs M
    skip_fraction           skip's normalized median vs the fraction of layers skipped, one line per model
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl

VARIANT_FIGURES = {
    "fig04_skip": "skip",
    "fig05_middle_repeat": "middle_repeat",
    "fig06_reverse": "reverse",
    "fig07_random": "random",
    "fig08_parallel": "parallel",
    "fig09_looped_parallel": "looped_parallel",
}
FIGURES = ["fig02_skip_switch", "fig03_similarity", *VARIANT_FIGURES, "fig10_heatmap", "fig11_all_variants", "skip_fraction"]
MIDDLE_VARIANTS = list(VARIANT_FIGURES.values())
MEDIAN = "median"


def _require(frame: pl.DataFrame, figure: str, needs: str) -> pl.DataFrame:
    if frame.is_empty():
        raise ValueError(f"figure {figure}: the summary has no rows for it; it needs {needs}")
    return frame


def _pandas(frame: pl.DataFrame):
    return frame.to_pandas()


def per_variant(summary: pl.DataFrame, model: str, figure: str, ax) -> None:
    import seaborn as sns

    variant = VARIANT_FIGURES[figure]
    rows = _require(
        summary.filter((pl.col("model") == model) & (pl.col("variant") == variant) & pl.col("primary")),
        figure,
        f"plans of variant {variant} (and the baseline) for model {model}",
    ).filter(pl.col("normalized").is_not_null())
    benchmarks = rows.filter(pl.col("benchmark") != MEDIAN)
    if variant == "looped_parallel" and benchmarks["K"].n_unique() > 1:  # Fig 9 is one K; the heatmap has the rest
        common_k = benchmarks.group_by("K").len().sort("len", descending=True)["K"][0]
        benchmarks, rows = benchmarks.filter(pl.col("K") == common_k), rows.filter(pl.col("K") == common_k)
    errorbar = ("pi", 100) if variant == "random" else None  # random: the band spans the seeds
    sns.lineplot(data=_pandas(benchmarks), x="M", y="normalized", hue="benchmark", marker="o", errorbar=errorbar, ax=ax, alpha=0.7)
    median = rows.filter(pl.col("benchmark") == MEDIAN)
    sns.lineplot(data=_pandas(median), x="M", y="normalized", color="black", linewidth=3, marker="o", errorbar=errorbar,
                 ax=ax, label="normalized median")
    _reference_lines(ax)
    ax.set(xlabel="M (number of affected middle layers)", ylabel="normalized score (0 = chance, 1 = full model)",
           title=f"{model}: {variant.replace('_', ' ')}")


def _reference_lines(ax) -> None:
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)


def all_variants(summary: pl.DataFrame, model: str, figure: str, ax) -> None:
    import seaborn as sns

    rows = _require(
        summary.filter((pl.col("model") == model) & (pl.col("benchmark") == MEDIAN) & pl.col("variant").is_in(MIDDLE_VARIANTS)),
        figure,
        f"plans of the middle-layer variants for model {model}",
    )
    # looped parallel: the most common K (the heatmap shows the others)
    looped = rows.filter(pl.col("variant") == "looped_parallel")
    if not looped.is_empty():
        common_k = looped.group_by("K").len().sort("len", descending=True)["K"][0]
        rows = rows.filter((pl.col("variant") != "looped_parallel") | (pl.col("K") == common_k))
    sns.lineplot(data=_pandas(rows), x="M", y="normalized", hue="variant", style="variant", markers=True, dashes=False,
                 errorbar=None, ax=ax)
    _reference_lines(ax)
    ax.set(xlabel="M (number of affected middle layers)", ylabel="normalized median", title=f"{model}: all variants")


def skip_switch(summary: pl.DataFrame, model: str, figure: str, ax) -> None:
    import seaborn as sns

    rows = _require(
        summary.filter(
            (pl.col("model") == model) & pl.col("variant").is_in(["skip_layer", "switch"]) & pl.col("primary")
            & (pl.col("benchmark") != MEDIAN)
        ),
        figure,
        f"skip_layer-L* and switch-L* plans for model {model}",
    )
    sns.lineplot(data=_pandas(rows), x="layer", y="value", hue="variant", style="benchmark", marker="o", ax=ax, errorbar=None)
    for benchmark, group in summary.filter((pl.col("model") == model) & (pl.col("plan") == "baseline") & pl.col("primary")
                                           & pl.col("benchmark").is_in(rows["benchmark"].unique().to_list())).group_by("benchmark"):
        ax.axhline(group["value"][0], color="grey", linestyle="--", linewidth=1, label=f"full model ({benchmark[0]})")
        if group["random_baseline"][0] is not None:
            ax.axhline(group["random_baseline"][0], color="grey", linestyle=":", linewidth=1, label=f"chance ({benchmark[0]})")
    ax.legend(fontsize="small")
    ax.set(xlabel="layer index", ylabel="score", title=f"{model}: skip one layer vs switch it with the next")


def heatmap(summary: pl.DataFrame, model: str, figure: str, ax) -> None:
    import matplotlib.patches as patches
    import seaborn as sns

    medians = summary.filter((pl.col("model") == model) & (pl.col("benchmark") == MEDIAN))
    looped = medians.filter(pl.col("variant") == "looped_parallel")
    # parallel is looped parallel with one iteration
    parallel = medians.filter(pl.col("variant") == "parallel").with_columns(pl.lit(1).cast(pl.Int64).alias("K"))
    rows = pl.concat([parallel.filter(~pl.col("M").is_in(looped.filter(pl.col("K") == 1)["M"].implode())), looped],
                     how="vertical_relaxed")
    _require(rows.filter(pl.col("K").is_not_null()), figure, f"looped_parallel plans with several K for model {model}")
    grid = rows.group_by("M", "K").agg(pl.col("normalized").mean()).sort("M", "K")
    table = grid.to_pandas().pivot(index="M", columns="K", values="normalized").sort_index(ascending=False)
    sns.heatmap(table, ax=ax, cmap="viridis", annot=table.shape[1] <= 12, fmt=".2f", cbar_kws={"label": "normalized median"})
    for row_index, (_, values) in enumerate(table.iterrows()):
        if values.notna().any():
            best_column = list(table.columns).index(values.idxmax())
            ax.add_patch(patches.Rectangle((best_column, row_index), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set(xlabel="iterations K", ylabel="M (number of affected middle layers)",
           title=f"{model}: looped parallel (best K per M boxed)")


def similarity(similarity_frame: pl.DataFrame, model: str, figure: str, ax) -> None:
    import seaborn as sns

    rows = _require(similarity_frame.filter(pl.col("model") == model), figure, f"the similarity matrix of model {model}")
    table = rows.to_pandas().pivot(index="layer_i", columns="layer_j", values="cosine")
    sns.heatmap(table, ax=ax, cmap="magma", vmin=min(0.0, float(table.min().min())), vmax=1.0, square=True,
                cbar_kws={"label": "cosine similarity"})
    ax.invert_yaxis()
    ax.set(xlabel="layer", ylabel="layer", title=f"{model}: similarity of hidden states between layers")


def skip_fraction(summary: pl.DataFrame, figure: str, ax) -> None:
    import seaborn as sns

    rows = _require(
        summary.filter((pl.col("variant") == "skip") & (pl.col("benchmark") == MEDIAN)), figure, "skip plans of several models"
    )
    sns.lineplot(data=_pandas(rows), x="fraction", y="normalized", hue="model", marker="o", errorbar=None, ax=ax)
    _reference_lines(ax)
    ax.set(xlabel="fraction of layers skipped (M / T)", ylabel="normalized median", title="skip across model sizes")


def draw(figure: str, summary: pl.DataFrame, model: str, similarity_frame: pl.DataFrame | None = None, style: dict | None = None):
    """The matplotlib Figure for `figure` (no file is written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; valid figures: {', '.join(FIGURES)}")
    style = style or {}
    sns.set_theme(context=style.get("context", "notebook"), style="whitegrid", palette=style.get("palette", "colorblind"))
    fig, ax = plt.subplots(figsize=(8, 6) if figure in ("fig03_similarity", "fig10_heatmap") else (8, 5))
    if figure == "fig03_similarity":
        if similarity_frame is None:
            raise ValueError("figure fig03_similarity needs --similarity (the parquet of `painters similarity`)")
        similarity(similarity_frame, model, figure, ax)
    elif figure in VARIANT_FIGURES:
        per_variant(summary, model, figure, ax)
    elif figure == "fig02_skip_switch":
        skip_switch(summary, model, figure, ax)
    elif figure == "fig10_heatmap":
        heatmap(summary, model, figure, ax)
    elif figure == "fig11_all_variants":
        all_variants(summary, model, figure, ax)
    else:
        skip_fraction(summary, figure, ax)
    fig.tight_layout()
    return fig


def save_atomic(fig, png_path: str | Path, dpi: int = 150) -> tuple[Path, Path]:
    """Write PNG and SVG (same stem), each through a temporary file renamed into place."""
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    paths = (png, png.with_suffix(".svg"))
    for path in paths:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return paths


def run_command(args) -> int:
    import matplotlib.pyplot as plt

    if not Path(args.summary).is_file():
        raise FileNotFoundError(f"--summary {args.summary}: no such file (made by `painters aggregate`)")
    summary = pl.read_parquet(args.summary)
    similarity_frame = pl.read_parquet(args.similarity) if args.similarity else None
    fig = draw(args.figure, summary, args.model, similarity_frame, {"context": args.context, "palette": args.palette})
    png, svg = save_atomic(fig, args.out, dpi=args.dpi)
    plt.close(fig)
    print(f"{args.figure}: {png} {svg}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("figures", help="draw one of the study's figures from the summary table")
    parser.add_argument("--summary", required=True, help="summary parquet from `painters aggregate`")
    parser.add_argument("--similarity", help="similarity parquet (fig03_similarity)")
    parser.add_argument("--model", required=True, help="model name, or `all` for skip_fraction")
    parser.add_argument("--figure", required=True, choices=FIGURES)
    parser.add_argument("--out", required=True, help="PNG path; the SVG goes beside it")
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument("--context", default="notebook", choices=["paper", "notebook", "talk", "poster"])
    parser.add_argument("--palette", default="colorblind")
    parser.set_defaults(func=run_command)
