"""How many cluster jobs a config becomes: a dry run through the Slurm profile.

Runs `snakemake -n --profile slurm --configfile CONFIG` in an empty scratch folder (nothing is
submitted) and prints the scores planned, the evaluation jobs they are grouped into (each one
sbatch job and one model load), the largest job, and how long planning took. Before grouping
every score was its own job: as many sbatch jobs and model loads as scores.

    python benchmarks/paper_jobs.py [--configfile config/paper.yaml]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/paper.yaml")
    args = parser.parse_args()
    configfile = Path(args.configfile).resolve()
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "--snakefile", str(REPO / "Snakefile"),
                   "--directory", scratch, "--configfile", str(configfile)]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "PAINTERS_SLURM_PARTITION": "gpu"})
        seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(output[-3000:])
    jobs = re.findall(r"^rule (evaluate_\S+):\n(?:.*\n)*?\s*output: (.*)$", output, flags=re.MULTILINE)
    sizes = [len(outputs.split(", ")) for _, outputs in jobs]
    print(f"config: {configfile.relative_to(REPO) if configfile.is_relative_to(REPO) else configfile}")
    print(f"scores planned:                     {sum(sizes):>6,}")
    print(f"before: sbatch jobs = model loads:  {sum(sizes):>6,}  (one per score)")
    print(f"after:  sbatch jobs = model loads:  {len(jobs):>6,}  (largest: {max(sizes)} scores)")
    print(f"dry run (planning):                 {seconds:>6.1f} s")


if __name__ == "__main__":
    main()
