"""Many plans in one `painters evaluate` process against one fresh process per plan.

Setup (built locally in a scratch folder, nothing from a hub): the demo tasks
(`painters demo-data`, N_DOCS documents each, three tasks) and a small Llama with
the demo tokenizer (`painters demo-model`, a few training steps: the scores do not
matter here, only the time).

  (a) one process:     painters evaluate --plans P1 ... P8 --benchmarks T1 T2 T3
  (b) fresh processes: 8 x painters evaluate --plans Pi --benchmarks T1 T2 T3
      (how the reference code is used: one configuration per run, which loads the
      model and builds the lm-eval tasks anew each time)

Prints both wall times and the ratio (b) / (a). Target: >= 8.

    python benchmarks/eval_loop.py [--docs 200] [--layers 12] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLANS = [
    "baseline",
    "skip-N2",
    "middle_repeat-N2",
    "reverse-N2",
    "random-N2-S0",
    "parallel-N2",
    "looped_parallel-N2-K3",
    "skip_layer-L5",
]
TASKS = ["demo_choice", "demo_pair", "demo_cloze"]


def painters(*args: str) -> float:
    """Run `painters ARGS` in a fresh interpreter; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "painters", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200, help="documents per task (default 200)")
    parser.add_argument("--layers", type=int, default=12, help="depth of the model (default 12)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--keep", help="build the setup in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    work = Path(args.keep or tempfile.mkdtemp(prefix="painters-eval-loop-"))
    try:
        data, model = work / "data", work / "model"
        if not model.is_dir():
            painters("demo-data", "--out", str(data), "--n-test", str(args.docs), "--n-train", "2000")
            painters("demo-model", "--data", str(data), "--out", str(model), "--steps", "5", "--layers", str(args.layers))
        common = ["evaluate", "--model", str(model), "--benchmarks", *TASKS, "--include-path", str(data / "tasks"),
                  "--dtype", "float32", "--device", "cpu", "--batch-size", str(args.batch_size), "--max-gen-toks", "16"]

        one = painters(*common, "--plans", *PLANS, "--out", str(work / "one"))
        fresh = sum(painters(*common, "--plans", plan, "--out", str(work / "fresh")) for plan in PLANS)

        n_scores = len(list((work / "one").rglob("*.parquet")))
        assert n_scores == len(PLANS) * len(TASKS), f"expected {len(PLANS) * len(TASKS)} score files, found {n_scores}"
        print(f"setup: {args.layers}-layer demo model, {len(TASKS)} tasks x {args.docs} documents, {len(PLANS)} plans")
        print(f"(a) one process, {len(PLANS)} plans:  {one:7.1f} s")
        print(f"(b) {len(PLANS)} fresh processes:     {fresh:7.1f} s")
        print(f"ratio (b)/(a): {fresh / one:.2f}  (target >= 8)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
