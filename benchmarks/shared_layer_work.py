"""How much layer work a sweep shares: layer calls per token, plan by plan vs over distinct schedule prefixes.

For every (model, benchmark) of a config, the plans' schedules form a trie of shared prefixes
(painters.trie). Prints, per model and in total over every (model, plan, benchmark): the layer
calls when each plan runs on its own, the distinct ones, and their ratio.

    python benchmarks/shared_layer_work.py [--configfile config/paper.yaml]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from painters import plan, sweep, trie


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/paper.yaml")
    args = parser.parse_args()
    config = sweep.read_config([args.configfile])
    models = sweep.enabled_models(config)
    depths = {name: sweep.model_depth(config, name) for name in models}
    plans_of = defaultdict(set)  # (model, benchmark) -> plan keys
    for job in sweep.expand_jobs(config, depths):
        plans_of[job.model, job.benchmark].add(job.plan)
    totals = defaultdict(lambda: [0, 0])
    print(f"{'model':>14} {'benchmark':>16} {'plans':>6} {'plan by plan':>13} {'distinct':>9} {'ratio':>6}")
    for (model, benchmark), keys in sorted(plans_of.items()):
        schedules = [plan.parse(key).schedule(depths[model]) for key in keys]
        each, distinct = trie.layer_calls(schedules), trie.distinct_layer_calls(schedules)
        totals[model][0] += each
        totals[model][1] += distinct
        print(f"{model:>14} {benchmark:>16} {len(keys):>6} {each:>13,} {distinct:>9,} {each / distinct:>6.2f}")
    all_each = sum(each for each, _ in totals.values())
    all_distinct = sum(distinct for _, distinct in totals.values())
    for model, (each, distinct) in totals.items():
        print(f"{model:>14} {'(all)':>16} {'':>6} {each:>13,} {distinct:>9,} {each / distinct:>6.2f}")
    print(f"{'total':>14} {'':>16} {'':>6} {all_each:>13,} {all_distinct:>9,} {all_each / all_distinct:>6.2f}")


if __name__ == "__main__":
    main()
