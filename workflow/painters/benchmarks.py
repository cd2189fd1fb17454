"""Which lm-eval benchmarks the study runs, their chance scores, and how they read local data.

The defaults are lm-eval's own tasks with the reference code's settings. On a node
without internet, `write_local_overrides` writes one task YAML per benchmark that
`include:`s lm-eval's built-in YAML and swaps only the data source for local JSON
Lines files, so prompts, processing, few-shot sampling and metrics stay lm-eval's.

Override names: the override keeps the canonical task name (`arc_easy`, ...). In
lm-eval 0.4.13 the TaskManager indexes its built-in tasks first and each
include_path after them; a later path's task replaces an earlier one of the same
name (lm-eval logs "Task 'arc_easy' from ... overrides existing task from ...").
So the override wins deterministically and results carry the name an online run
gives, with no renaming to undo. The layout of files is in docs/offline-data.md.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Benchmark:
    """A default benchmark: its few-shot count and chance score per metric (None = not normalizable)."""

    name: str
    num_fewshot: int
    random_baseline: dict[str, float | None]


# In the order the study reports them. The few-shot counts are already the
# built-in YAMLs' own (gsm8k.yaml sets num_fewshot: 5, the others default to 0).
# ARC: most items have 4 choices, a few 3 or 5; we use 0.25 for every item rather
# than a per-item 1/k mean, which differs from it by well under a point.
DEFAULT_BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("arc_challenge", 0, {"acc": 0.25, "acc_norm": 0.25}),
        Benchmark("arc_easy", 0, {"acc": 0.25, "acc_norm": 0.25}),
        Benchmark("hellaswag", 0, {"acc": 0.25, "acc_norm": 0.25}),
        Benchmark("winogrande", 0, {"acc": 0.5}),
        # perplexity has no chance level on a 0..1 scale
        Benchmark("lambada_openai", 0, {"acc": 0.0, "perplexity": None}),
        Benchmark("gsm8k", 5, {"exact_match": 0.0}),
    )
}


def random_baseline(task_name: str, metric: str, task_config_metadata: dict | None = None) -> float | None:
    """Chance (or majority-class) score of `metric` on `task_name`, or None if there is none.

    `metric` may be lm-eval's result key ("acc,none"): the filter part is ignored.
    A task YAML can declare its own under `metadata: {random_baseline: {acc: 0.5}}`
    (the demo tasks do); that wins over the table of default benchmarks.
    """
    metric = metric.split(",")[0]
    declared = (task_config_metadata or {}).get("random_baseline") or {}
    if metric in declared:
        return None if declared[metric] is None else float(declared[metric])
    if task_name in DEFAULT_BENCHMARKS:
        return DEFAULT_BENCHMARKS[task_name].random_baseline.get(metric)
    return None


@dataclass(frozen=True)
class LocalData:
    """Where a default benchmark's local files sit under DATA_DIR and what their rows hold.

    `files` maps each split the built-in task reads to a path relative to DATA_DIR.
    lm-eval reads the evaluation split and, even for 0-shot runs, the few-shot
    source split (it builds the few-shot sampler when it builds the task).
    `columns` are the hub data set's columns the task's prompts and processing
    use, with their JSON types; other hub columns may be present and are ignored.
    """

    builtin_yaml: str  # relative to the lm_eval/tasks folder
    files: dict[str, str]
    columns: dict[str, type | tuple[type, ...]]


# choices is {"text": [...], "label": [...]}; answerKey is one of the labels
_ARC_COLUMNS = {"question": str, "choices": dict, "answerKey": str}

LOCAL_DATA: dict[str, LocalData] = {
    "arc_challenge": LocalData(
        "arc/arc_challenge.yaml",
        {"train": "arc_challenge/train.jsonl", "test": "arc_challenge/test.jsonl"},
        _ARC_COLUMNS,
    ),
    "arc_easy": LocalData(
        "arc/arc_easy.yaml",
        {"train": "arc_easy/train.jsonl", "test": "arc_easy/test.jsonl"},
        _ARC_COLUMNS,
    ),
    "hellaswag": LocalData(
        "hellaswag/hellaswag.yaml",
        {"train": "hellaswag/train.jsonl", "validation": "hellaswag/validation.jsonl"},
        # the hub stores label as a string ("0".."3"); process_docs accepts an int too
        {"activity_label": str, "ctx_a": str, "ctx_b": str, "endings": list, "label": (str, int)},
    ),
    "winogrande": LocalData(
        "winogrande/default.yaml",
        {"train": "winogrande/train.jsonl", "validation": "winogrande/validation.jsonl"},
        # answer is the string "1" or "2", as on the hub (the task maps it by string key)
        {"sentence": str, "option1": str, "option2": str, "answer": str},
    ),
    "lambada_openai": LocalData(
        "lambada/lambada_openai.yaml",
        {"test": "lambada_openai/test.jsonl"},
        {"text": str},
    ),
    "gsm8k": LocalData(
        "gsm8k/gsm8k.yaml",
        {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
        # answer: worked solution ending in "#### <number>"
        {"question": str, "answer": str},
    ),
}

_GENERATED_MARK = "# Generated by painters.benchmarks"

_JSON_TYPE_NAMES = {str: "string", int: "integer", float: "number", list: "list", dict: "object", bool: "boolean"}


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(_JSON_TYPE_NAMES[t] for t in types)


def describe_schema(name: str) -> str:
    """One line naming the columns of `name`'s local rows and their JSON types."""
    return ", ".join(f"{column} ({_type_name(kind)})" for column, kind in LOCAL_DATA[name].columns.items())


