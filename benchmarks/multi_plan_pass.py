"""One shared pass for many plans (painters.engine) against plan at a time, in one process.

On the demo model and the demo sweep's plans (config/config.yaml) for each loglikelihood
benchmark: the model is loaded and the lm-eval tasks are built once, then
  (a) plan at a time: evaluate() once per plan with the model under surgery.apply;
  (b) one pass:       the same evaluate() calls, all plans answered by SweepLM's shared pass,
                      the requests built once (as `painters evaluate` does).
Prints both wall times, their ratio, the layer-call ratio of the plans' trie
(painters.trie: layer calls plan by plan / distinct ones) and the wall ratio as a share of
it (goal: >= 80 %), the largest memory the kept branch states held, and checks that both
ways give the same scores.

Needs the demo built (`snakemake --cores all`, or give --model and --tasks). Run it alone:
two torch processes on 2 cores slow each other down many times over.

    python benchmarks/multi_plan_pass.py [--limit 100] [--benchmarks demo_choice demo_pair demo_cloze]
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main() -> None:
    from lm_eval.evaluator import evaluate

    from painters import plan, surgery, sweep, trie
    from painters.evaluate import ModelSpec, Request, Session, requests_built_once

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", default="results/demo/model")
    parser.add_argument("--tasks", default="results/demo/data/tasks")
    parser.add_argument("--benchmarks", nargs="+", default=["demo_choice", "demo_pair", "demo_cloze"])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bootstrap-iters", type=int, default=1000, help="as the workflow default")
    args = parser.parse_args()

    model_name, plans_of, depth = sweep.first_model_plans(args.configfile)

    session = Session(ModelSpec(model=os.path.abspath(args.model), dtype="float32", device="cpu",
                                batch_size=args.batch_size, include_paths=(os.path.abspath(args.tasks),)),
                      log=lambda _: None)
    print(f"{'benchmark':>12} {'plans':>5} {'layer calls':>11} {'plan at a time':>15} {'one pass':>9} "
          f"{'wall ratio':>10} {'of layer ratio':>14} {'kept states':>11}")
    for benchmark in args.benchmarks:
        plan_list = sorted((plan.parse(key) for key in plans_of[benchmark]), key=lambda p: p.key)
        schedules = [p.schedule(depth) for p in plan_list]
        layer_ratio = trie.layer_calls(schedules) / trie.distinct_layer_calls(schedules)
        request = Request(model_name, tuple(p.key for p in plan_list), (benchmark,), "unused", limit=args.limit)
        task_dict = session.task(benchmark)

        def run_all(shared: bool) -> tuple[float, dict]:
            scores = {}
            started = time.perf_counter()
            with session.lm.sweep(plan_list if shared else []), requests_built_once(task_dict) if shared else nullcontext():
                for p in plan_list:
                    session.prepare(task_dict, request)
                    session.lm.plan = p if shared else None
                    if shared:
                        output = evaluate(lm=session.lm, task_dict=task_dict, limit=args.limit,
                                          bootstrap_iters=args.bootstrap_iters, verbosity="WARNING")
                    else:
                        with surgery.apply(session.model, p):
                            output = evaluate(lm=session.lm, task_dict=task_dict, limit=args.limit,
                                          bootstrap_iters=args.bootstrap_iters, verbosity="WARNING")
                    scores[p.key] = output["results"]
            return time.perf_counter() - started, scores

        run_all(True)  # warm-up (first-call costs of torch and lm-eval)
        each_seconds, each_scores = run_all(False)
        session.lm.store.peak_bytes = 0
        pass_seconds, pass_scores = run_all(True)
        if pass_scores != each_scores:
            raise SystemExit(f"{benchmark}: the pass and plan at a time gave different scores")
        wall_ratio = each_seconds / pass_seconds
        print(f"{benchmark:>12} {len(plan_list):>5} {layer_ratio:>10.2f}x {each_seconds:>14.1f}s {pass_seconds:>8.1f}s "
              f"{wall_ratio:>9.2f}x {wall_ratio / layer_ratio:>13.0%} {session.lm.store.peak_bytes / 2**20:>9.1f} MiB")


if __name__ == "__main__":
    main()
