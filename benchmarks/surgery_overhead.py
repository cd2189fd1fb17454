"""Forward-pass overhead of surgery: the baseline plan under `apply()` against the untouched model.

The two are timed interleaved in one process (untouched, plan, untouched, plan, ...)
so drift in machine load hits both alike; each figure is the median of the repeats.
Target: ratio (plan / untouched) <= 1.02.

    python benchmarks/surgery_overhead.py                 # CPU: tiny and mid-size Llama
    python benchmarks/surgery_overhead.py --families      # CPU: tiny models of several families (below)
    python benchmarks/surgery_overhead.py --llama2-7b     # GPU: random-init Llama-2-7B architecture, bf16

--families also times a reordering plan (reverse-N0: every call but the first wrapped) against
the same model rebuilt with those layers physically in place (painters.exactness), which is
what the wrappers cost. Tiny models are the worst case: the per-call Python work weighs most
against a layer's arithmetic there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from painters.plan import parse
from painters.surgery import apply


def llama(hidden: int, layers: int, heads: int, intermediate: int, vocab: int, kv_heads: int | None = None):
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def time_forward(model, ids, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    model(input_ids=ids, use_cache=False)
    synchronize(device)
    return time.perf_counter() - start


def measure(name: str, model, batch: int, length: int, repeats: int, device: str) -> None:
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    baseline = parse("baseline")
    for _ in range(3):  # warm-up both paths
        time_forward(model, ids, device)
        with apply(model, baseline):
            time_forward(model, ids, device)
    untouched, planned = [], []
    for _ in range(repeats):
        untouched.append(time_forward(model, ids, device))
        with apply(model, baseline):
            planned.append(time_forward(model, ids, device))
    t_untouched, t_planned = statistics.median(untouched), statistics.median(planned)
    tokens = batch * length
    print(
        f"{name:<28} layers={model.config.num_hidden_layers:<3} hidden={model.config.hidden_size:<5} "
        f"tokens/pass={tokens:<6} untouched={t_untouched * 1e3:9.2f} ms ({tokens / t_untouched:10.0f} tok/s)  "
        f"plan={t_planned * 1e3:9.2f} ms ({tokens / t_planned:10.0f} tok/s)  ratio={t_planned / t_untouched:.4f}",
        flush=True,
    )


FAMILIES = ["llama", "gemma2", "gpt2", "qwen3_moe", "gpt_oss", "falcon", "bert", "vit"]


@torch.no_grad()
def seconds_of(forward) -> float:
    start = time.perf_counter()
    forward()
    return time.perf_counter() - start


def interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of `first()` and `second()` (each returns the seconds it timed), alternately, after a warm-up."""
    for _ in range(3):
        first(), second()
    times = [(first(), second()) for _ in range(repeats)]
    return statistics.median(t for t, _ in times), statistics.median(t for _, t in times)


def measure_families(repeats: int) -> None:
    from painters import exactness, families

    baseline, reverse = parse("baseline"), parse("reverse-N0")
    for family in FAMILIES:
        kind = "encoder" if family in families.ENCODER_FAMILIES else "causal_lm"
        model = families.build_tiny(family, layers=12, kind=kind)
        inputs = families.example_inputs(model, batch=4, length=64)
        if kind == "causal_lm":
            inputs["use_cache"] = False

        def untouched(target=model):
            return seconds_of(lambda: target(**inputs))

        def under(plan):
            def run():  # the forward inside the plan; entering and leaving it are timed apart
                with apply(model, plan):
                    return seconds_of(lambda: model(**inputs))
            return run

        def enter_and_leave():
            start = time.perf_counter()
            with apply(model, reverse):
                pass
            return time.perf_counter() - start

        plain, planned = interleaved(untouched, under(baseline), repeats)
        rebuilt = exactness.rebuilt_model(model, reverse)
        physical, wrapped = interleaved(lambda: untouched(rebuilt), under(reverse), repeats)
        switch = statistics.median(enter_and_leave() for _ in range(repeats))
        print(
            f"{family:<10} {type(model).__name__:<22} 12 layers  untouched={plain * 1e3:6.2f} ms  "
            f"baseline plan={planned * 1e3:6.2f} ms  ratio={planned / plain:.3f} | "
            f"reverse-N0: rebuilt={physical * 1e3:6.2f} ms  surgery={wrapped * 1e3:6.2f} ms  ratio={wrapped / physical:.3f} | "
            f"apply enter+exit={switch * 1e3:.2f} ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--llama2-7b", action="store_true", help="random-init Llama-2-7B architecture in bf16 (GPU)")
    parser.add_argument("--families", action="store_true", help="tiny models of several families (CPU)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.families:
        measure_families(args.repeats)
        return
    if args.llama2_7b:
        device = "cuda"
        with torch.device(device):
            model = llama(4096, 32, 32, 11008, 32000).to(torch.bfloat16).eval()
        for batch, length in [(1, 512), (8, 512), (4, 2048)]:
            measure("llama-2-7b-arch bf16", model, batch, length, args.repeats, device)
        return
    device = "cpu"
    measure("tiny llama (fp32)", llama(64, 4, 4, 128, 512).eval(), 4, 64, args.repeats * 4, device)
    measure("mid llama (fp32)", llama(512, 8, 8, 1376, 8000).eval(), 4, 128, args.repeats, device)


if __name__ == "__main__":
    main()