def _lm_eval_tasks_dir() -> Path:
    # found without importing lm_eval.tasks (seconds): the workflow asks at DAG time
    import importlib.util

    return Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"


def generates_text(name: str, include_paths=()) -> bool:
    """Whether benchmark `name` is a generate_until task, read from its task YAML without building
    it: in `include_paths`, or the built-in YAML of a default benchmark. Other names: False.
    Used to size workflow jobs, where generate_until tasks run plan by plan (no shared pass)."""
    task_line = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.MULTILINE)
    files = [path for folder in include_paths if Path(folder).is_dir() for path in sorted(Path(folder).rglob("*.yaml"))]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if task_line.search(text):
            return re.search(r"^output_type:\s*generate_until", text, re.MULTILINE) is not None
    if name in LOCAL_DATA:
        text = (_lm_eval_tasks_dir() / LOCAL_DATA[name].builtin_yaml).read_text(encoding="utf-8")
        return re.search(r"^output_type:\s*generate_until", text, re.MULTILINE) is not None
    return False


def _check_local_file(name: str, path: Path) -> str | None:
    """What is wrong with one local data file, or None. Reads only its first row:
    enough to catch a wrong export or layout without parsing a large file twice."""
    schema = f"expected JSON Lines rows with columns: {describe_schema(name)}"
    if not path.is_file():
        return f"{name}: missing local data file {path} ({schema})"
    with path.open(encoding="utf-8") as lines:
        first_line = next((line for line in lines if line.strip()), None)
    if first_line is None:
        return f"{name}: local data file {path} has no rows ({schema})"
    try:
        row = json.loads(first_line)
    except json.JSONDecodeError as error:
        return f"{name}: first row of {path} is not JSON ({error}); {schema}"
    if not isinstance(row, dict):
        return f"{name}: first row of {path} is not a JSON object; {schema}"
    for column, kind in LOCAL_DATA[name].columns.items():
        if column not in row:
            return f"{name}: {path} lacks column {column!r} ({schema})"
        if not isinstance(row[column], kind):
            return (
                f"{name}: column {column!r} in {path} should be {_type_name(kind)}, "
                f"got {type(row[column]).__name__} {row[column]!r} ({schema})"
            )
    return None


