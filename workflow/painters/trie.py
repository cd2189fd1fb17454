"""The plans of one model as a tree (trie) of shared schedule prefixes.

Every plan runs layers 0..N unchanged, and `looped_parallel-N-K(k+1)` repeats the
first k iterations of `looped_parallel-N-Kk`: two plans whose schedules start
with the same steps compute the same hidden states up to where they part. Walking
the plans depth-first (in the lexicographic order of their schedules) visits each
distinct prefix once, keeping only the states at the branch points still ahead.

Plain Python with no I/O: the counts here are what a sweep costs in layer calls
per token, plan by plan and over distinct prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from painters.plan import Schedule


def layer_calls(schedules: Iterable[Schedule]) -> int:
    """Layer calls per token when every schedule runs on its own."""
    return sum(len(step) for schedule in schedules for step in schedule)


def distinct_layer_calls(schedules: Iterable[Schedule]) -> int:
    """Layer calls per token when each distinct schedule prefix runs once (weighted by its last step)."""
    return prefix_calls({schedule[: depth + 1] for schedule in schedules for depth in range(len(schedule))})


def prefix_calls(prefixes: Iterable[Schedule]) -> int:
    """Layer calls per token to compute each of `prefixes` from the one a step shorter: its last step's layers."""
    return sum(len(prefix[-1]) for prefix in prefixes)


def _common_prefix(a: Schedule, b: Schedule) -> int:
    depth = 0
    while depth < min(len(a), len(b)) and a[depth] == b[depth]:
        depth += 1
    return depth


@dataclass(frozen=True)
class Visit:
    """One plan in the walk: start from the stored state after `start` steps (0: the embeddings),
    compute its remaining steps, and store the states after each depth in `keep` for later visits."""

    plan: int  # index into the schedules given to `walk`
    start: int
    keep: tuple[int, ...]


def walk(schedules: Sequence[Schedule]) -> list[Visit]:
    """A depth-first walk of the schedules' trie: each distinct prefix is computed exactly once.

    Identical schedules are visited one after the other, the later ones computing nothing.
    A state is kept only while a later visit still starts from it, so the states held are
    the branch points of the current path (at most one per depth).
    """
    order = sorted(range(len(schedules)), key=lambda i: schedules[i])
    # shared[j]: steps that the j-th visited schedule shares with the next one
    shared = [_common_prefix(schedules[a], schedules[b]) for a, b in zip(order, order[1:])] + [0]
    visits, start = [], 0
    for position, index in enumerate(order):
        # later visits start from the running minima of `shared`; those deeper than this
        # visit's start are states that it computes and must keep
        keep, lowest = [], None
        for depth in shared[position:]:
            lowest = depth if lowest is None else min(lowest, depth)
            if lowest <= start:
                break
            if lowest not in keep:
                keep.append(lowest)
        visits.append(Visit(plan=index, start=start, keep=tuple(sorted(keep))))
        start = shared[position]
    return visits
