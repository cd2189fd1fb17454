"""The demo world: a small vocabulary and four kinds of templated items.

Every item is drawn from a `random.Random`, so a seed fixes everything. Each
generator returns one `Item`:
- `row`: the lm-eval document (one JSON line of the task's data file);
- `text`: the training document made from the item, exactly the text lm-eval
  scores for the correct answer (prompt + target delimiter + answer);
- `key`: the part of the prompt that identifies the item. No training document
  may contain a test item's key, which keeps test items out of the corpus.

The four kinds mirror the study's benchmarks:
- choice (like ARC): which of four listed objects belongs to a named category;
  needs word categories learned from the corpus.
- pair (like WinoGrande): a sentence with a blank, two options that fill it, and
  an ending scored after each (partial scoring). Half the frames need a property
  of a category ("the apple was sweet"), half need to match the blank to the
  first or the second noun of the sentence.
- cloze (like LAMBADA): the last word is the object a person was said to have;
  needs recall from the context.
- arith (like GSM8K): two or three additions/subtractions on small numbers, solved
  as a chain of equations that ends in "The answer is N."
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = (
    "Ann Bob Cal Dan Eve Fay Gus Hal Ida Jay Kim Lea Max Ned Oli Pam Ray Sam Tom Uma "
    "Val Wes Zoe Amy Ben Dee Eli Fin Gil Ike Joe Kai Liv Mia Nia Ora Pia Rex Sue Ted"
).split()

# category -> (its members, ways to ask for a member, a property only its members have)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "animal": (
        ("cat", "dog", "cow", "horse", "goat", "sheep", "duck", "mouse", "fox", "bear"),
        ("is an animal", "can run"),
        "was hungry",
    ),
    "fruit": (
        ("apple", "pear", "plum", "grape", "lemon", "peach", "cherry", "mango", "melon", "banana"),
        ("is a fruit", "can be eaten"),
        "was sweet",
    ),
    "tool": (
        ("hammer", "saw", "drill", "wrench", "shovel", "axe", "rake", "chisel", "spade", "ladder"),
        ("is a tool", "is used for work"),
        "was sharp",
    ),
    "clothing": (
        ("hat", "coat", "shirt", "sock", "scarf", "glove", "boot", "dress", "belt", "jacket"),
        ("is clothing", "can be worn"),
        "was warm",
    ),
    "vehicle": (
        ("car", "bus", "truck", "bike", "boat", "train", "van", "tram", "ship", "plane"),
        ("is a vehicle", "can carry people"),
        "was fast",
    ),
}
CATEGORY_NAMES = tuple(sorted(CATEGORIES))
OBJECTS = tuple(word for members, _, _ in CATEGORIES.values() for word in members)

# Countable things for the arithmetic stories (already plural).
COUNTABLES = ("apples", "pears", "plums", "pens", "cups", "hats", "coins", "books", "eggs", "balls")
ADD_PHRASES = ("gets {k} more", "buys {k} more", "finds {k} more")
SUBTRACT_PHRASES = ("loses {k}", "gives away {k}", "sells {k}")
ARITH_MAX = 20  # every running total stays in 0..ARITH_MAX
ARITH_STEP_MAX = 9  # each step adds or takes away 1..ARITH_STEP_MAX

# Pair frames that need the blank matched to the sentence's first or second noun:
# (sentence with a blank, ending when the blank is the first noun, ending when it is the second).
MATCH_FRAMES = (
    ("{n} could not put the {a} in the {b} because the _", "was too big.", "was too small."),
    ("{n} gave the {a} to {m} because _", "did not need it.", "wanted it."),
    ("{n} asked {m} for help because _", "was lost.", "knew the way."),
)
# Pair frames that need a category's property; the two nouns are from different categories.
PROPERTY_FRAMES = (
    "{n} saw the {a} and the {b}. The _",
    "There was {an_a} next to {an_b}, and the _",
)

CLOZE_ENDINGS = ("Later {n} looked at the", "Then {n} picked up the", "So {n} showed everyone the")


@dataclass(frozen=True)
class Item:
    key: str  # identifies the item's prompt: no training document may contain a test key
    text: str  # the training document: prompt and correct answer as lm-eval joins them
    row: dict  # the lm-eval document (one JSON line of the task's data file)


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def choice_item(rng: random.Random) -> Item:
    """Four objects from four different categories; ask for the one in a named category."""
    categories = rng.sample(CATEGORY_NAMES, 4)
    words = [rng.choice(CATEGORIES[c][0]) for c in categories]
    gold = rng.randrange(4)
    ask = rng.choice(CATEGORIES[categories[gold]][1])
    listed = ", ".join(article(w) for w in words[:3]) + " and " + article(words[3])
    query = f"Question: {rng.choice(NAMES)} has {listed}. Which one {ask}? Answer:"
    return Item(key=query, text=f"{query} {words[gold]}", row={"query": query, "choices": words, "gold": gold})


def _pair(prefix: str, options: list[str], endings: tuple[str, str], gold: int) -> Item:
    """A WinoGrande-style row: lm-eval scores `ending` after each filled-in context."""
    ending = endings[gold]
    contexts = [prefix.replace("_", option) for option in options]
    # Both contexts share everything up to the blank, and so does the other twin
    # (same sentence, other ending): keying on that keeps both twins out of training.
    key = prefix.split("_")[0]
    row = {"sentence": f"{prefix} {ending}", "options": options, "contexts": contexts, "ending": ending, "gold": gold}
    return Item(key=key, text=f"{contexts[gold]} {ending}", row=row)


def pair_item(rng: random.Random) -> Item:
    """A sentence with a blank, two options for it, and an ending that decides which option fits."""
    gold = rng.randrange(2)
    n, m = rng.sample(NAMES, 2)
    if rng.random() < 0.5:
        cat_a, cat_b = rng.sample(CATEGORY_NAMES, 2)
        a, b = rng.choice(CATEGORIES[cat_a][0]), rng.choice(CATEGORIES[cat_b][0])
        prefix = rng.choice(PROPERTY_FRAMES).format(n=n, a=a, b=b, an_a=article(a), an_b=article(b))
        endings = (CATEGORIES[cat_a][2] + ".", CATEGORIES[cat_b][2] + ".")
        return _pair(prefix, [a, b], endings, gold)
    template, *endings = rng.choice(MATCH_FRAMES)
    a, b = rng.sample(OBJECTS, 2)
    prefix = template.format(n=n, m=m, a=a, b=b)
    options = [a, b] if "{b}" in template else [n, m]
    return _pair(prefix, options, tuple(endings), gold)


def cloze_item(rng: random.Random) -> Item:
    """Two people each have an object; the last word is the object of the one named again."""
    people = rng.sample(NAMES, 2)
    things = rng.sample(OBJECTS, 2)
    asked = rng.randrange(2)
    owners = [f"{p} has {article(t)}" for p, t in zip(people, things)]
    context = f"{owners[0]} and {owners[1]}. " + rng.choice(CLOZE_ENDINGS).format(n=people[asked])
    text = f"{context} {things[asked]}"
    return Item(key=context, text=text, row={"text": text})


def arith_item(rng: random.Random) -> Item:
    """A story of two or three additions/subtractions, solved as a chain of equations."""
    name, things = rng.choice(NAMES), rng.choice(COUNTABLES)
    start = total = rng.randint(2, 9)  # from 2: "has 1 books" reads badly
    phrases, equations = [], []
    for _ in range(rng.choice((2, 3))):
        can_add, can_subtract = total < ARITH_MAX, total >= 1
        if can_add and (not can_subtract or rng.random() < 0.5):
            k = rng.randint(1, min(ARITH_STEP_MAX, ARITH_MAX - total))
            phrases.append(rng.choice(ADD_PHRASES).format(k=k))
            equations.append(f"{total} + {k} = {total + k}.")
            total += k
        else:
            k = rng.randint(1, min(ARITH_STEP_MAX, total))
            phrases.append(rng.choice(SUBTRACT_PHRASES).format(k=k))
            equations.append(f"{total} - {k} = {total - k}.")
            total -= k
    question = (
        f"{name} has {start} {things}. {name} " + ", then ".join(phrases) + f". How many {things} does {name} have now?"
    )
    solution = " ".join(equations) + f" The answer is {total}."
    query = f"Question: {question} Answer:"
    return Item(
        key=query,
        text=f"{query} {solution}",
        row={"question": question, "solution": solution, "target": str(total)},
    )


GENERATORS = {
    "demo_choice": choice_item,
    "demo_pair": pair_item,
    "demo_cloze": cloze_item,
    "demo_arith": arith_item,
}
