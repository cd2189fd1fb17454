"""The trie of shared schedule prefixes: counts, and a depth-first walk that computes each prefix once."""

from hypothesis import given, settings
from hypothesis import strategies as st

from painters import plan, trie

VARIANTS = ["baseline", "skip", "middle_repeat", "reverse", "random", "parallel", "looped_parallel", "skip_layer",
            "switch", "shuffle_all", "prune"]


def sweep_schedules(T: int, variants, seeds=(0, 1), K=(1, 2, 3, 5)):
    plans = [p for v in variants for p in plan.plans_for(v, T, seeds=list(seeds), K=list(K), percents=[25])]
    return [p.schedule(T) for p in plans]


def replay(schedules, visits):
    """Run the walk on symbolic states (a state is the prefix that made it); return layers computed
    and the most states held at once. Fails if a visit starts from a state that was not kept."""
    held, computed, most = {0: ()}, 0, 0
    for position, visit in enumerate(visits):
        schedule = schedules[visit.plan]
        assert held[visit.start] == schedule[: visit.start]
        for depth in range(visit.start, len(schedule)):
            computed += len(schedule[depth])
            if depth + 1 in visit.keep:
                held[depth + 1] = schedule[: depth + 1]
        most = max(most, len(held) - 1)
        following = visits[position + 1].start if position + 1 < len(visits) else 0
        held = {d: s for d, s in held.items() if d <= following}  # the branch points still ahead
    return computed, most


def test_counts_of_a_hand_made_sweep():
    # T = 8, N = 2: the middle is layers 3, 4, 5
    keys = ["baseline", "skip-N2", "looped_parallel-N2-K1", "looped_parallel-N2-K2", "looped_parallel-N2-K3"]
    schedules = [plan.parse(k).schedule(8) for k in keys]
    assert trie.layer_calls(schedules) == 8 + 5 + 8 + 11 + 14
    # shared (0,)(1,)(2,) = 3; baseline's (3,)(4,)(5,)(6,)(7,) = 5; skip's (6,)(7,) = 2;
    # the looped ladder's (3,4,5) x 3 = 9 and its tail (6,)(7,) once per K = 6
    assert trie.distinct_layer_calls(schedules) == 3 + 5 + 2 + 9 + 6


def test_every_plan_is_visited_once_and_nothing_is_computed_twice():
    schedules = sweep_schedules(12, VARIANTS)
    visits = trie.walk(schedules)
    assert sorted(v.plan for v in visits) == list(range(len(schedules)))
    computed, most = replay(schedules, visits)
    assert computed == trie.distinct_layer_calls(schedules) < trie.layer_calls(schedules)
    assert most <= max(len(s) for s in schedules)


def test_identical_schedules_are_computed_once():
    schedules = [plan.parse("skip-N1").schedule(6), plan.parse("baseline").schedule(6), plan.parse("skip-N1").schedule(6)]
    computed, _ = replay(schedules, trie.walk(schedules))
    assert computed == trie.distinct_layer_calls(schedules) == 6 + 1  # skip-N1 adds only its layer 5


@settings(max_examples=60, deadline=None)
@given(T=st.integers(2, 24), variants=st.lists(st.sampled_from(VARIANTS), min_size=1, unique=True),
       seeds=st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True),
       K=st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True))
def test_the_walk_computes_exactly_the_distinct_prefixes(T, variants, seeds, K):
    variants = [v for v in variants if T >= 3 or v in ("baseline", "skip_layer", "switch", "shuffle_all")]
    if not variants:
        return
    schedules = sweep_schedules(T, variants, seeds, K)
    computed, most = replay(schedules, trie.walk(schedules))
    assert computed == trie.distinct_layer_calls(schedules)
    assert most <= max(len(s) for s in schedules)
