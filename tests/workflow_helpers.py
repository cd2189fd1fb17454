"""Running the real workflow (Snakefile at the repository root) in a scratch folder."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"

# A few-shot task over the demo's data (the study's gsm8k is 5-shot), in the include path
# FEWSHOT_TASKS of REDUCED. write_config puts it beside every config it writes.
FEWSHOT_TASK = "demo_choice_2shot"
FEWSHOT_TASKS = "fewshot_tasks"

# A 4-layer demo model trained for a few steps: the point is the workflow, not the scores.
REDUCED = {
    "demo": {"enabled": True, "seed": 0, "n_test": 20, "n_train": 300, "layers": 4, "steps": 20},
    "models": {
        "demo": {
            "path": "results/demo/model",
            "dtype": "float32",
            "device": "cpu",
            "batch_size": 32,
            "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 10, "cpus_per_task": 1},
        }
    },
    "benchmarks": ["demo_choice", "demo_cloze"],
    "include_paths": ["results/demo/data/tasks", FEWSHOT_TASKS],
    "limit": 8,
    "evaluation": {"max_gen_toks": 8, "passes_per_job": 2},  # two jobs per benchmark
    "sweeps": [
        {"name": "variants", "variants": ["skip", "random"], "N": [0], "seeds": [0]},
        {"name": "looped", "variants": ["looped_parallel"], "N": [0], "K": [2]},
    ],
    "similarity": {"texts": "results/demo/data/similarity.txt"},
    "figures": {"dpi": 60},
}


# The encoder half, reduced: the real MiniLM-L6 (6 layers) fine-tuned on the demo's generated
# sentiment task for two steps per plan.
ENCODER_RUN = {
    "demo": {"enabled": True, "seed": 0},
    "models": {"minilm": {"path": "{minilm_l6}", "dtype": "float32", "device": "cpu",
                          "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 10, "cpus_per_task": 1}}},
    "glue": {"tasks": ["demo_sentiment"], "custom_tasks": {"demo_sentiment": "sst2"}, "data_dir": "{results}/demo/glue",
             "seeds": [0], "epochs": 1, "learning_rate": 3.0e-4, "batch_size": 16, "max_seq_length": 16,
             "max_train_samples": 32, "max_eval_samples": 40, "plans_per_job": 2},
    "sweeps": [{"variants": ["skip"], "N": [0, 1]}],
    "similarity": {"texts": None},
    "figures": {"dpi": 60},
}


def changed(update, config: dict = REDUCED) -> dict:
    """A deep copy of `config` with `update(copy)` applied."""
    config = copy.deepcopy(config)
    update(config)
    return config



def write_config(folder: Path, config: dict, name: str = "config.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    tasks = Path(folder) / FEWSHOT_TASKS
    tasks.mkdir(exist_ok=True)
    task = {"include": "../results/demo/data/tasks/demo_choice.yaml", "task": FEWSHOT_TASK,
            "num_fewshot": 2, "fewshot_split": "test"}
    (tasks / f"{FEWSHOT_TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return path


def with_fewshot_task(config: dict) -> None:
    """Add the few-shot demo task to `config`'s benchmarks (for `changed`)."""
    config["benchmarks"].append(FEWSHOT_TASK)


def offline_environment(**extra: str) -> dict[str, str]:
    """This process's environment, with the hubs off (and `extra` added)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """`snakemake ARGS` on the repository's Snakefile, with `workdir` as the working directory (run it from REPO)."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]


def snakemake(workdir: Path, *args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `snakemake_command(workdir, *args)` offline and wait for it."""
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=offline_environment(**(env or {})))


def score_mtimes(workdir: Path) -> dict[Path, int]:
    """Every score file under WORKDIR/results/scores with its modification time (ns)."""
    return {p: p.stat().st_mtime_ns for p in (Path(workdir) / "results/scores").rglob("*.parquet")}


def planned_scores(result: subprocess.CompletedProcess) -> set[str]:
    """The score files a dry run's evaluation jobs will write (their outputs)."""
    text = result.stdout + result.stderr
    outputs = re.findall(r"^\s*output: (.*)$", text, flags=re.MULTILINE)
    return {path for line in outputs for path in line.split(", ") if "/scores/" in path}


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}, every evaluation job's rule counted
    as "evaluate", every image evaluation job's as "evaluate_images" and every fine-tuning job's as
    "finetune" (one rule per job); {} when there is nothing to do."""
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        stages = ("evaluate_images", "evaluate", "finetune")
        rule = next((stage for stage in stages if match.group(1).startswith(f"{stage}_")), match.group(1))
        counts[rule] = counts.get(rule, 0) + int(match.group(2))
    counts.pop("total", None)
    return counts
