"""`painters evaluate-vision`: a trained vision model's test accuracy under each plan, as score files.

The LayerShuffle evaluation grid is plans: the layers in order (`baseline`), in a seeded random order
(`shuffle_all-S*`), with a seeded share pruned (`prune-P*-S*`), both (`shuffle_prune-P*-S*`), and any
Painters plan (`skip_layer-L3`, `reverse-N1`, ...). Each (trained model, plan) score is written to
`OUT/scores/NAME/PLAN/DATA.parquet` in the format of `painters evaluate` (metric `acc`,
`random_baseline` the majority share of the test labels), so the workflow's summary, figures and
incremental caching treat it like any score. A trained model's position modules (LayerShuffle-position)
run with it, in the precision it was trained in, on the test split of its data set (read once for
all plans: each batch is scored under every pending plan).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def load_trained(folder: str | Path, device: torch.device | str = "cpu"):
    """(model, position modules or None, its training.json) of a folder `painters train-vision` wrote,
    the model and its position modules on `device`."""
    import transformers

    from painters.layershuffle import training

    folder = Path(folder)
    facts_file = folder / "training.json"
    if not facts_file.is_file() or not (folder / "model/config.json").is_file():
        raise FileNotFoundError(f"--trained {folder}: not a trained model folder (expected model/ and training.json, "
                                "as `painters train-vision` writes)")
    facts = json.loads(facts_file.read_text())
    model = transformers.AutoModelForImageClassification.from_pretrained(folder / "model").eval().to(device)
    settings = training.TrainSettings(**facts["settings"])
    modules = training.position_modules(model, settings)
    if modules is not None:
        modules.load_state_dict(torch.load(folder / "position_modules.pt", weights_only=True, map_location="cpu"))  # saved from a GPU too
        modules.eval().to(device)
    return model, modules, facts


def trained_data(folder: str | Path, facts: dict, trust_remote_code: bool = False):
    """The test split a trained model is scored on: its data set's, through the image processor saved with it."""
    from painters.layershuffle import vision

    return vision.load_data(facts["data"], facts["data_seed"], data_dir=facts.get("data_dir"),
                            image_processor=Path(folder) / "model", train=False, trust_remote_code=trust_remote_code)


def score_row(*, name, model_id, plan, depth, data_name, accuracy, labels, chance, training, seconds, device="cpu",
              trained_from=None) -> dict:
    from datetime import datetime, timezone

    from painters import results

    n = len(labels)
    return {
        "model": name, "model_id": model_id, "plan": plan.key, "variant": plan.variant, "N": plan.N,
        "M": plan.affected(depth), "K": plan.K, "seed": plan.seed, "layer": plan.layer, "percent": plan.percent,
        "num_layers": depth, "benchmark": data_name, "train_seed": None, "metric": "acc", "filter": "none",
        "value": accuracy, "stderr": (accuracy * (1 - accuracy) / max(1, n - 1)) ** 0.5, "higher_is_better": True,
        "random_baseline": chance, "n_samples": n, "limit": None, "num_fewshot": 0, "fewshot_seed": None,
        "prompt_hash": None, "generation_kwargs": None,
        # how the model was trained: a score of a model trained otherwise is stale (results.stale_reason)
        # and from what (base model, data; study.trained_from), where its model recorded it
        "settings": json.dumps({"dtype": "float32", "training": training}
                               | ({"trained_from": trained_from} if trained_from is not None else {}), sort_keys=True),
        "batch_size": "256", "batch_size_used": 256, "bootstrap_iters": None, "dtype": "float32", "device": str(device),
        "seconds": seconds, **results.versions(), "timestamp": datetime.now(timezone.utc),
    }


def run_command(args) -> int:
    from painters import results, surgery
    from painters.evaluate import check_plan_keys
    from painters.layershuffle import training

    results.safe_name(args.name, "--name")
    check_plan_keys(args.plans)  # the keys, before loading anything
    device = training.select_device(args.device)
    training.check_workers(args.workers)
    model, modules, facts = load_trained(args.trained, device)
    precision = facts["settings"].get("precision", "fp32")  # as it was trained
    training.check_precision(precision, device)
    depth = surgery.num_layers(model)
    plans = check_plan_keys(args.plans, depth)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = trained_data(args.trained, facts)
    pending = pending_plans(args.out, args.name, plans, data.name, args.overwrite)
    if not pending:
        return 0
    started = time.perf_counter()
    scores = training.accuracies(model, modules, pending, data.test, precision=precision, workers=args.workers)
    write_scores(args.out, args.name, str(Path(args.trained).resolve()), pending, scores, depth=depth, data=data,
                 training=facts["settings"], seconds=time.perf_counter() - started, device=device,
                 trained_from=facts.get("trained_from"))
    return 0


def pending_plans(out, name: str, plans: list, data_name: str, overwrite: bool = False) -> list:
    """The plans whose score of `name` is not written yet (all of them with `overwrite`)."""
    from painters import results

    return [plan for plan in plans if overwrite or not results.score_path(out, name, plan.key, data_name).exists()]


def write_scores(out, name: str, model_id: str, plans: list, accuracies: list[float], *, depth: int, data, training: dict,
                 seconds: float, device, trained_from: dict | None = None) -> None:
    """One score file per plan (atomically); `seconds` is the time of all, shared equally (the plans
    shared each batch); `random_baseline` is the majority class's share of the test labels."""
    from painters import results

    chance = float(torch.bincount(data.test.labels).max()) / len(data.test)
    for plan, accuracy in zip(plans, accuracies):
        path = results.score_path(out, name, plan.key, data.name)
        row = score_row(name=name, model_id=model_id, plan=plan, depth=depth, data_name=data.name, accuracy=accuracy,
                        labels=data.test.labels, chance=chance, training=training, seconds=seconds / len(plans), device=device,
                        trained_from=trained_from)
        results.write_atomic(results.scores_frame([row]), path)
        print(f"{name} {plan.key}: acc {accuracy:.4f} -> {path}", flush=True)


def register(subparsers) -> None:
    from painters.layershuffle.training import add_runtime_arguments

    parser = subparsers.add_parser("evaluate-vision", help="a trained vision model's accuracy under each plan")
    parser.add_argument("--trained", required=True, help="a folder written by `painters train-vision`")
    parser.add_argument("--name", required=True, help="the trained model's name in the results")
    parser.add_argument("--plans", nargs="+", required=True, metavar="KEY")
    parser.add_argument("--out", required=True, help="results folder")
    add_runtime_arguments(parser)
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run_command)

