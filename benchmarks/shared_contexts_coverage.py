"""Which Hugging Face model families take packed rows (shared contexts)? A generated table.

For every causal-LM family of the installed transformers (painters.families' tiny random-init
model, 6 layers, eager attention), this runs the engine's check (painters.engine._check_packing:
what the config says, then a packed row against rows of their own) and, where the family packs,
a shared pass of a few plans with shared contexts against one without (every request on its own
row, lm-eval's HFLM), on multiple-choice-like requests. One process, a time limit per family.

    python benchmarks/shared_contexts_coverage.py                        # writes docs/shared-contexts-coverage.md
    python benchmarks/shared_contexts_coverage.py --families gemma2 bloom  # print these rows only
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "shared-contexts-coverage.md"
PLANS = ["baseline", "skip-N1", "reverse-N0", "looped_parallel-N0-K2", "random-N0-S0", "parallel-N1"]
FAMILY_TIMEOUT_S = 120


class _Timeout(Exception):
    pass


def _requests(allowed: list[int], seed: int = 3) -> list:
    """Documents of 2-5 continuations after one context, WinoGrande-like pairs, lone requests."""
    import random

    rng = random.Random(seed)

    def tokens(n):
        return [allowed[rng.randrange(len(allowed))] for _ in range(n)]

    requests = []
    for _ in range(4):
        context = tokens(rng.randrange(1, 30))
        requests += [((None, None), context, tokens(rng.choice([1, 2, 3, 5, 8]))) for _ in range(rng.randrange(2, 6))]
        before, ending = tokens(rng.randrange(2, 12)), tokens(rng.randrange(1, 5))
        requests += [((None, None), before + tokens(rng.randrange(1, 3)), ending) for _ in range(2)]
        requests.append(((None, None), tokens(rng.randrange(1, 20)), tokens(rng.randrange(1, 4))))
    return requests


def _answers(lm, plan_list, requests, share: bool) -> dict:
    lm.share_contexts = share
    with lm.sweep(plan_list):
        answers = {}
        for plan in plan_list:
            lm.plan = plan
            answers[plan.key] = lm._loglikelihood_tokens(requests)
    return answers


def check_family(family: str, tokenizer) -> dict:
    from painters import families, surgery
    from painters.engine import SweepLM
    from painters.plan import parse

    try:
        model = families.build_tiny(family, layers=6)
    except Exception as error:  # noqa: BLE001 - any reason it cannot build is the row's reason
        return {"status": "does not build", "detail": families.one_line(error)}
    row = {"class": type(model).__name__}
    reason = surgery.refusal(model)
    if reason is not None:
        return {**row, "status": "surgery refuses it", "detail": reason}
    vocab = model.get_input_embeddings().num_embeddings
    avoided = families._avoided_token_ids(model.config)
    allowed = [i for i in range(1, min(vocab, 256)) if i not in avoided]  # no image or audio placeholders
    text = tokenizer.encode(" ".join(["The quick brown fox jumps over the lazy dog."] * 40))
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=4, log=lambda _: None)
    lm.tok_encode = lambda string, **kwargs: [allowed[t % len(allowed)] for t in text]
    if lm._packing_for_pass() is None:
        return {**row, "status": "falls back", "detail": lm.packing_refusal}
    requests = _requests(allowed)
    plan_list = [parse(key) for key in PLANS]
    before = lm.tokens_computed
    packed = _answers(lm, plan_list, requests, True)
    packed_tokens, before = lm.tokens_computed - before, lm.tokens_computed
    rows = _answers(lm, plan_list, requests, False)
    row_tokens = lm.tokens_computed - before
    if lm.packing_refusal:  # a packed batch failed under a plan: the pass fell back
        return {**row, "status": "falls back", "detail": lm.packing_refusal}
    worst = max(abs(a[0] - b[0]) for key in rows for a, b in zip(packed[key], rows[key]))
    flags = sum(a[1] != b[1] for key in rows for a, b in zip(packed[key], rows[key]))
    kind = lm._packing
    how = ("one mask per layer type" if kind.layer_masks else "one mask") + (
        f", requests of at most {kind.max_input} tokens (a local window)" if kind.max_input else "")
    detail = f"{how}; {row_tokens} -> {packed_tokens} tokens, largest difference {worst:.2g}"
    status = "packs" if flags == 0 and worst < 1e-4 else "packs, differs"
    return {**row, "status": status, "detail": detail + (f", {flags} greedy flags differ" if flags else "")}


def main() -> None:
    import torch
    import transformers

    from painters import families
    from painters.tiny import SAMPLE_TEXT, train_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", help="only these (printed, the table is not written)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = train_tokenizer(SAMPLE_TEXT, vocab_size=256)
    names = args.families or families.causal_lm_families()

    def expire(*_):
        raise _Timeout

    signal.signal(signal.SIGALRM, expire)
    rows = []
    for name in names:
        started = time.perf_counter()
        signal.alarm(FAMILY_TIMEOUT_S)
        try:
            row = check_family(name, tokenizer)
        except _Timeout:
            row = {"status": "fails", "detail": f"no answer in {FAMILY_TIMEOUT_S} s"}
        except Exception as error:  # noqa: BLE001 - the row says how it failed
            row = {"status": "fails", "detail": families.one_line(error)}
        finally:
            signal.alarm(0)
        rows.append({"family": name, **row})
        print(f"{name}: {row['status']} {row.get('detail', '')} ({time.perf_counter() - started:.1f} s)", flush=True)
    if args.families:
        return
    counts = Counter(row["status"] for row in rows)
    built = len(rows) - counts["does not build"] - counts["surgery refuses it"]
    lines = [
        "# Shared contexts: which families take packed rows",
        "",
        "Generated by `python benchmarks/shared_contexts_coverage.py` (do not edit by hand). Each causal-LM",
        "family: a tiny random-init model (6 layers, eager attention) from its config class in the installed",
        f"transformers {transformers.__version__}; the engine's check (painters.engine: attention implementation, forward",
        "arguments, layer types, windows, then a packed row against rows of their own); where it packs, a pass",
        f"of the plans {', '.join(f'`{p}`' for p in PLANS)} on multiple-choice-like requests with shared",
        "contexts against one without (lm-eval's HFLM rows): the tokens each way and the largest log-likelihood",
        "difference (float32; HFLM itself differs by up to a few 1e-5 between batch sizes on these models).",
        "A family that falls back is scored as lm-eval's HFLM scores it, each request on its own row.",
        "",
        f"- families: {len(rows)}; surgery runs {built}",
        f"- **pack: {counts['packs'] + counts['packs, differs']} of {built}**; fall back: {counts['falls back']}; "
        f"fail: {counts['fails']}; surgery refuses: {counts['surgery refuses it']}; do not build: {counts['does not build']}",
        "",
        "| family | model class | result | detail |",
        "|---|---|---|---|",
    ]
    for row in rows:
        detail = str(row.get("detail", "")).replace("|", "\\|")
        lines.append(f"| {row['family']} | {row.get('class', '')} | {row['status']} | {detail} |")
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
