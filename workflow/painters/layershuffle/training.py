"""Training a vision transformer the LayerShuffle way, on the core's plans and surgery.

Every batch runs a plan drawn for it (`batch_plan`), applied with `painters.surgery.apply`:

- `sequential`: the baseline plan (ordinary fine-tuning);
- `layershuffle`: all layers in a new random order (as the official code's `torch.randperm` per
  forward);
- `layershuffle_position`: the same, and each layer's input gets a learned embedding of its current
  position: 32 numbers (zero at first) concatenated with the input, projected back to the hidden
  size by the layer's own LayerNorm-Linear-GELU, added to the input;
- `layershuffle_predict`: the same order, and each layer's own head (LayerNorm-Linear) predicts its
  current position from its output averaged over tokens; the cross-entropy is added to the loss;
- `layerdrop`: the layers in order, each dropped with probability p (Fan et al., arXiv 1909.11556).

The draw of a batch depends on (seed, step) only, and so does its data (a permutation per epoch),
so a run resumed from a checkpoint continues exactly where it stopped: checkpoints hold the model,
the position modules, the optimizer, the schedule, the loss scale and the RNG states, written
atomically. Batches are read by a DataLoader (worker processes with `workers`) from the rows of
steps start..steps, and go where the model is (CPU or a GPU); `precision` bf16 or fp16 trains in
mixed precision (torch.autocast; fp16 with loss scaling), and is a setting of the trained model.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from painters import plan as plans_module
from painters import surgery
from painters.layershuffle import vision

VARIANTS = ("sequential", "layershuffle", "layershuffle_position", "layershuffle_predict", "layerdrop")
BASELINE = plans_module.parse("baseline")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast's dtype


@dataclass(frozen=True)
class TrainSettings:
    variant: str = "sequential"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    layerdrop: float = 0.2  # LayerDrop's p
    position_dim: int = 32
    position_loss_weight: float = 1.0  # LayerShuffle-predict: weight of the position cross-entropy (the paper: 1)
    checkpoint_every: int = 100
    precision: str = "fp32"  # fp32, or mixed precision: bf16, fp16

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown training variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        for name in ("steps", "batch_size", "checkpoint_every", "position_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be >= 1")
        if not 0 < self.learning_rate:
            raise ValueError(f"learning_rate {self.learning_rate} must be > 0")
        if not 0 <= self.layerdrop < 1:
            raise ValueError(f"layerdrop {self.layerdrop} must be in [0, 1)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")

    def recorded(self) -> dict:
        return asdict(self)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse mixed precision where it does not work: fp16 off a CUDA GPU (its loss scaling is
    for GPUs), bf16 on a GPU without bfloat16."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU, and this runs on {device}: use bf16 or fp32 there")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16; use fp16 or fp32")


def autocast(device: torch.device, precision: str):
    """Mixed precision for bf16 and fp16 (weights stay fp32); nothing for fp32."""
    return nullcontext() if PRECISIONS[precision] is None else torch.autocast(device.type, dtype=PRECISIONS[precision])


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _generator(seed: int, *stream: int) -> torch.Generator:
    """A generator for one (seed, stream...) draw: the same numbers whatever ran before (resumable)."""
    value = seed
    for part in stream:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def batch_plan(variant: str, depth: int, seed: int, step: int, layerdrop: float = 0.2) -> plans_module.Plan:
    """The plan batch `step` of a run trains under."""
    if variant == "sequential":
        return BASELINE
    generator = _generator(seed, 1, step)
    if variant == "layerdrop":
        kept = [i for i, drawn in enumerate(torch.rand(depth, generator=generator).tolist()) if drawn >= layerdrop]
        # all dropped: the stack would be the identity, which a plan cannot say; one layer stays
        order = kept or [int(torch.randint(depth, (1,), generator=generator))]
    else:
        order = torch.randperm(depth, generator=generator).tolist()
    return plans_module.Plan(variant="order", order=tuple((i,) for i in order))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The rows of batch `step`: consecutive slices of a permutation drawn per epoch."""
    per_epoch = max(1, n // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(n, generator=_generator(seed, 2, epoch))
    return order[index * batch_size : (index + 1) * batch_size]


class PositionModules(nn.Module):
    """The extra modules of LayerShuffle-position (`encode`) and -predict (`predict`), one of each per
    layer (they move with their layer when the order changes), and the position embedding."""

    def __init__(self, hidden: int, depth: int, encode: bool, predict: bool, dim: int = 32):
        super().__init__()
        self.depth, self.encode, self.predict = depth, encode, predict
        if encode:
            self.embedding = nn.Embedding(depth, dim)
            nn.init.zeros_(self.embedding.weight)
            self.projections = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(hidden + dim), nn.Linear(hidden + dim, hidden), nn.GELU()) for _ in range(depth))
        if predict:
            self.heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, depth)) for _ in range(depth))


def position_modules(model: nn.Module, settings: TrainSettings) -> PositionModules | None:
    encode, predict = settings.variant == "layershuffle_position", settings.variant == "layershuffle_predict"
    if not (encode or predict):
        return None
    hidden = model.config.hidden_size
    return PositionModules(hidden, surgery.num_layers(model), encode, predict, settings.position_dim)


@contextmanager
def positions(model: nn.Module, modules: PositionModules | None, plan: plans_module.Plan):
    """Inside `surgery.apply(model, plan)`: hooks on each call of the stack that add its position
    embedding to its input (`encode`) and collect its position prediction (`predict`). Yields the
    list of (logits, target position) the calls append to."""
    predictions: list[tuple[torch.Tensor, int]] = []
    if modules is None:
        yield predictions
        return
    calls = surgery.called_layers(plan.schedule(modules.depth))
    handles = []
    for position, (entry, layer) in enumerate(zip(surgery.layer_list(model), calls)):
        if modules.encode:
            handles.append(entry.register_forward_pre_hook(_encoder(modules, layer, position), with_kwargs=True))
        if modules.predict:
            handles.append(entry.register_forward_hook(_predictor(modules, layer, position, predictions)))
    try:
        yield predictions
    finally:
        for handle in handles:
            handle.remove()


