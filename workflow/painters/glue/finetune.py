"""`painters finetune`: fine-tune an encoder on one GLUE task with one seed, under each of its plans.

As the Painters reference (`bert/run_glue.py`), the plan is applied during training and
evaluation: the model trains with its layers run as the plan says. The job loads the model
once with a classification head drawn from the seed, and for each plan fine-tunes a fresh copy
of that start with transformers' Trainer (same seed, so the same data order and dropout
draws for every plan), predicts the validation split, and writes
`OUT/scores/NAME/PLAN/TASK.seedSEED.parquet` atomically, in the score format of
`painters evaluate` (one row per metric; `random_baseline` is the chance level).

`frozen` mode trains only the classification head: every parameter of the base model is
frozen and the base model runs in eval mode (no dropout), so the head sees fixed features,
exactly as if they had been computed once beforehand (tested).

Everything that can be wrong with the input (task, model kind, plans against the depth, the
data, fp16 without a GPU) fails before any training. Finished scores are kept, so a killed
job resumes with the plans it had not finished.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from painters import plan as plans_module
from painters.glue import data, tasks

MODES = ("finetune", "frozen")


@dataclass(frozen=True)
class TrainingSettings:
    """How a model is fine-tuned; the defaults are the reference's (run_glue for BERT-Large)."""

    mode: str = "finetune"  # or "frozen": only the classification head trains
    epochs: float = 3.0
    learning_rate: float = 2e-5
    frozen_learning_rate: float = 3e-2  # the head's learning rate in frozen mode
    batch_size: int = 32
    max_seq_length: int = 128
    fp16: bool = False  # mixed precision (GPUs only)
    max_train_samples: int | None = None  # the first n training rows (None: all)
    max_eval_samples: int | None = None

    @property
    def rate(self) -> float:
        return self.frozen_learning_rate if self.mode == "frozen" else self.learning_rate

    def recorded(self) -> dict:
        """What a score records of how it was trained (results.stale_reason compares it): the
        learning rate in use, so that the other mode's rate is not a setting of the score."""
        recorded = asdict(self)
        recorded["learning_rate"] = recorded.pop("frozen_learning_rate") if self.mode == "frozen" else self.learning_rate
        recorded.pop("frozen_learning_rate", None)
        return recorded


def check_settings(settings: TrainingSettings, device: str) -> None:
    if settings.mode not in MODES:
        raise ValueError(f"--mode {settings.mode!r} is not one of {', '.join(MODES)}")
    for name in ("epochs", "learning_rate", "frozen_learning_rate", "batch_size", "max_seq_length"):
        if getattr(settings, name) <= 0:
            raise ValueError(f"{name} {getattr(settings, name)} must be > 0")
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(settings, name) is not None and getattr(settings, name) < 1:
            raise ValueError(f"{name} {getattr(settings, name)} must be >= 1 (or none for every row)")
    if settings.fp16 and not device.startswith("cuda"):
        raise ValueError(f"fp16 needs a CUDA GPU; this job runs on {device} (turn fp16 off)")


def encode(tokenizer, task: tasks.GlueTask, rows: list[dict], max_seq_length: int):
    """Rows as a `datasets.Dataset` of token ids and labels, padded to max_seq_length (as run_glue)."""
    import datasets

    texts = [[row[column] for row in rows] for column in task.text_columns]
    encoded = tokenizer(*texts, padding="max_length", truncation=True, max_length=max_seq_length)
    labels = [float(row["label"]) if task.is_regression else int(row["label"]) for row in rows]
    return datasets.Dataset.from_dict({**dict(encoded), "labels": labels})


def freeze_base(model) -> None:
    """Frozen mode: only the head trains. The base model's parameters get no gradient and it runs
    in eval mode whatever the Trainer sets (no dropout), so the head sees fixed features."""
    base = model.base_model
    for parameter in base.parameters():
        parameter.requires_grad_(False)

    def keep_eval(module, args):  # returns None: the inputs stay as they are
        base.eval()

    model.register_forward_pre_hook(keep_eval)


