"""`painters cost-table`: the cost model's estimates beside what the finished jobs took, for the report.

Estimated: per (model, benchmark), the GPU-hours of all its lm-eval scores on the `cost.device`
profile (painters.workflow_plan.cost_estimates, handed over as JSON). Measured: the wall time that
each finished score records (`seconds`: one plan's evaluate(); a shared pass's work is counted in
the first plan the job scored) times the model's GPUs.
"""

from __future__ import annotations

import json
import sys

import polars as pl


def table(summary: pl.DataFrame, estimates: list[dict], device: str) -> pl.DataFrame:
    """One row per (model, benchmark) of `estimates`: plans, finished scores, estimated and measured GPU-hours."""
    scored = (
        summary.filter(pl.col("train_seed").is_null() & pl.col("seconds").is_not_null() & (pl.col("benchmark") != "normalized_median"))
        .unique(["model", "plan", "benchmark"])
        .group_by(["model", "benchmark"])
        .agg(pl.len().alias("finished"), (pl.col("seconds").sum() / 3600).alias("measured_hours"))
    )
    frame = pl.DataFrame(estimates, schema={"model": pl.String, "benchmark": pl.String, "gpus": pl.Int64, "plans": pl.Int64,
                                            "jobs": pl.Int64, "estimated_gpu_hours": pl.Float64})
    joined = frame.join(scored, on=["model", "benchmark"], how="left").with_columns(
        pl.col("finished").fill_null(0),
        (pl.col("measured_hours") * pl.col("gpus")).alias("measured_gpu_hours"),
        pl.lit(device).alias("device"),
    )
    return joined.select(["model", "benchmark", "device", "plans", "finished", "jobs", "estimated_gpu_hours",
                          "measured_gpu_hours"]).sort(["model", "benchmark"])


def run(args) -> int:
    from painters.aggregate import write_csv_atomic

    estimates = json.loads(args.estimates)
    frame = table(pl.read_parquet(args.summary), estimates, args.device)
    write_csv_atomic(frame, args.out)
    print(frame)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("cost-table", help="the cost model's estimates beside what finished jobs took (report)")
    parser.add_argument("--summary", required=True, help="the summary parquet (painters aggregate)")
    parser.add_argument("--estimates", required=True, help="JSON rows of painters.workflow_plan.cost_estimates")
    parser.add_argument("--device", required=True, help="the cost.device profile's name")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.set_defaults(func=run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(__import__("painters.cli").cli.main(["cost-table", *sys.argv[1:]]))
