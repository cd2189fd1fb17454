"""Shared contexts: the loglikelihood pass with requests that share a context packed into one row
(painters.packing) against each request on its own row (`share_contexts` off: lm-eval's HFLM rows).

Two models, the demo sweep's plans (config/config.yaml) for each benchmark, every task built once
and both ways run in the same process, alternately (best of --repeats):
  - the demo model (results/demo/model) on the demo's loglikelihood benchmarks (demo_choice: one-word
    answers, which HFLM's logits cache already scores from one row; demo_pair: WinoGrande-style, the
    text before the blank shared; demo_cloze: one request per document, nothing to share);
  - a tiny Llama trained here (as the demo trains its model, on a corpus made as the demo makes its
    tasks) on demo_phrase, a multiple-choice task whose four answers are phrases of 6-10 tokens after
    a shared question.
Prints per benchmark: the tokens each way (what the rows hold; the cost model's
painters.packing.token_counts gives the same), the layer-token work of the pass (padded row tokens x
the distinct layer calls of the plans' trie), the wall time of the pass (the engine's
_answer_all_plans, where all the model work is) and of the evaluate() calls around it, the token and
wall ratios (goal: wall ratio >= 80 % of the token ratio), the largest log-likelihood difference, the
greedy flags that differ, and whether the scores agree (`equal`; `close`: the accuracies equal, perplexity
within 1e-6 relative).

Needs the demo model (`snakemake --cores all`, or --model/--tasks). Run it alone: two torch
processes on 2 cores slow each other down many times over.

    python benchmarks/shared_contexts.py [--limit 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# demo_phrase: what one does with a thing of each category, several tokens each (two phrasings)
PHRASES = {
    "animal": (" feed it and take it for a walk in the park", " give it some water and a bit of food"),
    "fruit": (" peel it and eat it after lunch", " cut it in half and share it with a friend"),
    "tool": (" use it to fix the old wooden fence", " work with it in the shed all day"),
    "clothing": (" wear it on a cold and windy day", " put it on before going out in the rain"),
    "vehicle": (" drive it to the town by the river", " ride in it to the station and back"),
}


def phrase_item(rng: random.Random):
    """Four things of four categories; which phrase fits the asked one. Returns (prompt, answer, row)."""
    from painters.demo import world

    categories = rng.sample(world.CATEGORY_NAMES, 4)
    things = [rng.choice(world.CATEGORIES[c][0]) for c in categories]
    gold = rng.randrange(4)
    name = rng.choice(world.NAMES)
    listed = ", ".join(world.article(t) for t in things[:3]) + " and " + world.article(things[3])
    query = f"Question: {name} has {listed}. What can {name} do with the {things[gold]}? Answer:"
    choices = [rng.choice(PHRASES[c]) for c in categories]
    return query, choices[gold], {"query": query, "choices": [c[1:] for c in choices], "gold": gold}


def build_phrase_world(work: Path, n_test: int, n_train: int, steps: int, log=print) -> tuple[Path, Path]:
    """demo_phrase's task folder and a tiny Llama trained on its corpus (as painters.demo does); kept in `work`."""
    from painters.demo import data as demo_data
    from painters.demo import train as demo_train

    tasks, model = work / "tasks", work / "model"
    if (model / "config.json").is_file() and (tasks / "demo_phrase.yaml").is_file():
        return model, tasks
    rng = random.Random("painters-bench/shared-contexts")
    seen, test, corpus = set(), [], []
    while len(test) < n_test:
        query, answer, row = phrase_item(rng)
        if query not in seen:
            seen.add(query)
            test.append(row)
    while len(corpus) < n_train:
        query, answer, _ = phrase_item(rng)
        if query not in seen:
            corpus.append(f"{query}\t{answer[1:]}")
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.txt").write_text("".join(line + "\n" for line in corpus), encoding="utf-8")
    tasks.mkdir(parents=True, exist_ok=True)
    with open(tasks / "demo_phrase.jsonl", "w", encoding="utf-8") as handle:
        for row in test:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    config = demo_data.task_config("demo_choice", tasks / "demo_phrase.jsonl", test)
    config["task"] = "demo_phrase"
    # lm-eval puts a space before each choice (target_delimiter)
    import yaml

    (tasks / "demo_phrase.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    demo_train.train(data, model, seed=0, steps=steps, log=log)
    return model, tasks


def demo_plans(config_file: str) -> tuple[dict[str, set], int]:
    """The demo sweep's plan keys per benchmark, and the demo model's depth."""
    from painters import sweep

    _, plans_of, depth = sweep.first_model_plans(config_file)
    return plans_of, depth


def run_pass(session, benchmark: str, plan_list, limit: int, share: bool) -> dict:
    """One shared pass over `benchmark` for every plan, packed or not: times, tokens, answers, scores."""
    from lm_eval.evaluator import evaluate

    from painters.evaluate import Request, requests_built_once

    lm = session.lm
    task_dict = session.task(benchmark)
    request = Request("bench", tuple(p.key for p in plan_list), (benchmark,), "unused", limit=limit)
    seconds = {"pass": 0.0}
    original = lm._answer_all_plans

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds["pass"] += time.perf_counter() - started

    lm.share_contexts, lm._answer_all_plans = share, timed
    tokens, padded = lm.tokens_computed, lm.tokens_padded
    scores, requests = {}, []
    started = time.perf_counter()
    try:
        with lm.sweep(plan_list), requests_built_once(task_dict):
            for plan in plan_list:
                session.prepare(task_dict, request)
                lm.plan = plan
                with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's progress bars
                    scores[plan.key] = evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=0,
                                                log_samples=False, verbosity="WARNING")["results"]
            answers = {key: dict(table) for key, table in lm._answers.items()}
            requests = list(next(iter(answers.values())).keys()) if answers else []
    finally:
        del lm._answer_all_plans
        lm.share_contexts = True
    return {"wall": time.perf_counter() - started, "pass": seconds["pass"], "tokens": lm.tokens_computed - tokens,
            "padded": lm.tokens_padded - padded, "answers": answers, "scores": scores, "requests": requests}


