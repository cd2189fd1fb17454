"""Generation in one shared pass (painters.engine) against plan at a time, in one process.

On a generative benchmark (default: the demo's demo_arith) and two sets of plans of the demo
model: the demo sweep's plans of that benchmark, and one heatmap row (looped parallel at K
1..8 at one M, plus every variant at one N). The model is loaded and the tasks are built once;
per set and cache mode:
  (a) plan at a time: evaluate() once per plan, each plan a pass of its own (nothing shared);
      in exact mode also lm-eval's own HFLM on the model under surgery.apply, whose answers
      the pass must equal;
  (b) one pass: the same evaluate() calls with all plans in one SweepLM pass (the prompt's
      prefill shared along the plans' trie).
Prints layer calls and wall time of both, whether the generations are identical, and the
largest cache a batch held against the prediction of painters.cost for the longest prompt.

Needs the demo built (`snakemake --cores all`, or `painters demo-data` and `painters demo-model`;
or give --model and --tasks). Run it alone: two torch processes on 2 cores slow each other down.

    python benchmarks/generation_pass.py [--limit 100] [--max-gen-toks 48]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    from lm_eval.evaluator import evaluate

    from painters import cost, surgery, sweep, trie
    from painters import plan as plans
    from painters.evaluate import ModelSpec, Request, Session, requests_built_once

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", default="results/demo/model")
    parser.add_argument("--tasks", default="results/demo/data/tasks")
    parser.add_argument("--benchmark", default="demo_arith")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-gen-toks", type=int, default=48, help="as config/config.yaml")
    parser.add_argument("--row-M", type=int, default=7, help="the heatmap row's affected layers")
    args = parser.parse_args()

    model_name, demo_plans, depth = sweep.first_model_plans(args.configfile)
    N = (depth - 1 - args.row_M) // 2
    row = [f"looped_parallel-N{N}-K{k}" for k in range(1, 9)] + [
        "baseline", f"skip-N{N}", f"middle_repeat-N{N}", f"reverse-N{N}", f"random-N{N}-S0", f"parallel-N{N}"]
    plan_sets = {"demo sweep": sorted(demo_plans.get(args.benchmark) or {"baseline"}), f"heatmap row M={args.row_M}": row}

    session = Session(ModelSpec(model=os.path.abspath(args.model), dtype="float32", device="cpu",
                                batch_size=args.batch_size, include_paths=(os.path.abspath(args.tasks),)),
                      log=lambda _: None)
    lm, task_dict = session.lm, session.task(args.benchmark)
    shape, calls = cost.ModelShape.from_config(session.model.config), [0]
    for layer in surgery.layer_list(session.model):
        layer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def run(plan_list, kv_cache: str, together: bool, hflm: bool = False):
        request = Request(model_name, tuple(p.key for p in plan_list), (args.benchmark,), "unused", limit=args.limit,
                          gen_kwargs={"max_gen_toks": args.max_gen_toks}, kv_cache=kv_cache)
        lm.kv_cache, lm.peak_cache_bytes, calls[0] = kv_cache, 0, 0
        outputs, started = {}, time.perf_counter()
        for group in [plan_list] if together else [[p] for p in plan_list]:
            with lm.sweep([] if hflm else group), requests_built_once(task_dict):
                for p in group:
                    session.prepare(task_dict, request)
                    lm.plan = None if hflm else p
                    with surgery.apply(session.model, p) if hflm else _nothing():
                        output = evaluate(lm=lm, task_dict=task_dict, limit=args.limit, bootstrap_iters=0,
                                          log_samples=True, verbosity="WARNING")
                    # a snapshot: the next evaluate() refills the same requests' response lists
                    outputs[p.key] = json.dumps([s["resps"] for s in output["samples"][args.benchmark]])
        return time.perf_counter() - started, calls[0], outputs, lm.peak_cache_bytes

    print(f"{args.benchmark}, limit {args.limit}, max_gen_toks {args.max_gen_toks}, batch {args.batch_size}, {depth} layers")
    print(f"{'plans':>22} {'cache':>9} {'n':>3} {'calls each':>10} {'calls pass':>10} {'each s':>7} {'pass s':>7} "
          f"{'ratio':>6} {'same':>5} {'cache peak':>10} {'predicted':>10}")
    for name, keys in plan_sets.items():
        plan_list = [plans.parse(key) for key in keys]
        for kv_cache in ("exact", "reference"):
            run(plan_list[:2], kv_cache, True)  # warm-up
            each_s, each_calls, each, _ = run(plan_list, kv_cache, False)
            pass_s, pass_calls, together, peak = run(plan_list, kv_cache, True)
            same = together == each
            if kv_cache == "exact":
                same = same and together == run(plan_list, kv_cache, False, hflm=True)[2]
            instances = [i for task in task_dict["tasks"].values() for i in task.instances]
            prompt = max(len(lm.tok_encode(i.args[0])) for i in instances)
            batch = min(args.batch_size, len(instances))
            predicted = max(batch * cost.cache_bytes(p.schedule(depth), shape, prompt + args.max_gen_toks, 4, kv_cache)
                            for p in plan_list)
            print(f"{name:>22} {kv_cache:>9} {len(plan_list):>3} {each_calls:>10} {pass_calls:>10} {each_s:>7.1f} "
                  f"{pass_s:>7.1f} {each_s / pass_s:>5.2f}x {str(same):>5} {peak / 2**20:>8.1f}Mi {predicted / 2**20:>8.1f}Mi")
        schedules = [p.schedule(depth) for p in plan_list]
        print(f"{'':>22} (trie: {trie.layer_calls(schedules)} layer calls per token plan by plan, "
              f"{trie.distinct_layer_calls(schedules)} distinct)")


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
