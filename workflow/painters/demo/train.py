"""`painters demo-model`: train the demo's tiny Llama on the generated corpus (CPU, a few minutes).

The model sees each training document on its own, as lm-eval will show it a
prompt: starting at position 0, with no BOS token (HFLM adds none for a tokenizer
that does not add one), and ending in </s>, so that generation stops after an
answer. Short documents in a batch are padded on the right and the padding is
masked out of attention and loss.

Determinism: a fixed seed seeds the weights and the batch order, the thread count
is fixed (CPU kernels may sum in a different order with more threads) and torch's
deterministic algorithms are on, so the same seed gives the same weights on the
same machine.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from painters import tiny
from painters.demo.files import building

DEFAULTS = dict(
    steps=1200,
    layers=12,
    hidden=128,
    heads=4,
    batch_tokens=1024,
    lr=3e-3,
    vocab_size=1024,
    threads=2,
)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    params: int
    seconds: float
    final_loss: float  # mean loss over the last steps (the last 5 % or at least one)


@contextmanager
def _deterministic_torch(threads: int):
    """Fixed thread count and deterministic kernels for the block; the previous settings come back after."""
    old_threads, old_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def read_corpus(data_dir: str | Path) -> list[str]:
    data_dir = Path(data_dir)
    corpus = data_dir / "train.txt"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir}: no such folder (make it with `painters demo-data --out {data_dir}`)")
    if not corpus.is_file():
        raise FileNotFoundError(f"--data {data_dir}: it has no train.txt (make it with `painters demo-data --out {data_dir}`)")
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--data {data_dir}: train.txt is empty")
    return lines


def _lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 10 % of the peak."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    data_dir: str | Path,
    out: str | Path,
    seed: int = 0,
    steps: int = DEFAULTS["steps"],
    layers: int = DEFAULTS["layers"],
    hidden: int = DEFAULTS["hidden"],
    heads: int = DEFAULTS["heads"],
    batch_tokens: int = DEFAULTS["batch_tokens"],
    lr: float = DEFAULTS["lr"],
    vocab_size: int = DEFAULTS["vocab_size"],
    threads: int = DEFAULTS["threads"],
    log=print,
) -> TrainResult:
    """Train a Llama causal LM and its tokenizer on DATA_DIR/train.txt; publish both in `out` as a whole."""
    for name, value in (("steps", steps), ("layers", layers), ("batch-tokens", batch_tokens), ("threads", threads)):
        if value < 1:
            raise ValueError(f"--{name} {value}: must be at least 1")
    if hidden < heads or hidden % heads or (hidden // heads) % 2:
        raise ValueError(f"--hidden {hidden}: must be a multiple of 2 x heads ({2 * heads}) so each head has an even size")
    texts = read_corpus(data_dir)
    started = time.perf_counter()
    with _deterministic_torch(threads):
        tokenizer = tiny.train_tokenizer(texts, vocab_size=vocab_size)
        tokenizer.model_max_length = 512  # the model's max_position_embeddings (painters.tiny)
        documents = [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
        model = tiny.tiny_model("llama", vocab_size=len(tokenizer), seed=seed, hidden=hidden, layers=layers, heads=heads)
        model.train()
        params = sum(p.numel() for p in model.parameters())
        log(
            f"demo model: {layers} layers, hidden {hidden}, {params / 1e6:.2f} M parameters, "
            f"vocabulary {len(tokenizer)}, {len(documents)} documents, {steps} steps of about {batch_tokens} tokens"
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
        order = torch.Generator().manual_seed(seed)
        batches: list[list[int]] = []
        losses: list[float] = []
        for step in range(steps):
            if not batches:  # a new epoch in a new seeded order
                batches = _length_buckets(documents, batch_tokens, order)
            batch = [documents[i] for i in batches.pop()]
            input_ids, attention_mask, labels = _pad(batch, tokenizer.pad_token_id)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr)
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
                log(f"  step {step + 1}/{steps}  loss {loss.item():.4f}  ({time.perf_counter() - started:.0f} s)")
    model.eval()
    seconds = time.perf_counter() - started
    tail = losses[-max(1, steps // 20) :]
    final_loss = sum(tail) / len(tail)

    with building(out) as tmp:
        model.save_pretrained(tmp)  # safetensors by default
        tokenizer.save_pretrained(tmp)
    log(f"demo model: trained in {seconds:.1f} s, final loss {final_loss:.4f}, saved to {Path(out).resolve()}")
    return TrainResult(out=Path(out).resolve(), params=params, seconds=seconds, final_loss=final_loss)


def _length_buckets(documents: list[list[int]], batch_tokens: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches (lists of document indices) in a random order, each of about `batch_tokens` tokens.

    Documents of one task have about the same length; batching documents of similar
    length wastes little on padding (mixed batches would pad every row to the
    longest task). Sorting happens within random windows so batches stay varied.
    """
    shuffled = torch.randperm(len(documents), generator=generator).tolist()
    batches, window = [], 4096
    for start in range(0, len(shuffled), window):
        chunk = sorted(shuffled[start : start + window], key=lambda i: len(documents[i]))
        batch: list[int] = []
        for i in chunk:
            if batch and (len(batch) + 1) * len(documents[i]) > batch_tokens:
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


def _pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask, and labels with the padding set to -100 (ignored by the loss)."""
    length = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return input_ids, attention_mask, labels


def run(args: argparse.Namespace) -> int:
    train(
        args.data,
        args.out,
        seed=args.seed,
        steps=args.steps,
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        batch_tokens=args.batch_tokens,
        lr=args.lr,
        vocab_size=args.vocab_size,
        threads=args.threads,
    )
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-model",
        help="train the demo's tiny Llama on the demo corpus",
        description="Train a tiny Llama causal LM and a byte-level BPE tokenizer on DATA/train.txt "
        "(from `painters demo-data`) on the CPU, and save both to OUT (save_pretrained, replaced as a whole).",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="folder written by `painters demo-data`")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch order (default 0)")
    for name, kind in (("steps", int), ("layers", int), ("hidden", int), ("heads", int), ("batch-tokens", int),
                       ("lr", float), ("vocab-size", int), ("threads", int)):
        default = DEFAULTS[name.replace("-", "_")]
        parser.add_argument(f"--{name}", type=kind, default=default, help=f"default {default}")
    parser.set_defaults(func=run)