def compare(session, name: str, benchmarks, plans_of, depth: int, limit: int, repeats: int, rows: list) -> None:
    from painters import packing, plan, trie

    for benchmark in benchmarks:
        plan_list = sorted((plan.parse(key) for key in plans_of[benchmark]), key=lambda p: p.key)
        distinct = trie.distinct_layer_calls([p.schedule(depth) for p in plan_list])
        run_pass(session, benchmark, plan_list, limit, True)  # warm-up: first-call costs of torch and lm-eval
        best = {}
        for _ in range(repeats):
            for share in (False, True):
                result = run_pass(session, benchmark, plan_list, limit, share)
                if share not in best or result["pass"] < best[share]["pass"]:
                    best[share] = result
        off, on = best[False], best[True]
        worst, relative, flags = 0.0, 0.0, 0
        for key, table in on["answers"].items():
            for request, (value, greedy) in table.items():
                expected, expected_greedy = off["answers"][key][request]
                worst = max(worst, abs(value - expected))
                relative = max(relative, abs(value - expected) / max(abs(expected), 1e-30))
                flags += greedy != expected_greedy
        counted = packing.token_counts([((None, None), list(c), list(r)) for c, r in on["requests"]],
                                       session.lm.max_length, session.lm._hidden_size(), int(session.spec.batch_size))
        token_ratio, wall_ratio = off["tokens"] / on["tokens"], off["pass"] / on["pass"]
        rows.append({
            "model": name, "benchmark": benchmark, "plans": len(plan_list), "requests": len(on["requests"]),
            "tokens off": off["tokens"], "tokens on": on["tokens"], "token_counts": counted,
            "layer-token work off": off["padded"] * distinct, "layer-token work on": on["padded"] * distinct,
            "pass off s": off["pass"], "pass on s": on["pass"], "evaluate off s": off["wall"], "evaluate on s": on["wall"],
            "token ratio": token_ratio, "wall ratio": wall_ratio, "of token ratio": wall_ratio / token_ratio,
            "max |d ll|": worst, "max |d ll|/|ll|": relative, "greedy flags differing": flags,
            "scores": scores_agree(on["scores"], off["scores"]),
        })
        print_row(rows[-1])