def write_local_overrides(data_dir: str | Path, benchmarks: list[str], out_dir: str | Path) -> Path:
    """Write task YAMLs that make `benchmarks` read local files under `data_dir`.

    Only benchmarks with a LOCAL_DATA entry get an override; other names (the
    user's own tasks, which bring their own data) are left as they are. All files
    are checked before anything is written: a missing file raises
    FileNotFoundError, a malformed one ValueError, each naming the file and schema.
    `out_dir` belongs to this function: generated YAMLs from an earlier call are
    replaced. Returns `out_dir`, the include path to give lm-eval's TaskManager
    (after the user's own include paths, so these overrides win).
    """
    data_dir = Path(data_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} is not a directory (see docs/offline-data.md for its layout)")
    local = [name for name in dict.fromkeys(benchmarks) if name in LOCAL_DATA]

    missing, malformed = [], []
    for name in local:
        for relative in LOCAL_DATA[name].files.values():
            problem = _check_local_file(name, data_dir / relative)
            if problem:
                (missing if not (data_dir / relative).is_file() else malformed).append(problem)
    if missing:
        raise FileNotFoundError("\n".join(missing + malformed))
    if malformed:
        raise ValueError("\n".join(malformed))

    tasks_dir = _lm_eval_tasks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.yaml"):
        if stale.read_text(encoding="utf-8").startswith(_GENERATED_MARK):
            stale.unlink()
    for name in local:
        builtin = tasks_dir / LOCAL_DATA[name].builtin_yaml
        if not builtin.is_file():
            raise FileNotFoundError(f"lm-eval's built-in task file {builtin} for {name} is missing (lm-eval layout changed?)")
        override: dict[str, Any] = {
            "include": str(builtin),
            "task": name,
            # the packaged json builder; dataset_name is the hub config (ARC-Easy, main, ...) and must go
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {
                "data_files": {split: str(data_dir / rel) for split, rel in LOCAL_DATA[name].files.items()}
            },
            # Tags are index entries, not task behaviour. Re-declaring them here would make
            # this path's tag (e.g. `multiple_choice`: hellaswag only) replace the built-in
            # tag of the same name; without them the built-in tags stay whole and still
            # resolve to these overrides by task name.
            "tag": None,
        }
        text = f"{_GENERATED_MARK}: lm-eval's {name}, reading local files.\n" + yaml.safe_dump(override, sort_keys=False)
        (out_dir / f"{name}.yaml").write_text(text, encoding="utf-8")
    return out_dir


def check_benchmarks(names: list[str], task_manager) -> None:
    """Raise ValueError unless every name is a task, group or tag `task_manager` knows."""
    if not names:
        raise ValueError(f"no benchmarks given; the defaults are: {', '.join(DEFAULT_BENCHMARKS)}")
    known = set(task_manager.all_tasks)
    unknown = [name for name in names if name not in known]
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=5)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        lines.append(f"unknown benchmark {name!r}{hint}")
    if len(known) <= 50:
        lines.append(f"valid benchmarks: {', '.join(sorted(known))}")
    else:
        lines.append(
            f"the default benchmarks are: {', '.join(DEFAULT_BENCHMARKS)}; list all {len(known)} with "
            "`lm-eval ls tasks` (add `--include_path DIR` for your own task YAMLs)"
        )
    raise ValueError("\n".join(lines))


def run_check(args) -> int:
    """`painters check-benchmarks`: the workflow's check, once before any evaluation job, that
    every configured benchmark exists (and has its local files under --data-dir)."""
    import os
    import tempfile

    from lm_eval.tasks import TaskManager

    from painters.results import temp_beside

    for path in args.include_path:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"include_paths: {path} is not a directory of lm-eval task YAMLs")
    check_benchmarks(args.benchmarks, TaskManager(include_path=list(args.include_path) or None))
    if args.data_dir:
        with tempfile.TemporaryDirectory() as scratch:  # raises naming each missing or malformed file
            write_local_overrides(args.data_dir, [b for b in args.benchmarks if b in LOCAL_DATA], scratch)
    tmp = temp_beside(args.out)
    tmp.write_text("".join(f"{name}\n" for name in args.benchmarks))
    os.replace(tmp, args.out)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-benchmarks", help="check that lm-eval knows every benchmark (the workflow runs it first)"
    )
    parser.add_argument("--benchmarks", nargs="+", required=True, metavar="NAME")
    parser.add_argument("--include-path", action="append", default=[], metavar="DIR")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", required=True, help="file written when every benchmark is known")
    parser.set_defaults(func=run_check)
