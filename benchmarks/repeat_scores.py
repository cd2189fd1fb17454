"""Do repeated identical runs give identical few-shot scores? Prints each run's scores side by side.

Builds a tiny 8-layer Llama and a 3-shot multiple-choice task (lm-eval's arc_easy, 3-shot, on
made-up local rows), then runs `painters evaluate --plans baseline skip-N1` REPEATS times in fresh
processes with identical arguments, and once more with the plans in the other order.

    python benchmarks/repeat_scores.py [--repeats 3] [--limit 150]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

from offline_data import ROW_MAKERS, write_data_dir, write_fewshot_task  # noqa: E402

from painters.tiny import save_tiny_causal_lm  # noqa: E402

PLANS = ["baseline", "skip-N1"]


def world(root: Path, rows: int) -> tuple[Path, Path, Path]:
    import offline_data

    offline_data.ROWS = rows  # enough rows for --limit documents
    data_dir = write_data_dir(root / "data")
    texts = [json.dumps(ROW_MAKERS[name](random.Random(1), i)) for name in ROW_MAKERS for i in range(50)]
    model_dir = save_tiny_causal_lm(root / "model", arch="llama", seed=0, texts=texts, layers=8)
    tasks = write_fewshot_task(root / "tasks", data_dir)
    return model_dir, data_dir, tasks


def run(model_dir, data_dir, tasks, out: Path, plans: list[str], limit: int) -> dict[str, float]:
    command = [sys.executable, "-m", "painters", "evaluate", "--model", str(model_dir), "--name", "tiny",
               "--out", str(out), "--limit", str(limit), "--data-dir", str(data_dir), "--include-path", str(tasks),
               "--dtype", "float32", "--device", "cpu", "--benchmarks", "arc_easy_3shot", "--plans", *plans]
    subprocess.run(command, check=True, capture_output=True)
    scores = {}
    for plan in PLANS:
        frame = pl.read_parquet(out / "scores/tiny" / plan / "arc_easy_3shot.parquet")
        scores[plan] = frame.filter(pl.col("metric") == "acc")["value"][0]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model_dir, data_dir, tasks = world(root, rows=args.limit + 10)
        runs = [(f"run {i + 1}", run(model_dir, data_dir, tasks, root / f"run{i}", PLANS, args.limit))
                for i in range(args.repeats)]
        runs.append(("reversed order", run(model_dir, data_dir, tasks, root / "reversed", PLANS[::-1], args.limit)))
    print(f"arc_easy 3-shot acc, tiny 8-layer Llama, --limit {args.limit}, fresh process per run")
    print(f"{'':>16} " + " ".join(f"{plan:>10}" for plan in PLANS) + "   skip-N1 - baseline")
    for name, scores in runs:
        print(f"{name:>16} " + " ".join(f"{scores[p]:>10.3f}" for p in PLANS) + f"   {scores['skip-N1'] - scores['baseline']:+.3f}")
    distinct = {plan: len({scores[plan] for _, scores in runs}) for plan in PLANS}
    print("distinct values per plan over all runs:", distinct, "(1 = reproducible)")


if __name__ == "__main__":
    main()
