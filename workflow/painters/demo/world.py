"""The demo world: a small vocabulary and four kinds of templated items.

Every item is drawn from a `random.Random`, so a seed fixes everything. Each
generator returns one `Item`:
- `row`: the lm-eval document (one JSON line of the task's data file);
- `prompt` + `answer`: the text lm-eval scores for the correct answer, split where
  the scored part begins (`answer` starts with the space lm-eval puts there);
- `more`: what a training document goes on with after the answer (cloze: a second
  question about the same context, so each document teaches more reading back);
- `key`: the prompt. No training document may contain a test item's key, which
  keeps test items out of the corpus.

Texts are single lines, so the corpus holds one document per line.

The four kinds mirror the study's benchmarks:
- choice (like ARC): which of four listed objects belongs to a named category;
  needs word categories learned from the corpus.
- pair (like WinoGrande): a sentence with a blank, two options that fill it, and
  an ending scored after each (partial scoring). Most frames need a property of a
  category ("the apple was sweet"); one needs the blank matched to the first or the
  second noun of the sentence ("could not put the A in the B because the A was too big").
- cloze (like LAMBADA): a person has three things of different categories and the
  last word is the one an action fits ("... ate the" -> the fruit); which fruit it
  is can only be read back from the context.
- arith (like GSM8K): a story of two additions/subtractions on small numbers, solved
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
# Small numbers keep the table of facts small enough to learn in a couple of CPU minutes.
ARITH_STEPS = 2
ARITH_MAX = 12  # every running total stays in 0..ARITH_MAX
ARITH_STEP_MAX = 5  # each step adds or takes away 1..ARITH_STEP_MAX

# Pair frames that need a category's property; the two nouns are from different categories.
PROPERTY_FRAMES = (
    "{n} saw the {a} and the {b}. The _",
    "There was {an_a} next to {an_b}, and the _",
    "{n} looked at the {a}, then at the {b}. The _",
)
# A frame that needs the blank matched to the sentence's first or second noun:
# (sentence with a blank, ending when the blank is the first noun, ending when it is the second).
MATCH_FRAME = ("{n} could not put the {a} in the {b} because the _", "was too big.", "was too small.")
PROPERTY_SHARE = 0.75  # of pair items; the rest use MATCH_FRAME

# Cloze: actions that only fit one category, and openers for the last sentence.
CLOZE_ACTIONS = {
    "animal": ("fed", "petted"),
    "fruit": ("ate", "peeled"),
    "tool": ("fixed the fence with", "worked with"),
    "clothing": ("wore", "put on"),
    "vehicle": ("drove", "rode"),
}
CLOZE_TIMES = ("Later", "Then", "After lunch")


@dataclass(frozen=True)
class Item:
    prompt: str  # what lm-eval gives the model before the scored text
    answer: str  # the correct scored text, with its leading space
    row: dict  # the lm-eval document (one JSON line of the task's data file)
    more: str = ""  # training only: what the document goes on with after the answer

    @property
    def key(self) -> str:
        """No training document may contain a test item's key."""
        return self.prompt

    @property
    def text(self) -> str:
        """The item as lm-eval scores its correct answer."""
        return self.prompt + self.answer


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
    return Item(prompt=query, answer=f" {words[gold]}", row={"query": query, "choices": words, "gold": gold})


def pair_item(rng: random.Random) -> Item:
    """A WinoGrande-style twin: a blank, two options for it, and an ending that decides which one fits.

    lm-eval scores the ending after each filled-in context. Both contexts share the
    sentence up to the blank, and so does the item's twin (same sentence, other
    ending): that shared part is the prompt, so keying on it keeps both twins out
    of training.
    """
    gold = rng.randrange(2)
    n = rng.choice(NAMES)
    if rng.random() < PROPERTY_SHARE:
        cat_a, cat_b = rng.sample(CATEGORY_NAMES, 2)
        a, b = rng.choice(CATEGORIES[cat_a][0]), rng.choice(CATEGORIES[cat_b][0])
        sentence = rng.choice(PROPERTY_FRAMES).format(n=n, a=a, b=b, an_a=article(a), an_b=article(b))
        ending = (CATEGORIES[cat_a][2], CATEGORIES[cat_b][2])[gold] + "."
    else:
        template, *endings = MATCH_FRAME
        a, b = rng.sample(OBJECTS, 2)
        sentence = template.format(n=n, a=a, b=b)
        ending = endings[gold]
    options = [a, b]
    before_blank = sentence.split("_")[0]
    row = {
        "sentence": f"{sentence} {ending}",
        "options": options,
        "contexts": [before_blank + option for option in options],
        "ending": ending,
        "gold": gold,
    }
    return Item(prompt=before_blank.rstrip(" "), answer=f" {options[gold]} {ending}", row=row)


def cloze_item(rng: random.Random) -> Item:
    """A person has three things of different categories; the last word is the one an action fits."""
    name = rng.choice(NAMES)
    categories = rng.sample(CATEGORY_NAMES, 3)
    things = [rng.choice(CATEGORIES[c][0]) for c in categories]
    asked, also = rng.sample(range(3), 2)
    times = rng.sample(CLOZE_TIMES, 2)

    def action(i: int) -> str:
        return rng.choice(CLOZE_ACTIONS[categories[i]])

    context = f"{name} had {article(things[0])}, {article(things[1])} and {article(things[2])}."
    prompt = f"{context} {times[0]} {name} {action(asked)} the"
    text = f"{prompt} {things[asked]}"
    more = f". {times[1]} {name} {action(also)} the {things[also]}."
    return Item(prompt=prompt, answer=f" {things[asked]}", row={"text": text}, more=more)


def arith_item(rng: random.Random) -> Item:
    """A story of additions/subtractions, solved as a chain of equations."""
    name, things = rng.choice(NAMES), rng.choice(COUNTABLES)
    start = total = rng.randint(2, 9)  # from 2: "has 1 books" reads badly
    phrases, equations = [], []
    for _ in range(ARITH_STEPS):
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
    return Item(prompt=query, answer=f" {solution}", row={"question": question, "solution": solution, "target": str(total)})


GENERATORS = {
    "demo_choice": choice_item,
    "demo_pair": pair_item,
    "demo_cloze": cloze_item,
    "demo_arith": arith_item,
}
