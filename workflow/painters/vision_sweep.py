"""`painters evaluate-images`: an image classifier, as it is, under each plan of the Painters sweeps.

The Painters questions asked of a vision transformer (skip, reverse, repeat, parallel of the middle
layers; Fig 2's single layer skipped or switched, the robustness study of arXiv 2103.14586) need
the pretrained model scored as it is, with no training. A vision model (painters.sweep.model_kind:
ViT, DeiT, BEiT, ... whose stack surgery supports) is scored on an image benchmark's test split
(painters.layershuffle.vision.load_data: digits, imagenet-1k, cifar100, an image folder), its
images prepared by the model's own image processor (digits: none, the demo's ViT reads the pixels).

All plans share one pass over the images: per batch, the plans are visited in the trie of their
schedules (painters.shared_pass), so each distinct prefix of layers runs once per batch. Metrics:
top-1 accuracy (`acc`) and, where there are more than 5 classes, top-5 (`acc_top5`); chance is
1 / classes (5 / classes for top-5). One score file per (model, plan, benchmark), written
atomically in the format of `painters evaluate`.

The model's head is its own: a classifier whose classes are not the data set's (an ImageNet head
on CIFAR-100) is refused before any work, as is a ViT the workflow trained (a folder of
`painters train-vision`) scored on a digits split other than the one it was trained beside.
"""

from __future__ import annotations

import json
import time

import torch

from painters import sweep
from painters.layershuffle import vision

TOP_K = 5  # the second metric, where a data set has more classes than this
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_classifier(path: str, dtype: str = "auto", device: torch.device | str = "cpu", trust_remote_code: bool = False):
    """The image classifier of `path` (folder or Hugging Face id in the local cache), in eval mode on `device`."""
    import transformers

    from painters import surgery

    options = {} if dtype == "auto" else {"dtype": DTYPES[dtype]}
    model = transformers.AutoModelForImageClassification.from_pretrained(path, trust_remote_code=trust_remote_code, **options)
    surgery.check_supported(model)
    check_like_layers(model, path)
    return model.eval().to(device)


def check_like_layers(model, path: str) -> None:
    """Refuse a hierarchical backbone (Swin, ConvNeXt: stages of different widths, each downsampling):
    its stack is stages, and skipping, reordering or averaging them means nothing (or fails on shapes)."""
    from painters import surgery

    shapes = {tuple(tuple(p.shape) for p in layer.parameters()) for layer in surgery.layer_list(model)}
    if len(shapes) > 1:
        _, _, where = surgery.find_stack(model)
        raise ValueError(f"--model {path}: its stack ({where}) is {surgery.num_layers(model)} stages of different shapes (a "
                         "hierarchical backbone such as Swin or ConvNeXt); the plans need a stack of like layers (ViT, DeiT, BEiT, ...)")


def check_head(model, data: vision.ImageData, path: str) -> None:
    """Refuse a classifier whose head is not for `data`'s classes: its scores would mean nothing."""
    classes = model.config.num_labels
    if classes != data.num_labels:
        raise ValueError(f"--model {path}: its head has {classes} classes and {data.name} has {data.num_labels}; the model is "
                         "scored as it is, so its head must be one trained for this data set's classes (a model "
                         f"fine-tuned on {data.name}, or another benchmark)")


def test_split(benchmark: str, model_path: str, *, data_dir: str | None = None, data_seed: int = 0, limit: int | None = None,
               trained: dict | None = None, trust_remote_code: bool = False) -> vision.ImageData:
    """The benchmark's test split (its first `limit` images), prepared as `model_path` expects;
    `trained`: the model's training facts (sweep.trained_facts), where `painters train-vision` made it."""
    if benchmark == "digits":
        if trained is not None and trained.get("data") == "digits" and trained.get("data_seed") != data_seed:
            raise ValueError(f"--data-seed {data_seed}: {model_path} was trained on the digits split of data seed "
                             f"{trained['data_seed']}; scored on another split, its test images would include training images")
        data = vision.load_data("digits", data_seed, train=False)
    else:
        data = vision.load_data(benchmark, data_dir=data_dir, image_processor=model_path, train=False,
                                trust_remote_code=trust_remote_code)
    if limit is not None and limit < len(data.test):
        data = vision.ImageData(data.name, None, vision.first_rows(data.test, limit), data.num_labels, data.class_names)
    return data


