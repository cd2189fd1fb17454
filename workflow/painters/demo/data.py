"""`painters demo-data`: generate the demo corpus and its lm-eval benchmark suite.

Output folder (written as a whole, see painters.demo.files):

    DIR/train.txt              training corpus, one document per line; a tab marks where
                               the prompt ends and the answer begins (it stands for a space)
    DIR/similarity.txt         held-out texts for the layer-similarity figure, one per line
    DIR/tasks/demo_*.yaml      one lm-eval task per benchmark (TaskManager(include_path=DIR/tasks))
    DIR/tasks/demo_*.jsonl     its test documents

Test items are drawn first; training items whose key (world.Item.key) is a test
key are drawn again, so no test prompt occurs in the corpus. Everything comes
from `random.Random` streams seeded by (seed, task, split): the same seed gives
byte-identical files, and changing --n-train leaves the test items unchanged.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from painters.demo import world
from painters.demo.files import building

TASKS = tuple(world.GENERATORS)  # demo_choice, demo_pair, demo_cloze, demo_arith
DEFAULT_N_TEST = 200  # scored items per task
DEFAULT_N_TRAIN = 40_000  # training documents in all
# Share of the corpus per task: the tasks that need reading back from the context
# (cloze) or a table of facts (arith) take longer to learn than word categories.
TRAIN_SHARES = {"demo_choice": 0.2, "demo_pair": 0.15, "demo_cloze": 0.4, "demo_arith": 0.25}
N_SIMILARITY = 8  # held-out texts per task in similarity.txt

# Generation settings of demo_arith: a solution is at most ~30 tokens, and it ends
# with </s> (HFLM always stops there) or at the next "Question:".
ARITH_MAX_GEN_TOKS = 40
ARITH_ANSWER_REGEX = r"The answer is (\-?[0-9]+)"


def _rng(seed: int, task: str, split: str) -> random.Random:
    # str seeds hash with SHA-512 in Python's random: stable across runs and platforms
    return random.Random(f"painters-demo/{seed}/{task}/{split}")


def draw_items(
    generator: Callable[[random.Random], world.Item],
    rng: random.Random,
    count: int,
    exclude: set[str],
    max_tries_per_item: int = 100,
) -> list[world.Item]:
    """`count` items whose keys are pairwise distinct and not in `exclude` (which grows by them)."""
    items: list[world.Item] = []
    tries = 0
    while len(items) < count:
        tries += 1
        if tries > max_tries_per_item * max(count, 1):
            raise ValueError(f"could not draw {count} distinct items: the template space is too small")
        item = generator(rng)
        if item.key not in exclude:
            exclude.add(item.key)
            items.append(item)
    return items


def training_line(item: world.Item) -> str:
    """One corpus line: prompt, a tab in place of the space before the answer, answer (and more).

    The trainer reads the tab as a space and weights the loss of what follows it
    more (painters.demo.train), so that the gradient goes to what the tasks test
    rather than to the random names and objects of the prompts.
    """
    if not item.answer.startswith(" "):
        raise ValueError(f"answer {item.answer!r} must start with the space lm-eval puts before it")
    return f"{item.prompt}\t{item.answer[1:]}{item.more}"


def task_config(task: str, data_file: Path, rows: list[dict]) -> dict:
    """The lm-eval task YAML (as a dict) for `task`, reading `data_file` (an absolute path)."""
    common = {
        "task": task,
        "dataset_path": "json",
        # absolute: lm-eval resolves relative data_files against the current directory
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
    }
    if task == "demo_choice":
        specific = {
            "output_type": "multiple_choice",
            "doc_to_text": "{{query}}",
            "doc_to_choice": "choices",
            "doc_to_target": "gold",
            "metric_list": [_metric("acc"), _metric("acc_norm")],
        }
        baseline = {"acc": 0.25, "acc_norm": 0.25}
    elif task == "demo_pair":
        # Partial scoring as in lm-eval's winogrande: doc_to_text gives the gold index
        # (an int, so lm-eval puts the choices in the context), each choice is the
        # sentence filled in up to the blank, and only the ending after it is scored.
        specific = {
            "output_type": "multiple_choice",
            "doc_to_text": "gold",
            "doc_to_choice": "contexts",
            "doc_to_target": "ending",
            "metric_list": [_metric("acc")],
        }
        baseline = {"acc": 0.5}
    elif task == "demo_cloze":
        # As lm-eval's lambada_openai: the context is all but the last word, which is scored.
        specific = {
            "output_type": "loglikelihood",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                _metric("acc"),
            ],
        }
        baseline = {"acc": 0.0, "perplexity": None}  # no chance level for perplexity
    elif task == "demo_arith":
        # As lm-eval's gsm8k (0-shot): generate a worked solution, extract the number after
        # "The answer is", compare it with the target exactly.
        specific = {
            "output_type": "generate_until",
            "doc_to_text": "Question: {{question}} Answer:",
            "doc_to_target": "{{target}}",
            "generation_kwargs": {
                "until": ["\n", "Question:", "</s>"],
                "do_sample": False,
                "max_gen_toks": ARITH_MAX_GEN_TOKS,
            },
            "filter_list": [
                {
                    "name": "strict-match",
                    "filter": [
                        {"function": "regex", "regex_pattern": ARITH_ANSWER_REGEX},
                        {"function": "take_first"},
                    ],
                }
            ],
            "metric_list": [
                {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True}
            ],
        }
        # always answering the most common target scores this much
        majority = Counter(row["target"] for row in rows).most_common(1)[0][1] / len(rows)
        baseline = {"exact_match": round(majority, 6)}
    else:
        raise ValueError(f"unknown demo task {task!r}; valid: {', '.join(TASKS)}")
    return {**common, **specific, "metadata": {"version": 1.0, "random_baseline": baseline}}


class _Dumper(yaml.SafeDumper):
    """Writes strings with a newline in double quotes ("\\n"), which reads better than YAML's folded form."""


