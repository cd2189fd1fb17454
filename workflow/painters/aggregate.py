"""`painters aggregate`: every score parquet -> one tidy summary table with normalized scores.

Normalization (as in the Painters paper), per model, benchmark, metric and filter:

    normalized = (value - random_baseline) / (baseline plan's value - random_baseline)

so 0 is chance (or the majority class) and 1 is the full model. It is null where a
metric has no chance level (perplexity), where lower is better, or where the
model's baseline plan has not been scored.

Each benchmark has one *primary* metric (acc_norm, else acc, else exact_match with
the strict-match filter first, else the first normalizable metric). The
"normalized median" of a plan is the median of its benchmarks' primary normalized
scores; it is added as rows with benchmark = "median" and metric = "normalized_median".

Fine-tuned (GLUE) scores carry the seed of their fine-tuning run (`train_seed`): each is
normalized by the baseline fine-tuned with the same seed, and a plan's score on a task is the
mean over its seeds before the median over tasks.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from painters.results import read_score_file, temp_beside, write_atomic

MEDIAN = "median"
PLAN_COLUMNS = ["model", "model_id", "plan", "variant", "N", "M", "K", "seed", "layer", "percent", "num_layers"]
KEY = ["model", "plan", "benchmark", "train_seed", "metric", "filter"]
# primary metric preference: (metric, filter), earlier wins
PRIMARY_ORDER = [
    ("acc_norm", "none"),
    ("acc", "none"),
    ("exact_match", "strict-match"),
    ("exact_match", "flexible-extract"),
    ("exact_match", "none"),
]


def read_scores(scores_dir: str | Path) -> pl.DataFrame:
    files = sorted(Path(scores_dir).glob("*/*/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no score files under {scores_dir} (expected {scores_dir}/MODEL/PLAN/BENCHMARK.parquet)")
    return pl.concat([_read_one(f) for f in files], how="vertical_relaxed")


def _read_one(path: Path) -> pl.DataFrame:
    try:
        return read_score_file(path)
    except Exception as error:  # polars, pyarrow and OS errors alike: name the file, not the library
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"{path} is not a readable score file ({reason}); delete it and run the workflow again "
            "to recompute that score (nothing else is redone)"
        ) from None


def primary_metrics(scores: pl.DataFrame) -> pl.DataFrame:
    """One (benchmark, metric, filter) per benchmark: the metric its normalized median uses."""
    rows = []
    for benchmark, group in scores.group_by("benchmark"):
        available = set(group.filter(pl.col("random_baseline").is_not_null()).select("metric", "filter").iter_rows())
        choice = next((pair for pair in PRIMARY_ORDER if pair in available), None)
        if choice is None:
            normalizable = group.filter(pl.col("random_baseline").is_not_null() & pl.col("higher_is_better"))
            if normalizable.is_empty():
                continue
            choice = normalizable.sort("metric", "filter").select("metric", "filter").row(0)
        rows.append({"benchmark": benchmark[0], "metric": choice[0], "filter": choice[1]})
    return pl.DataFrame(rows, schema={"benchmark": pl.String, "metric": pl.String, "filter": pl.String})


def summarize(scores: pl.DataFrame) -> pl.DataFrame:
    """The summary table: score rows with `baseline_value`, `normalized`, `primary`, `fraction`, plus median rows."""
    duplicated = scores.group_by(KEY).len().filter(pl.col("len") > 1)
    if not duplicated.is_empty():
        raise ValueError(f"scores hold the same result twice: {duplicated.select(KEY).rows()[:5]}")
    baseline = scores.filter(pl.col("plan") == "baseline").select(
        "model", "benchmark", "train_seed", "metric", "filter", pl.col("value").alias("baseline_value")
    )
    primary = primary_metrics(scores).with_columns(pl.lit(True).alias("primary"))
    denominator = pl.col("baseline_value") - pl.col("random_baseline")
    rows = (
        scores.join(baseline, on=["model", "benchmark", "train_seed", "metric", "filter"], how="left", nulls_equal=True)
        .join(primary, on=["benchmark", "metric", "filter"], how="left")
        .with_columns(
            pl.col("primary").fill_null(False),
            pl.when(pl.col("higher_is_better").fill_null(True) & (denominator.abs() > 1e-12))
            .then((pl.col("value") - pl.col("random_baseline")) / denominator)
            .otherwise(None)
            .alias("normalized"),
        )
    )
    medians = (
        rows.filter(pl.col("primary") & pl.col("normalized").is_not_null())
        .group_by(*PLAN_COLUMNS, "benchmark")  # fine-tuning seeds first (one row where there are none)
        .agg(pl.col("normalized").sort().mean(), pl.col("value").sort().mean())
        .group_by(PLAN_COLUMNS)
        .agg(
            pl.col("normalized").median().alias("normalized"),
            pl.col("value").median().alias("value"),
            pl.len().alias("n_samples"),  # here: how many benchmarks the median spans
        )
        .with_columns(
            pl.lit(MEDIAN).alias("benchmark"),
            pl.lit("normalized_median").alias("metric"),
            pl.lit("none").alias("filter"),
            pl.lit(True).alias("primary"),
        )
    )
    summary = pl.concat([rows, medians], how="diagonal_relaxed")
    fraction = (pl.col("M") / pl.col("num_layers")).alias("fraction")
    order = [*PLAN_COLUMNS, "fraction", "benchmark", "train_seed", "metric", "filter", "primary", "value", "stderr", "normalized",
             "baseline_value", "random_baseline", "higher_is_better", "n_samples", "limit", "num_fewshot", "dtype",
             "device", "seconds"]
    by = ["model", "variant", "N", "K", "seed", "layer", "plan", "benchmark", "train_seed", "metric"]
    return summary.with_columns(fraction).select(order).sort(by, nulls_last=True)


def write_csv_atomic(frame: pl.DataFrame, path: str | Path) -> None:
    import os

    tmp = temp_beside(path)
    try:
        frame.write_csv(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def run_command(args) -> int:
    summary = summarize(read_scores(args.scores))
    write_atomic(summary, args.out)
    if args.csv:
        write_csv_atomic(summary, args.csv)
    models = summary["model"].unique().to_list()
    print(f"summary: {len(summary)} rows, {summary['plan'].n_unique()} plans, models {', '.join(sorted(models))} -> {args.out}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("aggregate", help="collect all score parquets into one normalized summary table")
    parser.add_argument("--scores", required=True, help="RESULTS/scores")
    parser.add_argument("--out", required=True, help="summary parquet")
    parser.add_argument("--csv", help="the same table as CSV")
    parser.set_defaults(func=run_command)
