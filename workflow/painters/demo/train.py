"""`painters demo-model`: train the demo's tiny Llama on the generated corpus (CPU, a few minutes).

The model sees each training document on its own, as lm-eval will show it a
prompt: starting at position 0, with no BOS token (HFLM adds none for a tokenizer
that does not add one), and ending in </s>, so that generation stops after an
answer. Documents are packed into rows of ROW_TOKENS tokens; position ids restart
at each document, from which transformers builds a block-diagonal causal mask, so
no document sees another. A batch thus mixes all tasks with little padding.

Two choices make a 12-layer, 128-wide stack learn the tasks in a couple of CPU
minutes (each measured on this corpus; without them the reading-back tasks stay
near chance in that budget):
- the loss of prompt tokens (before the tab of a corpus line) is weighted down
  (PROMPT_WEIGHT): they are mostly random names and objects, and their noisy
  gradient drowns what the tasks test;
- the output projections of every layer (attention o_proj, MLP down_proj) start
  small (RESIDUAL_INIT_SCALE), so each layer starts close to the identity and the
  deep stack trains like a shallow one at first; with a moderate learning rate.

Training variants (`--variant`, LayerShuffle, arXiv 2407.04513): every batch runs under the plan
`painters.layershuffle.training.batch_plan` draws for it, applied with `painters.surgery.apply`:
`sequential` (the layers in order, the default), `layershuffle` (all layers in a new random order)
or `layerdrop` (each layer dropped with probability 0.2). The paper's position variants
(layershuffle_position, layershuffle_predict) add modules hooked into a vision model's layers and
a position loss; they are not built for this language model. The variant and the settings are
recorded in the model folder's training.json.

Determinism: a fixed seed seeds the weights and the batch order, the thread count
is fixed (CPU kernels may sum in a different order with more threads) and torch's
deterministic algorithms are on, so the same seed gives the same weights on the
same machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from painters import surgery, tiny
from painters.demo.files import building
from painters.layershuffle.training import batch_plan

VARIANTS = ("sequential", "layershuffle", "layerdrop")  # the LayerShuffle training variants without position modules

PROMPT_WEIGHT = 0.1
RESIDUAL_INIT_SCALE = 0.05
ROW_TOKENS = 128  # longer than any document of the demo corpus (arith: about 50 tokens)

DEFAULTS = dict(
    steps=750,
    layers=12,
    hidden=128,
    heads=4,
    batch_tokens=1024,
    lr=3e-4,
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


def read_corpus(data_dir: str | Path) -> list[tuple[str, int]]:
    """The documents of DATA_DIR/train.txt, each as (text, where its answer starts); a line without a tab is all answer."""
    data_dir = Path(data_dir)
    corpus = data_dir / "train.txt"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir}: no such folder (make it with `painters demo-data --out {data_dir}`)")
    if not corpus.is_file():
        raise FileNotFoundError(f"--data {data_dir}: it has no train.txt (make it with `painters demo-data --out {data_dir}`)")
    documents = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if line.strip():
            answer_start = line.find("\t") + 1  # 0 when there is no tab
            documents.append((line.replace("\t", " ", 1), answer_start))
    if not documents:
        raise ValueError(f"--data {data_dir}: train.txt is empty")
    return documents


def encode(tokenizer, documents: list[tuple[str, int]]) -> list[tuple[list[int], list[float]]]:
    """Token ids (with </s> appended) and per-token loss weights of each document."""
    encoded = tokenizer([text for text, _ in documents], return_offsets_mapping=True)
    result = []
    for (_, answer_start), ids, offsets in zip(documents, encoded["input_ids"], encoded["offset_mapping"]):
        # a token belongs to the answer when it ends past the answer's first character
        weights = [1.0 if end > answer_start else PROMPT_WEIGHT for _, end in offsets]
        result.append((ids + [tokenizer.eos_token_id], weights + [1.0]))
    return result


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
    variant: str = "sequential",
    log=print,
) -> TrainResult:
    """Train a Llama causal LM and its tokenizer on DATA_DIR/train.txt as `variant`; publish both in `out` as a whole."""
    if variant not in VARIANTS:
        raise ValueError(f"--variant {variant}: valid for the language model: {', '.join(VARIANTS)} "
                         "(layershuffle_position and layershuffle_predict are built for vision models only)")
    for name, value in (("steps", steps), ("layers", layers), ("batch-tokens", batch_tokens), ("threads", threads)):
        if value < 1:
            raise ValueError(f"--{name} {value}: must be at least 1")
    if hidden < heads or hidden % heads or (hidden // heads) % 2:
        raise ValueError(f"--hidden {hidden}: must be a multiple of 2 x heads ({2 * heads}) so each head has an even size")
    corpus = read_corpus(data_dir)
    started = time.perf_counter()
    with _deterministic_torch(threads):
        tokenizer = tiny.train_tokenizer((text for text, _ in corpus), vocab_size=vocab_size)
        tokenizer.model_max_length = 512  # the model's max_position_embeddings (painters.tiny)
        documents = encode(tokenizer, corpus)
        model = tiny.tiny_model("llama", vocab_size=len(tokenizer), seed=seed, hidden=hidden, layers=layers, heads=heads)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    parameter.mul_(RESIDUAL_INIT_SCALE)
        model.train()
        params = sum(p.numel() for p in model.parameters())
        log(
            f"demo model: {layers} layers, hidden {hidden}, {params / 1e6:.2f} M parameters, "
            f"vocabulary {len(tokenizer)}, {len(documents)} documents, {steps} steps of about {batch_tokens} tokens, "
            f"trained as {variant}"
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
        order = torch.Generator().manual_seed(seed)
        batches: list[list[list[int]]] = []
        losses: list[float] = []
        for step in range(steps):
            if not batches:  # a new epoch in a new seeded order
                batches = _packed_batches(documents, batch_tokens, order)[::-1]
            rows = [[documents[i] for i in row] for row in batches.pop()]
            input_ids, position_ids, weights = _pack(rows, tokenizer.pad_token_id)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, lr)
            # no attention mask and no cache: transformers then reads the packing from the position ids
            with surgery.apply(model, batch_plan(variant, layers, seed, step)):
                logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
            loss = _weighted_loss(logits, input_ids, weights)
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
        settings = dict(variant=variant, seed=seed, steps=steps, layers=layers, hidden=hidden, heads=heads,
                        batch_tokens=batch_tokens, lr=lr, vocab_size=vocab_size, threads=threads)
        facts = dict(final_loss=final_loss, seconds=seconds)
        (tmp / "training.json").write_text(json.dumps({"settings": settings, **facts}, indent=2) + "\n")
    log(f"demo model: trained in {seconds:.1f} s, final loss {final_loss:.4f}, saved to {Path(out).resolve()}")
    return TrainResult(out=Path(out).resolve(), params=params, seconds=seconds, final_loss=final_loss)


def _packed_batches(
    documents: list[tuple[list[int], list[float]]], batch_tokens: int, generator: torch.Generator
) -> list[list[list[int]]]:
    """One epoch in a random order: batches of rows, each row a list of document indices that fit in ROW_TOKENS."""
    rows, row, used = [], [], 0
    for i in torch.randperm(len(documents), generator=generator).tolist():
        length = len(documents[i][0])
        if row and used + length > ROW_TOKENS:
            rows.append(row)
            row, used = [], 0
        row.append(i)
        used += length
    rows.append(row)
    per_batch = max(1, batch_tokens // ROW_TOKENS)
    return [rows[start : start + per_batch] for start in range(0, len(rows), per_batch)]


def _pack(
    rows: list[list[tuple[list[int], list[float]]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, position ids (restarting at every document) and loss weights (0 on the padding) of packed rows."""
    length = max(sum(len(ids) for ids, _ in row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    # the padding counts as one more document (its positions restart too), so nothing attends to it
    position_ids = torch.arange(length).repeat(len(rows), 1)
    weights = torch.zeros((len(rows), length))
    for r, row in enumerate(rows):
        start = 0
        for ids, token_weights in row:
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            position_ids[r, start:end] = torch.arange(len(ids))
            weights[r, start:end] = torch.tensor(token_weights)
            start = end
        position_ids[r, start:] = torch.arange(length - start)
    return input_ids, position_ids, weights


def _weighted_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, each predicted token weighted by its weight (a weighted mean)."""
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
    )
    target_weights = weights[:, 1:].reshape(-1)
    return (per_token * target_weights).sum() / target_weights.sum()


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
        variant=args.variant,
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
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weights, the batch order and the variant's draws (default 0)")
    parser.add_argument("--variant", default="sequential", metavar="VARIANT",
                        help=f"how each batch runs the layers: {', '.join(VARIANTS)} (default sequential)")
    for name, kind in (("steps", int), ("layers", int), ("hidden", int), ("heads", int), ("batch-tokens", int),
                       ("lr", float), ("vocab-size", int), ("threads", int)):
        default = DEFAULTS[name.replace("-", "_")]
        parser.add_argument(f"--{name}", type=kind, default=default, help=f"default {default}")
    parser.set_defaults(func=run)
