"""Throughput of the shared pass on a GPU: a random-init Llama-2-7B-shaped model in bf16 (issue 27).

The plans of one Fig 10 heatmap row (looped parallel at one M, K 1..8, plus the baseline) run
through painters.engine.SweepLM as `painters evaluate` runs them:

  loglikelihood: --contexts contexts of about --context tokens, 4 continuations of 1-5 tokens each,
                 answered for every plan in one shared pass (each distinct schedule prefix once);
  generation:    --prompts prompts of --prompt-tokens tokens, --new-tokens greedy tokens each under
                 every plan, the prompt's prefill shared along the plans' trie, then every plan
                 decoding from its own cache; in both cache modes (exact, reference). A prefill-only
                 run (one new token) first splits the time into prefill and decode.

Throughput does not depend on weight values, so a random-init model measures what a real one would.
Printed per pass: tokens/s, model FLOPs, MFU, and peak memory (torch.cuda.max_memory_allocated)
against the prediction (generation: what SweepLM.generation_batch_size budgets from painters.cost).

FLOPs counted: 2 x the matmul parameters of a layer per token per layer call (Llama: q, k, v, o and
gate, up, down), plus 2 x the lm head's parameters per token wherever logits are made (every position
of a loglikelihood row; the last position of a prompt and every decoded token in generation).
Attention's score and value products (4 x tokens attended x hidden per token per call), norms and
rotary are not counted, so MFU is slightly understated (about 2 % at 1,000 tokens). MFU = counted
FLOPs / seconds / the GPU's dense bf16 peak: H100 SXM and H200 989e12, H100 PCIe 756e12, A100 312e12
(--peak-tflops for another).

    python benchmarks/gpu_throughput.py              # on a GPU: about 2 minutes on an H100 or H200
    python benchmarks/gpu_throughput.py --tiny       # 4 layers of width 64, any device (a CPU: seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time

import torch

STOP = "<never-generated>"  # a stop string no output contains: every plan decodes all its tokens

PEAK_BF16_FLOPS = (  # (name contains, dense bf16 FLOP/s), first match wins
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200 NVL", 835e12), ("H200", 989e12),
    ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("A10G", 70e12), ("L4", 121e12),
)


def peak_flops(device: torch.device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, f"{override_tflops:g} TFLOP/s (--peak-tflops)"
    if device.type != "cuda":
        return None, "unknown for a CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for part, flops in PEAK_BF16_FLOPS:
        if part in name:
            return flops, f"{flops / 1e12:.0f} TFLOP/s dense bf16 ({part})"
    return None, f"unknown for {name} (give --peak-tflops)"


def word_tokenizer(vocab_size: int):
    """A tokenizer whose tokens are the words t4 .. t{V-1}: a prompt of n words is n tokens, and
    decoding gives the words back (special tokens 0-3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"t{i}": i for i in range(4, vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def build_model(args, device: torch.device, dtype: torch.dtype):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device(device):  # made where it runs: a 7B initialized on the CPU takes minutes
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to(device).eval()
    with torch.no_grad():  # special tokens' logits 0: greedy decoding never picks one (an end would stop early)
        model.get_output_embeddings().weight[:4] = 0
    return model


def heatmap_row(n: int, max_k: int):
    from painters import plan as plans

    return [plans.parse("baseline"), *(plans.parse(f"looped_parallel-N{n}-K{k}") for k in range(1, max_k + 1))]


class Flops:
    """The FLOPs counted (see the module's doc) for one model."""

    def __init__(self, model):
        config = model.config
        hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        head_dim = hidden // heads
        self.layer_parameters = hidden * (hidden + 2 * kv_heads * head_dim + hidden) + 3 * hidden * config.intermediate_size
        self.head_parameters = hidden * config.vocab_size
        self.per_call = 2 * self.layer_parameters  # per token per layer call
        self.per_logit = 2 * self.head_parameters  # per position whose logits are made


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_start(device) -> None:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def gib(nbytes) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**30:.2f} GiB"


def held_states(visits) -> int:
    """Most hidden states a loglikelihood pass keeps at once (the branch points still ahead)."""
    most, held = 0, set()
    for visit in visits:
        held = {depth for depth in held if depth <= visit.start} | set(visit.keep)
        most = max(most, len(held))
    return most


def mfu_text(flops_per_second: float, peak: float | None) -> str:
    return f"MFU {100 * flops_per_second / peak:.1f} %" if peak else "MFU n/a"


# ---- the loglikelihood pass


def loglikelihood_requests(args, rng: random.Random):
    requests = []
    for _ in range(args.contexts):
        context = [rng.randrange(4, args.vocab) for _ in range(rng.randrange(args.context * 7 // 8, args.context * 9 // 8 + 1))]
        for _ in range(4):
            requests.append(((None, None), context, [rng.randrange(4, args.vocab) for _ in range(rng.randrange(1, 6))]))
    return requests


def loglikelihood_pass(lm, plan_list, requests) -> None:
    with lm.sweep(plan_list):
        for plan in plan_list:  # the first plan's call answers every plan; the rest read the table
            lm.plan = plan
            lm._loglikelihood_tokens(requests, disable_tqdm=True)


def run_loglikelihood(args, model, tokenizer, plan_list, flops: Flops, peak: float | None, device, weights: int) -> dict:
    import inspect

    from painters import cost, surgery, trie
    from painters.engine import SweepLM

    depth = surgery.num_layers(model)
    schedules = [plan.schedule(depth) for plan in plan_list]
    distinct, separate = trie.distinct_layer_calls(schedules), trie.layer_calls(schedules)
    options = {}
    if "share_contexts" in inspect.signature(SweepLM.__init__).parameters:  # an engine that packs shared contexts
        options["share_contexts"] = not args.own_rows
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, max_length=args.max_length,
                 log=lambda line: print(f"  [painters] {line}"), **options)
    requests = loglikelihood_requests(args, random.Random(1))
    request_tokens = sum(len((context + continuation)[-(args.max_length + 1):]) - 1 for _, context, continuation in requests)
    loglikelihood_pass(lm, plan_list, requests[: 2 * args.batch_size])  # warm-up: kernels, cuBLAS workspaces

    counted = {"real": 0, "padded": 0, "rows": 0, "longest": 0}

    def count(module, inputs):  # every visit runs the embeddings: counted once per plan
        ids = inputs[0]
        counted["real"] += int((ids != 0).sum())
        counted["padded"] += ids.numel()
        counted["rows"] += ids.shape[0]
        counted["longest"] = max(counted["longest"], ids.shape[1])

    handle = model.get_input_embeddings().register_forward_pre_hook(count)
    memory_start(device)
    lm.store.peak_bytes = 0
    started = time.perf_counter()
    try:
        loglikelihood_pass(lm, plan_list, requests)
        synchronize(device)
    finally:
        handle.remove()
    seconds = time.perf_counter() - started
    tokens = counted["real"] / len(plan_list)
    rows = counted["rows"] / len(plan_list)
    counted_flops = tokens * (distinct * flops.per_call + len(plan_list) * flops.per_logit)
    # memory: weights, the kept states, one batch's layer working memory, and three batches of
    # logits (one plan's logits and log-probabilities alive while the next plan's are made; an
    # upper bound where packed rows keep the logits of their scored positions only)
    shape, element = cost.ModelShape.from_config(model.config), cost.dtype_bytes(model.dtype)
    batch, longest = args.batch_size, counted["longest"]
    kept = held_states(trie.walk(schedules)) * batch * longest * shape.hidden_size * element
    working = batch * cost.working_bytes(shape, longest, element)
    logits = 3 * batch * longest * shape.vocab_size * element
    predicted = weights + kept + working + logits
    measured = peak_memory(device)
    rows_kind = "own rows" if not options.get("share_contexts") else "rows, shared contexts packed"
    print(f"loglikelihood: {len(requests)} requests ({request_tokens:,} tokens on rows of their own) as {int(rows)} "
          f"{rows_kind} ({int(tokens):,} tokens computed, longest row {longest}), batch {batch}, "
          f"{len(plan_list)} plans in one pass: {seconds:.2f} s")
    print(f"  {tokens / seconds:,.0f} tokens/s computed for every plan ({request_tokens / seconds:,.0f} request tokens/s, "
          f"{request_tokens * len(plan_list) / seconds:,.0f} request-plan tokens/s); "
          f"{counted_flops:.3e} FLOP counted, {counted_flops / seconds / 1e12:.1f} TFLOP/s, {mfu_text(counted_flops / seconds, peak)}")
    print(f"  layer calls per token: {separate} plan by plan, {distinct} in the shared pass ({separate / distinct:.2f}x less work)")
    print(f"  peak memory {gib(measured)} vs predicted {gib(predicted)} (weights {gib(weights)} + kept states "
          f"{gib(kept)} [measured {gib(lm.store.peak_bytes)}] + working {gib(working)} + logits {gib(logits)})")
    return {"seconds": seconds, "requests": len(requests), "request_tokens": request_tokens, "tokens": tokens,
            "packed": bool(options.get("share_contexts")), "tokens_per_s": tokens / seconds,
            "request_tokens_per_s": request_tokens / seconds,
            "request_plan_tokens_per_s": request_tokens * len(plan_list) / seconds, "flops": counted_flops,
            "mfu": counted_flops / seconds / peak if peak else None, "layer_calls_plan_by_plan": separate,
            "layer_calls_shared": distinct, "peak_bytes": measured, "predicted_bytes": predicted,
            "kept_bytes_measured": lm.store.peak_bytes, "kept_bytes_predicted": kept}


# ---- the generation pass


def generation_requests(args, new_tokens: int, rng: random.Random):
    from lm_eval.api.instance import Instance

    settings = {"until": [STOP], "max_gen_toks": new_tokens, "do_sample": False}
    prompts = [" ".join(f"t{rng.randrange(4, args.vocab)}" for _ in range(args.prompt_tokens)) for _ in range(args.prompts)]
    return [Instance("generate_until", {}, (prompt, dict(settings)), idx=0) for prompt in prompts]


def generate_all(lm, plan_list, requests) -> dict[str, list[str]]:
    outputs = {}
    with lm.sweep(plan_list):
        for plan in plan_list:
            lm.plan = plan
            outputs[plan.key] = lm.generate_until(requests, disable_tqdm=True)
    return outputs


def generation_budget(lm, requests, plan_list, sizes) -> tuple[int, int]:
    """The bytes SweepLM.generation_batch_size budgets at the batch sizes it chose (its own
    arithmetic from painters.cost, as tests/test_generation.py computes it): the most of any plan's
    batch x (cache + kept + working), and of its caches alone."""
    from lm_eval.models.utils import normalize_gen_kwargs

    from painters import cost, surgery, trie

    depth = surgery.num_layers(lm.model)
    shape, element = cost.ModelShape.from_config(lm.model.config), cost.dtype_bytes(lm.model.dtype)
    new_tokens = max(normalize_gen_kwargs(dict(r.args[1]), lm.max_gen_toks)["max_gen_toks"] for r in requests)
    prompt = min(max(len(lm.tok_encode(r.args[0])) for r in requests), lm.max_length - new_tokens)
    schedules = [plan.schedule(depth) for plan in plan_list]
    extra = cost.shared_prefill_bytes(schedules, trie.walk(schedules), shape, prompt, element) + cost.working_bytes(shape, prompt, element)
    caches = {plan.key: cost.cache_bytes(schedule, shape, prompt + new_tokens, element, lm.kv_cache)
              for plan, schedule in zip(plan_list, schedules)}
    return (max(sizes[key] * (cache + extra) for key, cache in caches.items()),
            max(sizes[key] * cache for key, cache in caches.items()))


def run_generation(args, model, tokenizer, plan_list, flops: Flops, peak: float | None, device, weights: int) -> dict:
    from painters import surgery, trie
    from painters.engine import SweepLM

    depth = surgery.num_layers(model)
    schedules = [plan.schedule(depth) for plan in plan_list]
    distinct = trie.distinct_layer_calls(schedules)
    calls = {plan.key: trie.layer_calls([schedule]) for plan, schedule in zip(plan_list, schedules)}
    results, logged = {}, []
    log = lambda line: (logged.append(line), print(f"  [painters] {line}"))  # noqa: E731
    warm = generation_requests(args, 2, random.Random(3))[:2]
    for mode in ("exact", "reference"):  # warm-up: kernels, cuBLAS workspaces, both caches
        generate_all(SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=args.prompts, max_length=args.max_length,
                             kv_cache=mode, log=log), plan_list, warm)

    # the prefill alone (one new token: the prompt's forward, no decoding), shared along the trie
    prefill_requests = generation_requests(args, 1, random.Random(2))
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=args.prompts, max_length=args.max_length, log=log)
    memory_start(device)
    started = time.perf_counter()
    generate_all(lm, plan_list, prefill_requests)
    synchronize(device)
    prefill_seconds = time.perf_counter() - started
    prompt_tokens = args.prompts * args.prompt_tokens
    prefill_flops = prompt_tokens * distinct * flops.per_call + len(plan_list) * args.prompts * flops.per_logit
    print(f"generation prefill: {args.prompts} prompts x {args.prompt_tokens} tokens, {len(plan_list)} plans sharing it "
          f"({distinct} layer calls per token against {trie.layer_calls(schedules)} plan by plan): {prefill_seconds:.2f} s; "
          f"{prompt_tokens / prefill_seconds:,.0f} prompt tokens/s, {prefill_flops / prefill_seconds / 1e12:.1f} TFLOP/s, "
          f"{mfu_text(prefill_flops / prefill_seconds, peak)}")
    results["prefill"] = {"seconds": prefill_seconds, "prompt_tokens": prompt_tokens, "flops": prefill_flops,
                          "mfu": prefill_flops / prefill_seconds / peak if peak else None}

    requests = generation_requests(args, args.new_tokens, random.Random(2))
    for mode in ("exact", "reference"):
        lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=args.prompts, max_length=args.max_length,
                     kv_cache=mode, log=log)
        sizes = lm.generation_batch_size(requests, plan_list)
        budgeted, caches = generation_budget(lm, requests, plan_list, sizes)
        memory_start(device)
        started = time.perf_counter()
        outputs = generate_all(lm, plan_list, requests)
        synchronize(device)
        seconds = time.perf_counter() - started
        generated = {key: sum(len(text.split()) for text in texts) for key, texts in outputs.items()}
        total_generated = sum(generated.values())
        decoded = {key: max(0, count - args.prompts) for key, count in generated.items()}  # the first token is the prefill's
        decode_flops = sum(decoded[key] * (calls[key] * flops.per_call + flops.per_logit) for key in decoded)
        decode_seconds = max(seconds - prefill_seconds, 1e-9)
        weight_reads = sum(math.ceil(args.prompts / sizes[key]) * (args.new_tokens - 1) * calls[key] for key in calls)
        layer_bytes = flops.layer_parameters * model.dtype.itemsize
        measured = peak_memory(device)
        over = measured is not None and measured > weights + budgeted
        print(f"generation {mode}: {args.new_tokens} new tokens x {args.prompts} prompts x {len(plan_list)} plans "
              f"({total_generated:,} generated; batch sizes {sorted(set(sizes.values()))}): {seconds:.2f} s; "
              f"{total_generated / seconds:,.0f} generated tokens/s over all plans, "
              f"{mfu_text((prefill_flops + decode_flops) / seconds, peak)}")
        if seconds - prefill_seconds > 0.1 * seconds:
            print(f"  decode (total - prefill): {sum(decoded.values()) / decode_seconds:,.0f} tokens/s, "
                  f"{decode_flops / decode_seconds / 1e12:.1f} TFLOP/s, {mfu_text(decode_flops / decode_seconds, peak)}, "
                  f"layer weights read at {weight_reads * layer_bytes / decode_seconds / 1e12:.2f} TB/s")
        else:
            print("  decode: too short to tell from the prefill's time")
        print(f"  peak memory {gib(measured)} vs budgeted {gib(weights + budgeted)} (weights {gib(weights)} + batch x "
              f"(cache + kept + working), the largest plan; its caches {gib(caches)}, largest cache a batch held "
              f"{gib(lm.peak_cache_bytes)}){'  OVER BUDGET' if over else ''}")
        results[mode] = {"seconds": seconds, "generated_tokens": total_generated,
                         "generated_tokens_per_s": total_generated / seconds, "decode_tokens_per_s": sum(decoded.values()) / decode_seconds,
                         "decode_flops": decode_flops, "mfu": (prefill_flops + decode_flops) / seconds / peak if peak else None,
                         "batch_sizes": sizes, "peak_bytes": measured, "budgeted_bytes": weights + budgeted,
                         "cache_bytes_budgeted": caches, "cache_bytes_measured": lm.peak_cache_bytes, "over_budget": over}
    results["lowered"] = [line for line in logged if "lowered" in line]
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="4 layers of width 64 and small passes (any device: seconds)")
    parser.add_argument("--device", help="default: cuda if there is a GPU, else cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                        help="default: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--n", type=int, help="the heatmap row's N (M = layers - 2N - 1; default 8, tiny 0)")
    parser.add_argument("--max-k", type=int, default=8, help="looped parallel K 1..MAX_K (default 8)")
    parser.add_argument("--contexts", type=int, help="loglikelihood contexts, 4 requests each (default 64, tiny 6)")
    parser.add_argument("--context", type=int, help="their length in tokens, +-1/8 (default 512, tiny 48)")
    parser.add_argument("--batch-size", type=int, help="loglikelihood batch (default 32, tiny 8)")
    parser.add_argument("--prompts", type=int, help="generation prompts, one batch (default 16, tiny 4)")
    parser.add_argument("--prompt-tokens", type=int, help="tokens per prompt (default 1000, tiny 32)")
    parser.add_argument("--new-tokens", type=int, help="greedy tokens per prompt and plan (default 64, tiny 8)")
    parser.add_argument("--own-rows", action="store_true",
                        help="loglikelihood: every request on a row of its own (no packing of shared contexts)")
    parser.add_argument("--threads", type=int, help="torch threads on a CPU (default 1: a tiny model runs fastest so)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak for MFU, when not detected")
    parser.add_argument("--skip", choices=["loglikelihood", "generation"], action="append", default=[])
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)

    full = dict(layers=32, hidden=4096, intermediate=11008, heads=32, vocab=32000, n=8, contexts=64, context=512,
                batch_size=32, prompts=16, prompt_tokens=1000, new_tokens=64)
    tiny = dict(layers=4, hidden=64, intermediate=172, heads=4, vocab=1000, n=0, contexts=6, context=48,
                batch_size=8, prompts=4, prompt_tokens=32, new_tokens=8)
    for name, value in (tiny if args.tiny else full).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.max_length = 4096
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        print("gpu_throughput: this GPU has no bfloat16: give --dtype float16", file=sys.stderr)
        return 2

    started = time.perf_counter()
    peak, peak_text = peak_flops(device, args.peak_tflops)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    model = build_model(args, device, dtype)
    weights = sum(t.nelement() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    tokenizer = word_tokenizer(args.vocab)
    plan_list = heatmap_row(args.n, args.max_k)
    flops = Flops(model)
    parameters = sum(p.nelement() for p in model.parameters())
    m = args.layers - 2 * args.n - 1
    print(f"gpu_throughput: {where}, peak {peak_text}; torch {torch.__version__}; "
          f"random-init Llama {args.layers} layers x {args.hidden} (intermediate {args.intermediate}, {args.heads} heads, "
          f"vocab {args.vocab}; {parameters / 1e9:.2f} B parameters, {gib(weights)}) in {str(dtype).removeprefix('torch.')}, "
          f"made in {time.perf_counter() - started:.1f} s")
    print(f"plans: baseline + looped_parallel-N{args.n}-K1..K{args.max_k} (one heatmap row, M {m}); FLOPs counted: "
          f"2 x {flops.layer_parameters / 1e6:.1f} M per token per layer call + 2 x {flops.head_parameters / 1e6:.1f} M "
          "per position with logits (attention scores, norms, rotary not counted)")
    results = {"device": where, "peak_flops": peak, "torch": torch.__version__, "dtype": str(dtype), "parameters": parameters,
               "weights_bytes": weights, "plans": [plan.key for plan in plan_list]}
    if "loglikelihood" not in args.skip:
        results["loglikelihood"] = run_loglikelihood(args, model, tokenizer, plan_list, flops, peak, device, weights)
    if "generation" not in args.skip:
        results["generation"] = run_generation(args, model, tokenizer, plan_list, flops, peak, device, weights)
    results["seconds"] = time.perf_counter() - started
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2, default=str)
    over = [mode for mode in ("exact", "reference") if results.get("generation", {}).get(mode, {}).get("over_budget")]
    memory = f"generation memory OVER its budget ({', '.join(over)})" if over else (
        "generation memory within its budget" if device.type == "cuda" else "memory not measured on a CPU")
    print(f"gpu_throughput: ok in {results['seconds']:.0f} s; {memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
