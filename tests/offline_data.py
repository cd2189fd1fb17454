"""Made-up rows in the schema of each default benchmark's hub data set, written as local files.

Shared by the tests of the offline overrides and of `painters evaluate`.
"""

import json
import random

from painters.benchmarks import LOCAL_DATA

ROWS = 20
WORDS = "red green blue small large river stone bird tree cloud quick slow warm cold".split()


def sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# Made-up rows in each hub data set's schema (all of its columns, as `to_json` exports them).
def arc_row(rng, i):
    labels = ["A", "B", "C", "D"] if i % 5 else ["1", "2", "3"]  # ARC has a few 3-choice, numeric-label items
    return {
        "id": f"Mercury_{i}",
        "question": sentence(rng) + "?",
        "choices": {"text": [sentence(rng, 2) for _ in labels], "label": labels},
        "answerKey": rng.choice(labels),
    }


def hellaswag_row(rng, i):
    ctx_a, ctx_b = sentence(rng), sentence(rng, 3)
    return {
        "ind": i,
        "activity_label": "Walking [title] outdoors",
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": f"{ctx_a} {ctx_b}",
        "endings": [sentence(rng, 4) for _ in range(4)],
        "source_id": f"activitynet~v_{i}",
        "split": "val",
        "split_type": "indomain",
        "label": str(rng.randrange(4)),
    }


def winogrande_row(rng, i):
    return {
        "sentence": f"The {rng.choice(WORDS)} bird sat on the _ because it was {rng.choice(WORDS)}.",
        "option1": "stone",
        "option2": "tree",
        "answer": rng.choice(["1", "2"]),
    }


def lambada_row(rng, i):
    return {"text": sentence(rng, 12)}


def gsm8k_row(rng, i):
    a, b = rng.randrange(10), rng.randrange(10)
    return {"question": f"A bird has {a} stones and finds {b} more. How many?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}


ROW_MAKERS = {
    "arc_challenge": arc_row,
    "arc_easy": arc_row,
    "hellaswag": hellaswag_row,
    "winogrande": winogrande_row,
    "lambada_openai": lambada_row,
    "gsm8k": gsm8k_row,
}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_data_dir(data_dir, benchmarks=tuple(ROW_MAKERS)):
    rng = random.Random(0)
    for name in benchmarks:
        for relative in LOCAL_DATA[name].files.values():
            write_jsonl(data_dir / relative, [ROW_MAKERS[name](rng, i) for i in range(ROWS)])
    return data_dir


def write_fewshot_task(folder, data_dir, name: str = "arc_easy_3shot", shots: int = 3):
    """A user's few-shot task: lm-eval's arc_easy, 3-shot, reading the local rows of `data_dir`.

    Returns the folder to give as an include path."""
    from pathlib import Path

    import yaml

    from painters.benchmarks import _lm_eval_tasks_dir

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "include": str(_lm_eval_tasks_dir() / LOCAL_DATA["arc_easy"].builtin_yaml),
        "task": name,
        "tag": None,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {s: str(Path(data_dir) / f) for s, f in LOCAL_DATA["arc_easy"].files.items()}},
        "num_fewshot": shots,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder
