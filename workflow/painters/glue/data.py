"""A GLUE task's rows: from local files, or from the local Hugging Face cache of `nyu-mll/glue`.

Local files (nodes without internet, the demo's generated tasks): `DATA_DIR/TASK/SPLIT.EXT`
with EXT one of jsonl, csv, tsv, parquet and SPLIT `train` and the task's validation split
(`validation`; `validation_matched` for MNLI), holding the task's text columns and `label`
as in `nyu-mll/glue` (docs/offline-data.md). Without a data folder, `datasets` loads
`nyu-mll/glue` (offline, from its cache, where HF_DATASETS_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from painters.glue.tasks import GlueTask

HUB_DATASET = "nyu-mll/glue"
FILE_TYPES = ("jsonl", "csv", "tsv", "parquet")


def split_file(data_dir: str | Path, task: GlueTask, split: str) -> Path:
    """The local file of `split`; a clear error naming what was looked for when there is none."""
    folder = Path(data_dir) / task.name
    found = [folder / f"{split}.{kind}" for kind in FILE_TYPES if (folder / f"{split}.{kind}").is_file()]
    if not found:
        raise FileNotFoundError(
            f"GLUE task {task.name}: no {split} split in {folder} (expected {split}.jsonl, .csv, .tsv or .parquet "
            f"with columns {', '.join(task.text_columns)}, label; see docs/offline-data.md)"
        )
    return found[0]


def read_rows(path: Path) -> list[dict]:
    import polars as pl

    readers = {
        ".jsonl": lambda: pl.read_ndjson(path),
        # text stays text (a sentence "7" is not a number); labels are converted where used
        ".csv": lambda: pl.read_csv(path, infer_schema=False),
        ".tsv": lambda: pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False),
        ".parquet": lambda: pl.read_parquet(path),
    }
    return readers[path.suffix]().to_dicts()


def load_from_hub_cache(hub_dataset: str, config: str | None, split: str, what: str, instead: str):
    """`datasets.load_dataset(hub_dataset, config, split=split)`: from the local Hugging Face cache where
    offline. When it is not there, a clear error: `what` was looked for, how to download it, or `instead`."""
    import datasets

    try:
        return datasets.load_dataset(hub_dataset, config, split=split)
    except Exception as error:
        call = ", ".join(repr(part) for part in (hub_dataset, config) if part is not None)
        raise FileNotFoundError(
            f"{what}: {hub_dataset} ({split}) is not in the local Hugging Face cache and cannot be downloaded here "
            f"({type(error).__name__}); download it where there is internet "
            f"(python -c \"import datasets; datasets.load_dataset({call})\") or {instead}"
        ) from None


def load_split(task: GlueTask, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """The rows of one split: the task's text columns (strings) and `label` (a class id, or a float for STS-B)."""
    if data_dir is not None:
        path = split_file(data_dir, task, split)
        rows = read_rows(path)
        where = str(path)
    else:
        rows = load_from_hub_cache(HUB_DATASET, task.name, split, f"GLUE task {task.name}",
                                   "give local files (glue.data_dir, docs/offline-data.md)").to_list()
        where = f"{HUB_DATASET}/{task.name}"
    missing = [c for c in (*task.text_columns, "label") if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"GLUE task {task.name}, split {split} ({where}): "
                         + (f"no column(s) {', '.join(missing)}" if rows else "no rows"))
    # only what the task reads, typed alike whatever the file type (so is the data's fingerprint)
    label_type = float if task.is_regression else int
    try:
        return [{**{c: str(row[c]) for c in task.text_columns}, "label": label_type(row["label"])} for row in rows]
    except (TypeError, ValueError):
        bad = next(row["label"] for row in rows if not _converts(label_type, row["label"]))
        raise ValueError(f"GLUE task {task.name}, split {split} ({where}): label {bad!r} is not "
                         f"{'a number' if task.is_regression else 'a class id'}") from None


def _converts(kind, value) -> bool:
    try:
        kind(value)
        return True
    except (TypeError, ValueError):
        return False


def fingerprint(*splits: list[dict]) -> str:
    """A short hash of the rows a score saw (its `prompt_hash`): equal hashes, equal data."""
    digest = hashlib.sha256()
    for rows in splits:
        for row in rows:
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