@torch.no_grad()
def top_k_accuracies(model, plans: list, split, *, batch_size: int = 256, workers: int = 0, k: int = TOP_K) -> list[dict[str, float]]:
    """{"acc": top-1, "acc_top5": top-k (with more than k classes)} of `model` on `split` under each of
    `plans`, in one pass over the images: each batch is read once and walked through the plans' trie."""
    from painters.shared_pass import SharedPass

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    shared = SharedPass(model, plans)
    classes = model.config.num_labels
    top1, topk = [0] * len(plans), [0] * len(plans)
    rows = (torch.arange(start, min(start + batch_size, len(split))) for start in range(0, len(split), batch_size))
    for images, labels in vision.batches(split, rows, workers, pin_memory=device.type == "cuda"):
        images = images.to(device, dtype, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        for index, logits in shared.walk(lambda: model(pixel_values=images).logits):
            best = logits.topk(min(k, classes), dim=-1).indices
            hits = best == labels[:, None]
            top1[index] += int(hits[:, 0].sum())
            topk[index] += int(hits.any(dim=-1).sum())
    n = len(split)
    return [{"acc": top1[i] / n, **({f"acc_top{k}": topk[i] / n} if classes > k else {})} for i in range(len(plans))]


def score_rows(*, name: str, model_id: str, plan, depth: int, data: vision.ImageData, accuracies: dict[str, float],
               settings: dict, seconds: float, device, batch_size: int, dtype: str) -> list[dict]:
    """The score file's rows of one plan: one per metric, chance 1 / classes (k / classes for top-k)."""
    from painters.layershuffle.evaluation import score_row

    rows = []
    for metric, value in accuracies.items():
        k = 1 if metric == "acc" else int(metric.removeprefix("acc_top"))
        row = score_row(name=name, model_id=model_id, plan=plan, depth=depth, data_name=data.name, accuracy=value,
                        labels=data.test.labels, chance=k / data.num_labels, training=None, seconds=seconds, device=device)
        limit = settings.get("limit")
        row |= {"metric": metric, "settings": json.dumps(settings, sort_keys=True), "batch_size": str(batch_size),
                "limit": None if limit is None else float(limit),
                "batch_size_used": batch_size, "dtype": dtype}
        rows.append(row)
    return rows


def run_command(args) -> int:
    from painters import results, surgery
    from painters.evaluate import IMAGE_PROCESSOR_FILES, check_kind, check_model_source, check_plan_keys
    from painters.layershuffle import training
    from painters.layershuffle.evaluation import pending_plans

    results.safe_name(args.name, "--name")
    check_plan_keys(args.plans)  # the keys, before loading anything
    if args.benchmark not in vision.DATASETS:
        raise ValueError(f"--benchmark {args.benchmark!r}: not an image benchmark; valid: {', '.join(vision.DATASETS)}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit} must be >= 1 (images of the test split)")
    check_model_source(args.model, () if args.benchmark == "digits" else IMAGE_PROCESSOR_FILES)
    check_kind(args.model, "vision", "image benchmarks", args.trust_remote_code)
    device = training.select_device(args.device)
    training.check_workers(args.workers)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_classifier(args.model, args.dtype, device, args.trust_remote_code)
    depth = surgery.num_layers(model)
    plans = check_plan_keys(args.plans, depth)
    facts = sweep.trained_facts(args.model)
    data = test_split(args.benchmark, args.model, data_dir=args.data_dir, data_seed=args.data_seed, limit=args.limit,
                      trained=facts, trust_remote_code=args.trust_remote_code)
    check_head(model, data, args.model)
    pending = pending_plans(args.out, args.name, plans, data.name, args.overwrite)
    if not pending:
        return 0
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    settings = {"dtype": args.dtype, "limit": args.limit, "data_seed": args.data_seed if args.benchmark == "digits" else None,
                **({"training": facts["settings"], "trained_from": facts.get("trained_from")} if facts is not None else {})}
    print(f"{args.name}: {len(pending)} plans on {len(data.test)} {data.name} test images ({data.num_labels} classes), "
          f"{device}, {dtype}", flush=True)
    started = time.perf_counter()
    scores = top_k_accuracies(model, pending, data.test, batch_size=args.batch_size, workers=args.workers)
    seconds = (time.perf_counter() - started) / len(pending)  # the plans shared each batch: the time shared equally
    for plan, accuracies in zip(pending, scores):
        path = results.score_path(args.out, args.name, plan.key, data.name)
        rows = score_rows(name=args.name, model_id=args.model, plan=plan, depth=depth, data=data, accuracies=accuracies,
                          settings=settings, seconds=seconds, device=device, batch_size=args.batch_size, dtype=dtype)
        results.write_atomic(results.scores_frame(rows), path)
        shown = ", ".join(f"{metric} {value:.4f}" for metric, value in accuracies.items())
        print(f"{args.name} {plan.key}: {shown} -> {path}", flush=True)
    return 0


def register(subparsers) -> None:
    from painters.layershuffle.training import add_runtime_arguments

    parser = subparsers.add_parser("evaluate-images", help="an image classifier's accuracy under each plan (one shared pass)")
    parser.add_argument("--model", required=True, help="an image classifier: a folder or a Hugging Face id in the local cache")
    parser.add_argument("--name", required=True, help="the model's name in the results")
    parser.add_argument("--benchmark", required=True, help=f"image benchmark: {', '.join(vision.DATASETS)}")
    parser.add_argument("--plans", nargs="+", required=True, metavar="KEY")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--data-dir", help="the folder of --benchmark imagefolder")
    parser.add_argument("--data-seed", type=int, default=0, help="digits' train/test split")
    parser.add_argument("--limit", type=int, help="score the first LIMIT test images only")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    add_runtime_arguments(parser)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.set_defaults(func=run_command)
