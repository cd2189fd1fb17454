"""`painters demo-glue`: two small GLUE-style tasks in plain English, for the demo's encoder (MiniLM-L6).

    DIR/demo_sentiment/{train,validation}.jsonl   like SST-2: `sentence`, `label` (1 = positive)
    DIR/demo_paraphrase/{train,validation}.jsonl  like MRPC: `sentence1`, `sentence2`, `label` (1 = same meaning)

Both need more than word lookup, so the order and the context of words matter (and so the
layers that mix them): in demo_sentiment a clause after "but" decides, and "not" flips a
word's polarity; in demo_paraphrase a role swap ("Ann gave the book to Bob" vs "Bob gave the
book to Ann") is not a paraphrase while a passive or a "got ... from" is. Labels are
balanced. Everything comes from `random.Random(seed, task, split)`: the same seed gives the
same bytes; no validation sentence occurs in the training split.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from painters.demo.files import building
from painters.demo.world import NAMES

# the GLUE task whose columns and metrics each follows (glue.custom_tasks in the config)
LIKE = {"demo_sentiment": "sst2", "demo_paraphrase": "mrpc"}
DEFAULT_N_TRAIN, DEFAULT_N_VALIDATION = 256, 200

THINGS = ("movie", "meal", "hotel", "book", "concert", "trip", "game", "show", "service", "room", "song", "class")
GOOD = ("good", "great", "lovely", "wonderful", "excellent", "pleasant", "fun", "superb")
BAD = ("bad", "awful", "boring", "terrible", "dull", "poor", "horrible", "disappointing")
OBJECTS = ("book", "ball", "letter", "key", "cake", "cup", "map", "gift", "phone", "coin")


def _clause(rng: random.Random, thing: str, positive: bool) -> str:
    """A clause with the given polarity: a word of it, or "not" and a word of the other."""
    if rng.random() < 0.35:
        return f"the {thing} was not {rng.choice(BAD if positive else GOOD)}"
    return f"the {thing} was {rng.choice(GOOD if positive else BAD)}"


def sentiment_row(rng: random.Random) -> dict:
    label = rng.randrange(2)
    first, second = rng.sample(THINGS, 2)
    if rng.random() < 0.5:
        sentence = _clause(rng, first, bool(label))
    else:  # the clause after "but" decides
        sentence = f"{_clause(rng, first, not label)} but {_clause(rng, second, bool(label))}"
    return {"sentence": sentence, "label": label}


def paraphrase_row(rng: random.Random) -> dict:
    giver, taker = rng.sample(NAMES, 2)
    thing = rng.choice(OBJECTS)
    sentence1 = f"{giver} gave the {thing} to {taker}"
    label = rng.randrange(2)
    if label:
        sentence2 = rng.choice((f"{taker} got the {thing} from {giver}", f"the {thing} was given to {taker} by {giver}",
                                f"{giver} handed {taker} the {thing}"))
    elif rng.random() < 0.75:  # another object or person: word overlap tells
        other, stranger = rng.choice([o for o in OBJECTS if o != thing]), rng.choice([n for n in NAMES if n not in (giver, taker)])
        sentence2 = rng.choice((f"{giver} handed {taker} the {other}", f"{stranger} got the {thing} from {giver}"))
    else:  # the roles swapped: only word order tells
        sentence2 = rng.choice((f"{taker} gave the {thing} to {giver}", f"{giver} got the {thing} from {taker}",
                                f"the {thing} was given to {giver} by {taker}"))
    return {"sentence1": sentence1, "sentence2": sentence2, "label": label}


ROW_MAKERS = {"demo_sentiment": sentiment_row, "demo_paraphrase": paraphrase_row}


def generate(out: str | Path, seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_validation: int = DEFAULT_N_VALIDATION) -> Path:
    with building(out) as folder:
        for task, make in ROW_MAKERS.items():
            rng = random.Random(f"{seed}-{task}-validation")
            validation = [make(rng) for _ in range(n_validation)]
            held_out = {json.dumps(row, sort_keys=True) for row in validation}
            rng, train = random.Random(f"{seed}-{task}-train"), []
            while len(train) < n_train:
                row = make(rng)
                if json.dumps(row, sort_keys=True) not in held_out:
                    train.append(row)
            (folder / task).mkdir()
            for split, rows in (("train", train), ("validation", validation)):
                (folder / task / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Path(out)


def run(args: argparse.Namespace) -> int:
    folder = generate(args.out, args.seed, args.n_train, args.n_validation)
    print(f"demo GLUE-style tasks {', '.join(ROW_MAKERS)} ({args.n_train} training, {args.n_validation} validation rows) -> {folder}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo-glue", help="generate the demo's GLUE-style tasks for its encoder")
    parser.add_argument("--out", required=True, help="folder to write (replaced as a whole)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN)
    parser.add_argument("--n-validation", type=int, default=DEFAULT_N_VALIDATION)
    parser.set_defaults(func=run)