def scores_agree(on: dict, off: dict) -> str:
    """`equal` (every metric the same), `close` (accuracies the same, the rest, perplexity, within 1e-6
    relative), or `DIFFER`."""
    if on == off:
        return "equal"
    for key, tasks in off.items():
        for task, metrics in tasks.items():
            for name, expected in metrics.items():
                value = on[key][task][name]
                if name.startswith("acc") and value != expected:
                    return "DIFFER"
                if isinstance(expected, float) and abs(value - expected) > 1e-6 * abs(expected):
                    return "DIFFER"
    return "close"


HEADER = (f"{'model':>11} {'benchmark':>12} {'plans':>5} {'reqs':>5} {'tokens off':>10} {'on':>7} {'ratio':>6} "
          f"{'layer-tok work off':>18} {'on':>9} {'pass off':>9} {'on':>7} {'ratio':>6} {'of tok':>6} "
          f"{'max|dll|':>9} {'rel':>7} {'flags':>5} {'scores':>6}")


def print_row(row: dict) -> None:
    assert row["token_counts"] == (row["tokens off"], row["tokens on"]), row["token_counts"]
    print(f"{row['model']:>11} {row['benchmark']:>12} {row['plans']:>5} {row['requests']:>5} {row['tokens off']:>10} "
          f"{row['tokens on']:>7} {row['token ratio']:>5.2f}x {row['layer-token work off']:>18,} "
          f"{row['layer-token work on']:>9,} {row['pass off s']:>8.2f}s {row['pass on s']:>6.2f}s "
          f"{row['wall ratio']:>5.2f}x {row['of token ratio']:>6.0%} {row['max |d ll|']:>9.2g} "
          f"{row['max |d ll|/|ll|']:>7.1g} {row['greedy flags differing']:>5} {row['scores']:>6}", flush=True)


def main() -> None:
    import torch

    from painters.evaluate import ModelSpec, Session

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", default="results/demo/model")
    parser.add_argument("--tasks", default="results/demo/data/tasks")
    parser.add_argument("--benchmarks", nargs="+", default=["demo_choice", "demo_pair", "demo_cloze"])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64, help="the demo config's")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs each way; the fastest counts")
    parser.add_argument("--work", help="folder for demo_phrase's task and model (default: a temporary one)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(2)

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="painters-shared-contexts-") as scratch:
        work = Path(args.work or scratch)
        phrase_model, phrase_tasks = build_phrase_world(work, n_test=args.limit, n_train=6000, steps=args.train_steps,
                                                        log=lambda line: print(line, flush=True))
        print(HEADER)
        for name, model, tasks, benchmarks in (
            ("demo", args.model, args.tasks, args.benchmarks),
            ("phrase-lm", str(phrase_model), str(phrase_tasks), ["demo_phrase"]),
        ):
            session = Session(ModelSpec(model=os.path.abspath(model), dtype="float32", device="cpu",
                                        batch_size=args.batch_size, include_paths=(os.path.abspath(tasks),)),
                              log=lambda _: None)
            depth = session.num_layers
            plans_of, demo_depth = demo_plans(args.configfile)
            if depth != demo_depth:
                raise SystemExit(f"{model}: {depth} layers, the demo sweep's plans are for {demo_depth}")
            plans_of = {b: plans_of.get(b) or plans_of["demo_choice"] for b in benchmarks}
            compare(session, name, benchmarks, plans_of, depth, args.limit, args.repeats, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
