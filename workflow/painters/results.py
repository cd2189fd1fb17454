"""Where scores live and how they are written: one parquet per (model, plan, benchmark).

Layout:  {results}/scores/{model}/{plan}/{benchmark}.parquet           lm-eval benchmarks (decoders)
         {results}/scores/{model}/{plan}/{task}.seed{train_seed}.parquet   GLUE tasks (encoders, fine-tuned with a seed)

`model` is the user's short name for a model (a config key such as `llama2-7b`,
or a slug of the path/id for ad-hoc runs), `plan` a plan key (`skip-N2`),
`benchmark` an lm-eval task name. Each file holds long-format rows, one per
(metric, filter), with the columns in SCORE_COLUMNS.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from painters import cost
from painters.plan import parse as parse_plan

# column -> polars dtype; every score parquet has exactly these columns, in this order
SCORE_COLUMNS: dict[str, pl.DataType] = {
    "model": pl.String,  # short name (path component)
    "model_id": pl.String,  # HF id or path that was loaded
    "plan": pl.String,  # plan key, e.g. "skip-N2"
    "variant": pl.String,
    "N": pl.Int64,
    "M": pl.Int64,  # affected layers; null for whole-stack and per-layer plans
    "K": pl.Int64,
    "seed": pl.Int64,
    "layer": pl.Int64,
    "percent": pl.Int64,
    "num_layers": pl.Int64,
    "benchmark": pl.String,  # lm-eval task name, or GLUE task
    "train_seed": pl.Int64,  # seed of the fine-tuning run (GLUE); null for lm-eval scores
    "metric": pl.String,  # e.g. acc, acc_norm, perplexity, exact_match
    "filter": pl.String,  # lm-eval filter name, e.g. "none", "strict-match"
    "value": pl.Float64,
    "stderr": pl.Float64,
    "higher_is_better": pl.Boolean,
    "random_baseline": pl.Float64,  # chance / majority score of this metric; null = not normalizable
    "n_samples": pl.Int64,
    "limit": pl.Float64,  # null = full benchmark
    "num_fewshot": pl.Int64,
    "fewshot_seed": pl.Int64,  # seed of lm-eval's few-shot sampler (matters where num_fewshot > 0)
    "prompt_hash": pl.String,  # fingerprint of every request lm-eval built: equal hashes, equal prompts
    "generation_kwargs": pl.String,  # JSON of a generate_until task's settings; null otherwise
    "settings": pl.String,  # JSON of the settings asked for that no other column records (dtype, max_gen_toks)
    "batch_size": pl.String,  # as given ("16"); on GPUs in bf16 scores move slightly with it
    "batch_size_used": pl.Int64,  # the batch size that ran (what "auto" found)
    "bootstrap_iters": pl.Int64,
    "dtype": pl.String,
    "device": pl.String,
    "seconds": pl.Float64,  # wall time of this plan on this benchmark
    "requests": pl.Int64,  # lm-eval requests of this plan's evaluation (the cost model's measured size)
    "request_tokens": pl.Int64,  # their tokens as sent: context + continuation, or a generation's prompt
    "painters_version": pl.String,
    "lm_eval_version": pl.String,
    "transformers_version": pl.String,
    "torch_version": pl.String,
    "timestamp": pl.Datetime("us", "UTC"),
}

# columns only lm-eval scores have (GLUE and vision scores leave them null)
OPTIONAL_COLUMNS = ("requests", "request_tokens")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(name: str, what: str) -> str:
    """Check that `name` can be one path component (and a Snakemake wildcard value)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(
            f"{what} {name!r} is not usable as a file name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def model_slug(model_path_or_id: str) -> str:
    """A path-safe short name for a model given by path or hub id (`meta-llama/Llama-2-7b-hf` -> `Llama-2-7b-hf`)."""
    tail = Path(model_path_or_id.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]", "_", tail).lstrip("._-") or "model"


def score_path(results_dir: str | os.PathLike, model: str, plan: str, benchmark: str, train_seed: int | None = None) -> Path:
    name = safe_name(benchmark, "benchmark") + ("" if train_seed is None else f".seed{int(train_seed)}")
    return Path(results_dir) / "scores" / safe_name(model, "model name") / safe_name(plan, "plan key") / f"{name}.parquet"


def versions() -> dict[str, str]:
    """The versions a score was made with (read from the installed packages' metadata: no imports)."""
    from importlib import metadata

    import painters

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "painters_version": painters.__version__,
        "lm_eval_version": version("lm_eval"),
        "transformers_version": version("transformers"),
        "torch_version": version("torch"),
    }


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: str | os.PathLike) -> Path:
    """A new empty hidden temporary file beside `path` (same file system, so renaming it onto
    `path` publishes it at once), with the mode any new file gets under the user's umask:
    mkstemp makes it private (0600), which would hide results from a shared group.
    Stale temporaries of the same `path` (left by a killed writer) go first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~current_umask())
    return Path(tmp_name)


def _write_temp(frame: pl.DataFrame, path: str | os.PathLike) -> Path:
    """`frame` as parquet in a temporary file beside `path` (temp_beside), flushed to disk."""
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as handle:
            frame.write_parquet(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(frame: pl.DataFrame, path: str | os.PathLike) -> None:
    """Write a parquet so that `path` either does not exist or holds the whole file.

    A process killed at any moment leaves no partial file under the final name.
    """
    os.replace(_write_temp(frame, path), path)


def scores_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows (dicts keyed by SCORE_COLUMNS) as a frame with the canonical schema and column order."""
    rows = [{**dict.fromkeys(OPTIONAL_COLUMNS), **row} for row in rows]
    missing = [c for row in rows for c in SCORE_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"score rows lack columns: {sorted(set(missing))}")
    return pl.DataFrame(rows, schema=SCORE_COLUMNS, strict=False).select(list(SCORE_COLUMNS))