def training_arguments(settings: TrainingSettings, seed: int, device: str, output_dir: str, steps: int):
    import transformers

    return transformers.TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=settings.epochs,
        learning_rate=settings.rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        seed=seed,
        fp16=settings.fp16,
        use_cpu=device == "cpu",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, steps // 5),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def train_and_predict(model, plan: plans_module.Plan, train_set, eval_set, settings: TrainingSettings, seed: int,
                      device: str):
    """Fine-tune `model` (changed in place) under `plan` and predict `eval_set`: class ids, or
    scores for a regression. The plan is applied during training and prediction."""
    import transformers

    from painters import surgery

    if settings.mode == "frozen":
        freeze_base(model)
    model.to(device)
    steps = -(-len(train_set) // settings.batch_size) * settings.epochs
    with tempfile.TemporaryDirectory(prefix="painters-finetune-") as output_dir, surgery.apply(model, plan):
        trainer = transformers.Trainer(
            model=model, args=training_arguments(settings, seed, device, output_dir, int(steps)), train_dataset=train_set
        )
        trainer.train()
        predicted = trainer.predict(eval_set).predictions
    predicted = predicted[0] if isinstance(predicted, tuple) else predicted
    return predicted.squeeze(-1) if predicted.shape[-1] == 1 else predicted.argmax(-1)


def score_rows(*, name, model_id, plan, depth, task, train_seed, predictions, labels, chance, settings, data_hash, dtype,
               dtype_asked, device, seconds) -> list[dict]:
    """One row per metric, in the score format of painters.results."""
    from datetime import datetime, timezone

    from painters import results

    values = tasks.metric_values(task, predictions, labels)
    now = datetime.now(timezone.utc)
    rows = []
    for metric, value in values.items():
        rows.append({
            "model": name, "model_id": model_id, "plan": plan.key, "variant": plan.variant, "N": plan.N,
            "M": plan.affected(depth), "K": plan.K, "seed": plan.seed, "layer": plan.layer, "percent": plan.percent,
            "num_layers": depth, "benchmark": task.name, "train_seed": train_seed, "metric": metric, "filter": "none",
            "value": value, "stderr": tasks.accuracy_stderr(predictions, labels) if metric == "acc" else None,
            "higher_is_better": True, "random_baseline": chance[metric], "n_samples": len(labels), "limit": None,
            "num_fewshot": 0, "fewshot_seed": None, "prompt_hash": data_hash, "generation_kwargs": None,
            "settings": json.dumps({"dtype": dtype_asked, "training": settings.recorded()}, sort_keys=True),
            "batch_size": str(settings.batch_size), "batch_size_used": settings.batch_size, "bootstrap_iters": None,
            "dtype": dtype, "device": device, "seconds": seconds, **results.versions(), "timestamp": now,
        })
    return rows


def load_classifier(model_path: str, task: tasks.GlueTask, seed: int, dtype: str, trust_remote_code: bool):
    """The model with a classification head for `task`, the head drawn from `seed` (as run_glue:
    seed set before the model is made)."""
    import torch
    import transformers

    transformers.set_seed(seed)
    kwargs = {"num_labels": task.num_labels, "trust_remote_code": trust_remote_code,
              "dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
    if task.is_regression:
        kwargs["problem_type"] = "regression"
    return transformers.AutoModelForSequenceClassification.from_pretrained(model_path, **kwargs)


def run_command(args) -> int:
    import numpy as np
    import torch
    import transformers

    from painters import results, surgery, sweep
    from painters.evaluate import check_kind, check_model_source, check_plan_keys

    # ---- every check before any training
    bad = [pair for pair in args.custom_task if "=" not in pair]
    if bad:
        raise ValueError(f"--custom-task {bad[0]!r}: give NAME=GLUETASK, e.g. my_sentiment=sst2")
    custom = dict(pair.split("=", 1) for pair in args.custom_task)
    task = tasks.get_task(args.task, custom)
    if task.name in custom and args.data_dir is None:
        raise ValueError(f"custom task {task.name} reads local files: give --data-dir")
    results.safe_name(args.name, "--name")
    check_model_source(args.model)
    model_config = check_kind(args.model, "encoder", "GLUE tasks", args.trust_remote_code)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = TrainingSettings(mode=args.mode, epochs=args.epochs, learning_rate=args.learning_rate,
                                frozen_learning_rate=args.frozen_learning_rate, batch_size=args.batch_size,
                                max_seq_length=args.max_seq_length, fp16=args.fp16,
                                max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples)
    check_settings(settings, device)
    if device.startswith("cuda") and torch.cuda.device_count() > 1:
        # the Trainer would replicate the model over every visible GPU (DataParallel), and a parallel
        # step's calls share one state object across the replicas
        raise ValueError(f"painters finetune trains on one GPU, but {torch.cuda.device_count()} are visible: give the job "
                         "one (resources.gpu: 1, or CUDA_VISIBLE_DEVICES)")
    depth = sweep.depth_of_config(model_config)
    plans = check_plan_keys(args.plans, depth)
    train_rows = data.load_split(task, "train", args.data_dir)[: settings.max_train_samples]
    eval_rows = data.load_split(task, task.validation_split, args.data_dir)[: settings.max_eval_samples]
    todo = {plan: results.score_path(args.out, args.name, plan.key, task.name, args.seed) for plan in plans}
    todo = {plan: path for plan, path in todo.items() if args.overwrite or not path.exists()}
    if not todo:
        print(f"every score of {len(plans)} plan(s) exists; nothing to do (--overwrite recomputes them)")
        return 0
    if os.environ.get("SLURM_JOB_ID"):
        print(f"Slurm job {os.environ['SLURM_JOB_ID']}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")

    # ---- the model once (its head drawn from the seed), then a fresh copy of it per plan
    started = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    start = load_classifier(args.model, task, args.seed, args.dtype, args.trust_remote_code)
    surgery.check_supported(start)
    train_set = encode(tokenizer, task, train_rows, settings.max_seq_length)
    eval_set = encode(tokenizer, task, eval_rows, settings.max_seq_length)
    labels = eval_set["labels"]
    chance = tasks.chance_levels(task, labels)
    data_hash = data.fingerprint(train_rows, eval_rows)
    dtype = str(start.dtype).removeprefix("torch.")
    print(f"loaded {args.model}: {depth} layers, {dtype}, {task.name} with {len(train_rows)} training and "
          f"{len(eval_rows)} validation rows, seed {args.seed}, {settings.mode} on {device} "
          f"in {time.perf_counter() - started:.1f} s", flush=True)
    for plan, path in todo.items():
        started = time.perf_counter()
        model = copy.deepcopy(start)
        print(f"{plan.key}: training (the Trainer's loss lines follow)", flush=True)
        predictions = train_and_predict(model, plan, train_set, eval_set, settings, args.seed, device)
        seconds = time.perf_counter() - started
        rows = score_rows(name=args.name, model_id=args.model, plan=plan, depth=depth, task=task, train_seed=args.seed,
                          predictions=np.asarray(predictions).tolist(), labels=labels, chance=chance, settings=settings,
                          data_hash=data_hash, dtype=dtype, dtype_asked=args.dtype, device=device, seconds=seconds)
        results.write_atomic(results.scores_frame(rows), path)
        shown = ", ".join(f"{row['metric']} {row['value']:.4f}" for row in rows)
        print(f"{plan.key}: {shown} (chance {', '.join(f'{v:.3f}' for v in chance.values())}) in {seconds:.1f} s -> {path}",
              flush=True)
        del model
    return 0


def register(subparsers) -> None:
    defaults = TrainingSettings()
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune an encoder on a GLUE task under execution plans",
        description="Fine-tune an encoder on one GLUE task with one seed under each plan (applied in training and "
        "evaluation); writes OUT/scores/NAME/PLAN/TASK.seedSEED.parquet atomically.",
    )
    parser.add_argument("--model", required=True, help="encoder folder or Hugging Face id (from the local cache)")
    parser.add_argument("--name", required=True, help="short model name in the results layout")
    parser.add_argument("--task", required=True, help=f"GLUE task: {', '.join(tasks.GLUE_TASKS)}, or a --custom-task")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed (head initialization, data order, dropout)")
    parser.add_argument("--plans", nargs="+", required=True, metavar="KEY", help="plan keys, e.g. baseline skip-N9")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--data-dir", help="local GLUE files DATA_DIR/TASK/SPLIT.jsonl|csv|tsv|parquet "
                        "(default: nyu-mll/glue from the local Hugging Face cache)")
    parser.add_argument("--custom-task", action="append", default=[], metavar="NAME=GLUETASK",
                        help="a task of your own in --data-dir, with the columns and metrics of a GLUE task")
    parser.add_argument("--mode", default=defaults.mode, choices=MODES)
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--frozen-learning-rate", type=float, default=defaults.frozen_learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-seq-length", type=int, default=defaults.max_seq_length)
    parser.add_argument("--fp16", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="recompute scores that exist")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    parser.set_defaults(func=run_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(__import__("painters.cli").cli.main(["finetune", *sys.argv[1:]]))
