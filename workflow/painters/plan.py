"""Execution plans: how a stack of T transformer layers is run.

A plan's canonical form is its schedule, a tuple of steps; each step is a tuple
of layer indices. A one-layer step runs that layer. A step of several layers
runs them all on the same input and averages their outputs.

Indexing follows the reference code of "Transformer Layers as Painters" (its
prose is inconsistent; the code is the ground truth): N is 0-indexed, layers
0..N and T-N..T-1 run normally, the middle is range(N+1, T-N) and holds
M = T - 2N - 1 layers.

Plain Python with no I/O, so it is tested directly.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

Schedule = tuple[tuple[int, ...], ...]

# Variants that act on the middle range(N+1, T-N) and take N.
MIDDLE_VARIANTS = ("skip", "middle_repeat", "reverse", "random", "parallel", "looped_parallel")
# Variants that act on one layer L (Fig 2 of the paper).
LAYER_VARIANTS = ("skip_layer", "switch")
# LayerShuffle-style variants that act on the whole stack.
STACK_VARIANTS = ("shuffle_all", "prune", "shuffle_prune")
VARIANTS = ("baseline", *MIDDLE_VARIANTS, *LAYER_VARIANTS, *STACK_VARIANTS, "order")

# Key grammar, one pattern per variant; the named groups are the plan's parameters.
_KEY_PATTERNS = {
    "baseline": r"baseline",
    "skip": r"skip-N(?P<N>\d+)",
    "middle_repeat": r"middle_repeat-N(?P<N>\d+)",
    "reverse": r"reverse-N(?P<N>\d+)",
    "random": r"random-N(?P<N>\d+)-S(?P<seed>\d+)",
    "parallel": r"parallel-N(?P<N>\d+)",
    "looped_parallel": r"looped_parallel-N(?P<N>\d+)-K(?P<K>\d+)",
    "skip_layer": r"skip_layer-L(?P<layer>\d+)",
    "switch": r"switch-L(?P<layer>\d+)",
    "shuffle_all": r"shuffle_all-S(?P<seed>\d+)",
    "prune": r"prune-P(?P<percent>\d+)-S(?P<seed>\d+)",
    "shuffle_prune": r"shuffle_prune-P(?P<percent>\d+)-S(?P<seed>\d+)",
    # steps joined by '_', layers of a parallel step joined by '.': order-0_1_3.4_2
    "order": r"order-(?P<order>\d+(?:\.\d+)*(?:_\d+(?:\.\d+)*)*)",
}
KEY_FORMS = ", ".join(
    [
        "baseline",
        "skip-N2",
        "middle_repeat-N2",
        "reverse-N2",
        "random-N2-S0",
        "parallel-N2",
        "looped_parallel-N2-K3",
        "skip_layer-L5",
        "switch-L5",
        "shuffle_all-S0",
        "prune-P20-S0",
        "shuffle_prune-P20-S0",
        "order-0_1_3.4_2",
    ]
)
# What a Snakemake wildcard for a plan key may match (every key above, nothing else).
KEY_WILDCARD_REGEX = re.sub(r"\?P<\w+>", "", "|".join(f"(?:{p})" for p in _KEY_PATTERNS.values()))

_PARAMS_OF = {
    variant: tuple(re.findall(r"\?P<(\w+)>", pattern)) for variant, pattern in _KEY_PATTERNS.items()
}


@dataclass(frozen=True)
class Plan:
    """One way of executing a layer stack; build with `parse(key)` or directly by parameters."""

    variant: str
    N: int | None = None
    K: int | None = None
    seed: int | None = None
    layer: int | None = None
    percent: int | None = None
    order: Schedule | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid variants: {', '.join(VARIANTS)}")
        needed = _PARAMS_OF[self.variant]
        for name in ("N", "K", "seed", "layer", "percent", "order"):
            value = getattr(self, name)
            if name in needed and value is None:
                raise ValueError(f"variant {self.variant!r} needs parameter {name}")
            if name not in needed and value is not None:
                raise ValueError(
                    f"variant {self.variant!r} takes no parameter {name} (it takes: {', '.join(needed) or 'none'})"
                )
        _check_int("N", self.N, low=0)
        _check_int("K", self.K, low=1)
        _check_int("seed", self.seed, low=0)
        _check_int("layer", self.layer, low=0)
        _check_int("percent", self.percent, low=1, high=99)
        if self.order is not None:
            order = tuple(tuple(step) for step in self.order)
            if not order or any(not step for step in order):
                raise ValueError(f"order must be a non-empty sequence of non-empty steps, got {self.order!r}")
            for step in order:
                for index in step:
                    _check_int("order layer index", index, low=0)
            object.__setattr__(self, "order", order)

    # --- identity -----------------------------------------------------------------

    @property
    def key(self) -> str:
        """Canonical, file-name- and wildcard-safe key; parse(plan.key) == plan."""
        v = self.variant
        if v == "baseline":
            return "baseline"
        if v == "random":
            return f"random-N{self.N}-S{self.seed}"
        if v == "looped_parallel":
            return f"looped_parallel-N{self.N}-K{self.K}"
        if v in MIDDLE_VARIANTS:
            return f"{v}-N{self.N}"
        if v in LAYER_VARIANTS:
            return f"{v}-L{self.layer}"
        if v == "shuffle_all":
            return f"shuffle_all-S{self.seed}"
        if v in ("prune", "shuffle_prune"):
            return f"{v}-P{self.percent}-S{self.seed}"
        return "order-" + "_".join(".".join(str(i) for i in step) for step in self.order)

    def __str__(self) -> str:
        return self.key

    # --- semantics ----------------------------------------------------------------

    def check(self, num_layers: int) -> None:
        """Raise ValueError naming the parameter, its value and the valid range if this plan
        cannot run on a stack of `num_layers` layers."""
        T = num_layers
        _check_int("num_layers", T, low=1)
        if self.variant in MIDDLE_VARIANTS:
            max_n = (T - 2) // 2
            if T < 2 or self.N > max_n:
                valid = f"0..{max_n}" if max_n >= 0 else "none (the model is too shallow)"
                raise ValueError(
                    f"{self.key}: N={self.N} leaves M={T - 2 * self.N - 1} affected layers on a "
                    f"{T}-layer model; M must be >= 1, so N must be in {valid}"
                )
        elif self.variant == "skip_layer":
            _check_int(f"{self.key}: layer", self.layer, low=0, high=T - 1)
        elif self.variant == "switch":
            # switch-L swaps layers L and L+1, so L+1 must exist
            if T < 2:
                raise ValueError(f"{self.key}: switch needs at least 2 layers, the model has {T}")
            _check_int(f"{self.key}: layer", self.layer, low=0, high=T - 2)
        elif self.variant in ("prune", "shuffle_prune"):
            if _pruned_count(T, self.percent) >= T:
                raise ValueError(f"{self.key}: pruning {self.percent}% of {T} layers leaves none")
        elif self.variant == "order":
            for step in self.order:
                for index in step:
                    _check_int(f"{self.key}: order layer index", index, low=0, high=T - 1)

    def middle(self, num_layers: int) -> tuple[int, ...]:
        """The affected layers range(N+1, T-N) of a middle variant."""
        return tuple(range(self.N + 1, num_layers - self.N))

    def affected(self, num_layers: int) -> int | None:
        """M, the number of affected layers (0 for baseline); None for variants without an M."""
        self.check(num_layers)
        if self.variant == "baseline":
            return 0
        if self.variant in MIDDLE_VARIANTS:
            return num_layers - 2 * self.N - 1
        return None

    def schedule(self, num_layers: int) -> Schedule:
        """The steps that run, in order, on a stack of `num_layers` layers."""
        self.check(num_layers)
        T, v = num_layers, self.variant
        singles = lambda layers: tuple((i,) for i in layers)  # noqa: E731
        if v == "baseline":
            return singles(range(T))
        if v == "order":
            return self.order
        if v in MIDDLE_VARIANTS:
            bottom, top = singles(range(self.N + 1)), singles(range(T - self.N, T))
            middle = list(self.middle(T))
            if v == "skip":
                steps = ()
            elif v == "middle_repeat":
                steps = singles([T // 2] * len(middle))  # int(T/2), M times
            elif v == "reverse":
                steps = singles(reversed(middle))
            elif v == "random":
                # Same permutation as the reference code's random.seed(S); random.shuffle(middle),
                # without touching the global random state.
                random.Random(self.seed).shuffle(middle)
                steps = singles(middle)
            elif v == "parallel":
                steps = (tuple(middle),)
            else:  # looped_parallel
                steps = (tuple(middle),) * self.K
            return bottom + steps + top
        if v == "skip_layer":
            return singles(i for i in range(T) if i != self.layer)
        if v == "switch":
            layers = list(range(T))
            layers[self.layer], layers[self.layer + 1] = layers[self.layer + 1], layers[self.layer]
            return singles(layers)
        rng = random.Random(self.seed)
        if v == "shuffle_all":
            layers = list(range(T))
            rng.shuffle(layers)
            return singles(layers)
        dropped = set(rng.sample(range(T), _pruned_count(T, self.percent)))
        kept = [i for i in range(T) if i not in dropped]
        if v == "shuffle_prune":
            rng.shuffle(kept)
        return singles(kept)


def _pruned_count(num_layers: int, percent: int) -> int:
    """How many of `num_layers` layers `percent` % prunes (round half up)."""
    return (num_layers * percent + 50) // 100


def _check_int(name: str, value, low: int | None = None, high: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        valid = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value} is out of range; valid: {valid}")


def parse(key: str) -> Plan:
    """The plan a key names. Raises ValueError naming the key and the valid forms."""
    if not isinstance(key, str):
        raise ValueError(f"a plan key must be a string, got {key!r}")
    variant = key.split("-", 1)[0]
    if variant not in _KEY_PATTERNS:
        raise ValueError(f"unknown variant {variant!r} in plan key {key!r}; valid variants: {', '.join(VARIANTS)}")
    match = re.fullmatch(_KEY_PATTERNS[variant], key)
    if not match:
        raise ValueError(f"malformed plan key {key!r}; valid forms: {KEY_FORMS}")
    params = {}
    for name, text in match.groupdict().items():
        if len(text) > 1 and text.startswith("0") and name != "order":
            raise ValueError(f"malformed plan key {key!r}: {name} has a leading zero; valid forms: {KEY_FORMS}")
        if name == "order":
            params[name] = tuple(tuple(int(i) for i in step.split(".")) for step in text.split("_"))
        else:
            params[name] = int(text)
    plan = Plan(variant, **params)
    if plan.key != key:  # e.g. order indices with leading zeros
        raise ValueError(f"malformed plan key {key!r}: its canonical form is {plan.key!r}")
    return plan


def plans_for(
    variant: str,
    num_layers: int,
    *,
    N: list[int] | None = None,
    seeds: list[int] = (0,),
    K: list[int] = (3,),
    layers: list[int] | None = None,
    percents: list[int] = (20,),
) -> list[Plan]:
    """Every valid plan of `variant` on a `num_layers`-layer model.

    N and layers default to every valid value; an explicit value that is invalid for
    this depth raises ValueError (a sweep should not silently drop what a user asked for).
    """
    T = num_layers
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    if variant == "baseline":
        plans = [Plan("baseline")]
    elif variant in MIDDLE_VARIANTS:
        n_values = list(range((T - 2) // 2 + 1)) if N is None else list(N)
        if variant == "random":
            plans = [Plan(variant, N=n, seed=s) for n in n_values for s in seeds]
        elif variant == "looped_parallel":
            plans = [Plan(variant, N=n, K=k) for n in n_values for k in K]
        else:
            plans = [Plan(variant, N=n) for n in n_values]
    elif variant in LAYER_VARIANTS:
        last = T - 1 if variant == "skip_layer" else T - 2
        layer_values = list(range(last + 1)) if layers is None else list(layers)
        plans = [Plan(variant, layer=i) for i in layer_values]
    elif variant == "shuffle_all":
        plans = [Plan(variant, seed=s) for s in seeds]
    elif variant in ("prune", "shuffle_prune"):
        plans = [Plan(variant, percent=p, seed=s) for p in percents for s in seeds]
    else:
        raise ValueError("variant 'order' takes an explicit schedule; build it with parse('order-...')")
    for plan in plans:
        plan.check(T)
    return plans