def read_score_file(path: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """A score parquet in the canonical schema; columns that files written by an older
    painters lack come back as nulls (e.g. `fewshot_seed` before few-shot seeding)."""
    wanted = list(columns or SCORE_COLUMNS)
    present = set(pq.read_schema(path).names)
    frame = pl.read_parquet(path, columns=[c for c in wanted if c in present])
    return frame.with_columns(
        pl.lit(None, dtype=SCORE_COLUMNS[c]).alias(c) for c in wanted if c not in present
    ).select(wanted)


def stale_reason(recorded: dict, wanted: dict) -> str | None:
    """Why a finished score no longer stands for the settings asked for now, or None if it does.

    `recorded`: the score file's settings columns; `wanted`: the settings asked for now
    (fewshot_seed, limit, bootstrap_iters, dtype, max_gen_toks; for a fine-tuned GLUE score
    `training`, the fine-tuning settings, compared with those its `settings` record). A few-shot score depends on
    the few-shot seed: one made with another, or before painters seeded the sampler (no
    recorded seed: its examples were drawn from an OS-seeded generator), is stale; a 0-shot
    score does not depend on it. max_gen_toks counts for generate_until scores only. A
    setting a file does not record (written by an older painters) is taken as unchanged.
    """
    if recorded.get("num_fewshot"):
        if recorded.get("fewshot_seed") is None:
            return "few-shot score made before few-shot seeding (its examples were drawn at random)"
        if recorded["fewshot_seed"] != wanted["fewshot_seed"]:
            return f"few-shot score made with fewshot_seed {recorded['fewshot_seed']}, the config asks for {wanted['fewshot_seed']}"
    limit = None if wanted["limit"] is None else float(wanted["limit"])
    if recorded.get("limit") != limit:
        return f"made with limit {_shown(recorded.get('limit'))}, the config asks for {_shown(limit)}"
    if recorded.get("bootstrap_iters") is not None and recorded["bootstrap_iters"] != wanted["bootstrap_iters"]:
        return f"made with bootstrap_iters {recorded['bootstrap_iters']}, the config asks for {wanted['bootstrap_iters']}"
    asked = json.loads(recorded["settings"]) if recorded.get("settings") else {}
    if "dtype" in asked and asked["dtype"] != wanted["dtype"]:
        return f"made with dtype {asked['dtype']}, the config asks for {wanted['dtype']}"
    if "training" in asked and asked["training"] != wanted.get("training"):
        return "its model was " + _training_change(asked["training"], wanted.get("training") or {})
    if "trained_from" in asked and wanted.get("trained_from") is not None and asked["trained_from"] != wanted["trained_from"]:
        return "its model was trained from " + _changed_settings(asked["trained_from"], wanted["trained_from"])
    generative = recorded.get("generation_kwargs") is not None
    if generative and "max_gen_toks" in asked and asked["max_gen_toks"] != wanted["max_gen_toks"]:
        return f"made with max_gen_toks {_shown(asked['max_gen_toks'])}, the config asks for {_shown(wanted['max_gen_toks'])}"
    # the cache mode changes generations under plans with a parallel step only (painters.cost);
    # a file that does not record it was made with the exact cache
    made_with = asked.get("kv_cache", "exact")
    if generative and made_with != wanted.get("kv_cache", "exact") and _has_parallel_step(recorded):
        return f"made with kv_cache {made_with}, the config asks for {wanted.get('kv_cache', 'exact')}"
    return None


def _has_parallel_step(recorded: dict) -> bool:
    if recorded.get("plan") is None or recorded.get("num_layers") is None:
        return True  # cannot tell: recompute rather than keep a score of the other mode
    return cost.has_parallel_step(parse_plan(recorded["plan"]).schedule(int(recorded["num_layers"])))


def _training_change(recorded: dict, wanted: dict) -> str:
    """How the training a score records differs from the one asked for; a merged model's or an
    ensemble's (painters.layershuffle.merging) says which of its models changed, or how its merge did."""
    for key, made in (("merged_from", "merged from models"), ("ensemble_of", "an ensemble of models")):
        if key not in recorded or key not in wanted:
            continue
        before, now = recorded[key], wanted[key]
        if len(before) != len(now):
            return (f"{made} trained with seeds {_shown([m.get('seed') for m in before])}, "
                    f"the config asks for {_shown([m.get('seed') for m in now])}")
        for old, new in zip(before, now):
            if old != new:
                return f"{made} trained with " + _changed_settings(old, new)
        return "merged otherwise: " + _changed_settings({k: v for k, v in recorded.items() if k != key},
                                                        {k: v for k, v in wanted.items() if k != key})
    return "trained with " + _changed_settings(recorded, wanted)


def _changed_settings(recorded: dict, wanted: dict) -> str:
    """Each setting that differs; of a nested block (a pretraining's settings), the ones in it that differ."""
    changed = sorted(key for key in {*recorded, *wanted} if recorded.get(key) != wanted.get(key))
    return "; ".join(
        f"{key} {_changed_settings(recorded[key], wanted[key])}"
        if isinstance(recorded.get(key), dict) and isinstance(wanted.get(key), dict)
        else f"{key} {_shown(recorded.get(key))}, the config asks for {_shown(wanted.get(key))}" for key in changed)


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (bool, str, dict)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(int(value)) if float(value).is_integer() else str(value)


_STALENESS_COLUMNS = ("num_fewshot", "fewshot_seed", "limit", "bootstrap_iters", "settings", "generation_kwargs", "plan",
                      "num_layers", "timestamp")


def stale_scores(paths, wanted: dict) -> dict[str, tuple[str, str]]:
    """{path: (reason, when it was scored)} for the existing score files among `paths` that
    must be recomputed for the settings `wanted` (see stale_reason)."""
    stale = {}
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            recorded = _recorded_settings(path, _STALENESS_COLUMNS)
        except Exception as error:  # a truncated or foreign file: make it again
            stale[str(path)] = (f"unreadable score file ({type(error).__name__})", "unknown")
            continue
        reason = stale_reason(recorded, wanted)
        if reason:
            stale[str(path)] = (reason, str(recorded["timestamp"]))
    return stale


def recorded_request_sizes(paths) -> tuple[int, int] | None:
    """(requests, request tokens) that the first readable score among `paths` records for its
    benchmark (all its tasks), or None where none records them (none finished, or made by an
    older painters)."""
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            frame = read_score_file(path, ["benchmark", "requests", "request_tokens"]).unique("benchmark")
        except Exception:  # noqa: BLE001 - an unreadable file records nothing
            continue
        if frame["requests"].null_count() == 0 and frame.height:
            return int(frame["requests"].sum()), int(frame["request_tokens"].sum())
    return None


def _recorded_settings(path, columns) -> dict:
    """The first row's values of `columns` (None where absent), from the parquet footer's column
    statistics when it has them: a tenth of the time of reading the rows, which counts when
    the workflow checks thousands of score files on every start. A setting is constant
    within a file, so a column whose min and max differ is read from its rows."""
    metadata = pq.ParquetFile(path).metadata
    values, unread = {}, []
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    for column in columns:
        if column not in names:
            values[column] = None
            continue
        stats = metadata.row_group(0).column(names.index(column)).statistics
        if stats is not None and stats.has_min_max and stats.min == stats.max:
            values[column] = stats.min
        elif stats is not None and stats.null_count == metadata.num_rows:
            values[column] = None
        else:
            unread.append(column)
    if unread:
        values.update(read_score_file(path, unread).row(0, named=True))
    return values