def _encoder(modules: PositionModules, layer: int, position: int):
    def add_position(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        embedding = modules.embedding.weight[position].expand(*hidden.shape[:-1], -1)
        hidden = hidden + modules.projections[layer](torch.cat([hidden, embedding], dim=-1))
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    return add_position


def _predictor(modules: PositionModules, layer: int, position: int, predictions: list):
    def predict(module, args, output):
        predictions.append((modules.heads[layer](surgery.output_state(output).mean(dim=1)), position))

    return predict


def forward(model: nn.Module, modules: PositionModules | None, plan: plans_module.Plan, images: torch.Tensor,
            labels: torch.Tensor | None = None, position_loss_weight: float = 1.0):
    """(logits, loss) of `model` on `images` under `plan`, with the position modules' hooks; the loss
    includes the position-prediction cross-entropy of LayerShuffle-predict."""
    with surgery.apply(model, plan), positions(model, modules, plan) as predicted:
        output = model(pixel_values=images, labels=labels)
    loss = output.loss
    if predicted and loss is not None:
        logits = torch.cat([p for p, _ in predicted])
        targets = torch.cat([torch.full((p.shape[0],), position, device=p.device) for p, position in predicted])
        loss = loss + position_loss_weight * nn.functional.cross_entropy(logits, targets)
    return output.logits, loss


def learning_rate_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup, then cosine decay to 0."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save_checkpoint(path: Path, step: int, model, modules, optimizer, scheduler, scaler, settings: TrainSettings) -> None:
    """Everything a resumed run needs, written to a temporary file beside `path` and renamed onto it."""
    from painters.results import temp_beside

    device = device_of(model)
    state = {"step": step, "settings": settings.recorded(), "model": model.state_dict(),
             "modules": modules.state_dict() if modules is not None else None,
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    tmp = temp_beside(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def train(model: nn.Module, split, settings: TrainSettings, checkpoint: Path | None = None, log=print,
          stop_after: int | None = None, workers: int = 0) -> tuple[PositionModules | None, list]:
    """Train `model` (in place, on the device it is on) on `split` (painters.layershuffle.vision) as
    `settings.variant` says; returns its position modules and the (step, loss) history. With
    `checkpoint`, the state is saved there every `checkpoint_every` steps and a run finding one
    resumes from it. `stop_after`: return after that many steps of this call (what a killed job
    does, for tests). `workers`: processes reading batches ahead."""
    settings.check()
    device = device_of(model)
    check_precision(settings.precision, device)
    depth = surgery.num_layers(model)
    modules = position_modules(model, settings)
    if modules is not None:
        modules.to(device)
    parameters = list(model.parameters()) + (list(modules.parameters()) if modules is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")  # else it passes everything through
    start = 0
    torch.manual_seed(settings.seed)  # dropout, and anything else drawing from torch's global generators
    if checkpoint is not None and Path(checkpoint).is_file():
        # on the CPU first: RNG states must be CPU tensors; the rest is copied onto the model's device
        state = torch.load(checkpoint, weights_only=False, map_location="cpu")
        if state["settings"] != settings.recorded():
            recorded, wanted = state["settings"], settings.recorded()
            changed = sorted(k for k in {*recorded, *wanted} if recorded.get(k) != wanted.get(k))
            raise ValueError(f"checkpoint {checkpoint} is of a run with other settings ({', '.join(changed)} differ); "
                             "delete it to train from the start with these")
        model.load_state_dict(state["model"])
        if modules is not None:
            modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        start = state["step"]
        log(f"resumed from the checkpoint of step {start} ({checkpoint})")
    model.train()
    history = []
    steps = range(start, settings.steps if stop_after is None else min(settings.steps, start + stop_after))
    rows = (batch_indices(len(split), settings.batch_size, settings.seed, step) for step in steps)
    for step, (images, labels) in zip(steps, vision.batches(split, rows, workers, pin_memory=device.type == "cuda")):
        plan = batch_plan(settings.variant, depth, settings.seed, step, settings.layerdrop)
        with autocast(device, settings.precision):
            _, loss = forward(model, modules, plan, images.to(device, non_blocking=True),
                              labels.to(device, non_blocking=True), settings.position_loss_weight)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.append((step, loss.item()))
        done = step + 1
        if checkpoint is not None and (done % settings.checkpoint_every == 0 or done == settings.steps):
            save_checkpoint(Path(checkpoint), done, model, modules, optimizer, scheduler, scaler, settings)
        if done % max(1, settings.steps // 10) == 0:
            log(f"step {done}/{settings.steps}: loss {history[-1][1]:.4f}")
    model.eval()
    return modules, history


def accuracies(model: nn.Module, modules: PositionModules | None, plans: list[plans_module.Plan], split,
               batch_size: int = 256, precision: str = "fp32", workers: int = 0) -> list[float]:
    """Top-1 accuracy of `model` on `split` under each of `plans` (the position modules' hooks
    included), in one pass over the data: each batch is read once, for every plan."""
    model.eval()
    return plan_accuracies(lambda plan, images: forward(model, modules, plan, images)[0], plans, split, device_of(model),
                           batch_size, precision, workers)


@torch.no_grad()
def plan_accuracies(logits_of, plans: list[plans_module.Plan], split, device: torch.device, batch_size: int = 256,
                    precision: str = "fp32", workers: int = 0) -> list[float]:
    """Top-1 accuracy of `logits_of(plan, images)` on `split` under each of `plans`, in one pass over
    the data on `device` (a model's logits, or an ensemble's)."""
    correct = [0] * len(plans)
    rows = (torch.arange(start, min(start + batch_size, len(split))) for start in range(0, len(split), batch_size))
    for images, labels in vision.batches(split, rows, workers, pin_memory=device.type == "cuda"):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        for index, plan in enumerate(plans):
            with autocast(device, precision):
                logits = logits_of(plan, images)
            correct[index] += int((logits.argmax(-1) == labels).sum())
    return [count / len(split) for count in correct]


def accuracy(model: nn.Module, modules: PositionModules | None, plan: plans_module.Plan, split, **options) -> float:
    """Top-1 accuracy of `model` on `split` under `plan` (options: those of `accuracies`)."""
    return accuracies(model, modules, [plan], split, **options)[0]


# ---- `painters train-vision`: one training run (base model, variant, seed) as a workflow job


def checkpoint_beside(out: Path) -> Path:
    """Where a run writing `out` keeps its checkpoint: beside it (not inside: `out` appears whole, at the end)."""
    return out.parent / f".{out.name}.checkpoint.pt"


def save_trained(out: Path, model, modules, settings: TrainSettings, facts: dict, image_processor=None) -> None:
    """The trained model as a folder, published whole (painters.demo.files.building); its image
    processor beside its weights, so that it is scored on images prepared as in training."""
    import json

    from painters.demo.files import building

    with building(out) as folder:
        model.save_pretrained(folder / "model")
        if image_processor is not None:
            image_processor.save_pretrained(folder / "model")
        if modules is not None:
            torch.save(modules.state_dict(), folder / "position_modules.pt")
        (folder / "training.json").write_text(json.dumps({"settings": settings.recorded(), **facts}, indent=2) + "\n")


def select_device(name: str | None) -> torch.device:
    """`--device`: as given, else a CUDA GPU where there is one, else the CPU."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: there is no CUDA GPU here")
    return device


def add_runtime_arguments(parser) -> None:
    """Where a LayerShuffle command runs: not settings of its results."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if there is a GPU, else cpu)")
    parser.add_argument("--workers", type=int, default=0, help="processes reading batches ahead (0: this process)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")


def check_workers(workers: int) -> None:
    if workers < 0:
        raise ValueError(f"--workers {workers} must be >= 0 (0: batches are read in the main process)")


def run_command(args) -> int:
    import time

    from painters.layershuffle import study

    settings = TrainSettings(variant=args.variant, seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                             warmup_steps=args.warmup_steps, layerdrop=args.layerdrop, checkpoint_every=args.checkpoint_every,
                             position_loss_weight=args.position_loss_weight, precision=args.precision)
    settings.check()
    device = select_device(args.device)
    check_precision(settings.precision, device)
    check_workers(args.workers)
    if args.data_dir is not None and args.data != "imagefolder":
        raise ValueError(f"--data-dir is the folder of --data imagefolder, not of {args.data}")
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir is not None else None
    start = read_start(args, data_dir) if args.start is not None else None
    if start is not None:
        data, model = start_model(args, start)
    elif args.model == "tiny":
        data = vision.load_data(args.data, args.data_seed, data_dir=args.data_dir)
        model = vision.tiny_vit(data, layers=args.layers or vision.TINY_LAYERS, hidden=args.hidden, seed=args.seed)
    else:
        from painters.evaluate import IMAGE_PROCESSOR_FILES, check_model_source

        check_model_source(args.model, IMAGE_PROCESSOR_FILES)
        data = vision.load_data(args.data, args.data_seed, data_dir=args.data_dir, image_processor=args.model,
                                trust_remote_code=args.trust_remote_code)
        model = vision.load_vit(args.model, data.num_labels, args.trust_remote_code, seed=args.seed)
    surgery.check_supported(model)
    if args.layers is not None and surgery.num_layers(model) != args.layers:
        raise ValueError(f"--layers {args.layers}: {args.model} has {surgery.num_layers(model)} layers")
    out = Path(args.out)
    model.to(device)
    print(f"training on {device} ({settings.precision}), {len(data.train)} images, {args.workers} data workers", flush=True)
    started = time.perf_counter()
    modules, history = train(model, data.train, settings, checkpoint=checkpoint_beside(out),
                             log=lambda line: print(line, flush=True), workers=args.workers)
    sequential = accuracy(model, modules, BASELINE, data.test, precision=settings.precision, workers=args.workers)
    # how it was trained (settings) and on what; not where (device, workers: the same numbers)
    tiny = args.model == "tiny"
    base = study.trained_from(args.model, args.data, args.data_seed, data_dir, surgery.num_layers(model) if tiny else None,
                              model.config.hidden_size if tiny else None, pretrained=start["settings"] if start else None)
    facts = {"data": args.data, "data_seed": args.data_seed, "data_dir": data_dir, "base_model": args.model, "trained_from": base,
             "test_accuracy_sequential": sequential, "final_loss": history[-1][1] if history else None,
             "seconds": time.perf_counter() - started}
    save_trained(out, model, modules, settings, facts, getattr(data.test, "processor", None))
    checkpoint_beside(out).unlink(missing_ok=True)
    print(f"{settings.variant} seed {settings.seed}: test accuracy in order {sequential:.3f} -> {out}")
    return 0


def read_start(args, data_dir: str | None) -> dict:
    """The facts (training.json) of the folder `--start` names: a model `painters train-vision` wrote,
    trained from the same base model and data (`data_dir` resolved) as this run asks for."""
    folder = Path(args.start)
    facts_file = folder / "training.json"
    if not facts_file.is_file() or not (folder / "model" / "config.json").is_file():
        raise FileNotFoundError(f"--start {folder}: not a trained model folder (expected model/ and training.json, as "
                                "`painters train-vision` writes)")
    import json

    facts = json.loads(facts_file.read_text())
    asked = {"base_model": args.model, "data": args.data, "data_seed": args.data_seed, "data_dir": data_dir}
    differ = [f"{key} {facts.get(key)!r} (this run: {value!r})" for key, value in asked.items() if facts.get(key) != value]
    if differ:
        raise ValueError(f"--start {folder} was trained with other data or from another model: {'; '.join(differ)}")
    return facts


def start_model(args, start: dict):
    """(data, model) of a run that fine-tunes the model of `--start` (its own head, its classes)."""
    import transformers

    folder = Path(args.start) / "model"
    tiny = args.model == "tiny"
    data = vision.load_data(args.data, args.data_seed, data_dir=args.data_dir, image_processor=None if tiny else folder,
                            trust_remote_code=args.trust_remote_code)
    model = transformers.AutoModelForImageClassification.from_pretrained(folder)
    if model.config.num_labels != data.num_labels:
        raise ValueError(f"--start {args.start}: its head has {model.config.num_labels} classes, {args.data} has {data.num_labels}")
    torch.manual_seed(args.seed)  # as tiny_vit and load_vit: what training draws before its own seeding is seeded
    return data, model


def register(subparsers) -> None:
    defaults = TrainSettings()
    parser = subparsers.add_parser("train-vision", help="train a ViT as one LayerShuffle training variant")
    parser.add_argument("--data", default="digits", help=f"image data set: {', '.join(vision.DATASETS)}")
    parser.add_argument("--data-dir", help="the folder of --data imagefolder: DIR/train/CLASS/*.jpg|png and "
                        f"DIR/{' or '.join(vision.TEST_FOLDERS)}/CLASS/...")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the digits' train/test split")
    parser.add_argument("--model", default="tiny", help="`tiny` (a small ViT from scratch) or a ViT/DeiT folder or id")
    parser.add_argument("--layers", type=int, help=f"depth of the tiny ViT (default {vision.TINY_LAYERS}); "
                        "of a pretrained model: checked")
    parser.add_argument("--hidden", type=int, default=64, help="width of the tiny ViT")
    parser.add_argument("--variant", default=defaults.variant, choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--layerdrop", type=float, default=defaults.layerdrop, help="LayerDrop's p")
    parser.add_argument("--position-loss-weight", type=float, default=defaults.position_loss_weight,
                        help="LayerShuffle-predict: weight of the position cross-entropy")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--precision", default=defaults.precision,
                        help=f"{', '.join(PRECISIONS)}: fp32, or mixed precision (fp16 on a GPU only)")
    add_runtime_arguments(parser)
    parser.add_argument("--start", help="fine-tune the model of this folder (one `painters train-vision` wrote, from the "
                        "same --model and data) instead of starting from --model")
    parser.add_argument("--out", required=True, help="folder to write the trained model to (whole, at the end)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.set_defaults(func=run_command)