_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None),
)


def _metric(name: str) -> dict:
    return {"metric": name, "aggregation": "mean", "higher_is_better": True}


def generate(out: str | Path, seed: int = 0, n_test: int = DEFAULT_N_TEST, n_train: int = DEFAULT_N_TRAIN) -> Path:
    """Write the demo data folder `out` (replacing an existing one); returns its absolute path."""
    if n_test < 1 or n_train < len(TASKS):
        raise ValueError(f"--n-test {n_test} / --n-train {n_train}: need at least 1 test item and {len(TASKS)} documents")
    final = Path(out).resolve()
    tests: dict[str, list[world.Item]] = {}
    held_out: list[str] = []
    train_lines: list[str] = []
    for task, generator in world.GENERATORS.items():
        used: set[str] = set()
        drawn = draw_items(generator, _rng(seed, task, "test"), n_test + N_SIMILARITY, used)
        tests[task] = drawn[:n_test]
        held_out += [item.text for item in drawn[n_test:]]
        # `used` now holds every test and similarity key: training items avoid them
        count = max(1, round(n_train * TRAIN_SHARES[task]))
        train_lines += [training_line(item) for item in draw_items(generator, _rng(seed, task, "train"), count, used)]
    # one mixed corpus: the trainer reads it in order of its own shuffle, but a mixed file reads better
    _rng(seed, "all", "corpus").shuffle(train_lines)

    with building(final) as tmp:
        (tmp / "train.txt").write_text("".join(f"{line}\n" for line in train_lines), encoding="utf-8")
        (tmp / "similarity.txt").write_text("".join(f"{text}\n" for text in held_out), encoding="utf-8")
        (tmp / "tasks").mkdir()
        for task, items in tests.items():
            rows = [item.row for item in items]
            with open(tmp / "tasks" / f"{task}.jsonl", "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, sort_keys=True) + "\n")
            # the YAML names the data file where it will be once the folder is published
            config = task_config(task, final / "tasks" / f"{task}.jsonl", rows)
            with open(tmp / "tasks" / f"{task}.yaml", "w", encoding="utf-8") as handle:
                yaml.dump(config, handle, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
    return final


def run(args: argparse.Namespace) -> int:
    out = generate(args.out, seed=args.seed, n_test=args.n_test, n_train=args.n_train)
    print(f"demo data: {out} ({len(TASKS)} tasks x {args.n_test} test items, {args.n_train} training documents)")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="generate the demo corpus and lm-eval task suite",
        description="Generate the demo world: DIR/train.txt (corpus), DIR/similarity.txt and DIR/tasks/ "
        f"(lm-eval task YAMLs: {', '.join(TASKS)}). Deterministic in --seed; replaces DIR as a whole.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--n-test", type=int, default=DEFAULT_N_TEST, help=f"test items per task (default {DEFAULT_N_TEST})")
    parser.add_argument(
        "--n-train", type=int, default=DEFAULT_N_TRAIN, help=f"training documents in all tasks together (default {DEFAULT_N_TRAIN})"
    )
    parser.set_defaults(func=run)
