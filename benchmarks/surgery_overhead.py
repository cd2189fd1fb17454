"""Forward-pass overhead of surgery: the baseline plan under `apply()` against the untouched model.

The two are timed interleaved in one process (untouched, plan, untouched, plan, ...)
so drift in machine load hits both alike; each figure is the median of the repeats.
Target: ratio (plan / untouched) <= 1.02.

    python benchmarks/surgery_overhead.py                 # CPU: tiny and mid-size Llama
    python benchmarks/surgery_overhead.py --llama2-7b     # GPU: random-init Llama-2-7B architecture, bf16
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--llama2-7b", action="store_true", help="random-init Llama-2-7B architecture in bf16 (GPU)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
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
