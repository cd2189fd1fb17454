import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from painters.plan import MIDDLE_VARIANTS, Plan, parse, plans_for

# The T = 8, N = 2 table of DESIGN.md section 2, derived by hand: middle = (3, 4, 5), M = 3.
T8_TABLE = {
    "baseline": [(0,), (1,), (2,), (3,), (4,), (5,), (6,), (7,)],
    "skip-N2": [(0,), (1,), (2,), (6,), (7,)],
    "middle_repeat-N2": [(0,), (1,), (2,), (4,), (4,), (4,), (6,), (7,)],
    "reverse-N2": [(0,), (1,), (2,), (5,), (4,), (3,), (6,), (7,)],
    "parallel-N2": [(0,), (1,), (2,), (3, 4, 5), (6,), (7,)],
    "looped_parallel-N2-K3": [(0,), (1,), (2,), (3, 4, 5), (3, 4, 5), (3, 4, 5), (6,), (7,)],
    "skip_layer-L5": [(0,), (1,), (2,), (3,), (4,), (6,), (7,)],
    "switch-L5": [(0,), (1,), (2,), (3,), (4,), (6,), (5,), (7,)],
}


@pytest.mark.parametrize("key", sorted(T8_TABLE))
def test_t8_table(key):
    assert list(parse(key).schedule(8)) == T8_TABLE[key]


def test_t8_random_uses_pythons_random_like_the_reference_code():
    middle = [3, 4, 5]
    random.seed(0)
    random.shuffle(middle)
    assert parse("random-N2-S0").schedule(8) == ((0,), (1,), (2,), *((i,) for i in middle), (6,), (7,))


def test_t8_affected():
    assert parse("skip-N2").affected(8) == 3
    assert parse("baseline").affected(8) == 0


def test_t32_n15_affects_only_layer_16():
    plan = parse("reverse-N15")
    assert plan.middle(32) == (16,)
    assert plan.affected(32) == 1
    assert parse("skip-N15").schedule(32) == tuple((i,) for i in range(32) if i != 16)


def test_t32_n13_skip_runs_27_layers():
    assert len(parse("skip-N13").schedule(32)) == 27


def test_t32_random_n13_s0_equals_python_random_permutation():
    middle = list(range(14, 19))
    random.seed(0)
    random.shuffle(middle)
    schedule = parse("random-N13-S0").schedule(32)
    assert [s[0] for s in schedule[14:19]] == middle
    assert schedule[:14] == tuple((i,) for i in range(14))
    assert schedule[19:] == tuple((i,) for i in range(19, 32))


def test_random_does_not_touch_global_random_state():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    parse("random-N1-S5").schedule(10)
    assert random.random() == expected


@pytest.mark.parametrize(
    "key, message",
    [
        ("skip-N4", "N must be in 0..3"),
        ("skip_layer-L8", "valid: 0..7"),
        ("switch-L7", "valid: 0..6"),
        ("order-0_9", "valid: 0..7"),
    ],
)
def test_invalid_for_depth_names_parameter_and_range(key, message):
    with pytest.raises(ValueError, match=message):
        parse(key).schedule(8)


@pytest.mark.parametrize(
    "key, message",
    [
        ("looped_parallel-N2-K0", "K=0 is out of range; valid: >= 1"),
        ("shuffle-N2", "unknown variant 'shuffle'.*valid variants: baseline, skip"),
        ("skip-2", "malformed plan key 'skip-2'; valid forms"),
        ("skip-N2-S0", "malformed plan key"),
        ("skip-N02", "leading zero"),
        ("prune-P100-S0", "percent=100 is out of range; valid: 1..99"),
        ("", "unknown variant ''"),
    ],
)
def test_bad_keys(key, message):
    with pytest.raises(ValueError, match=message):
        parse(key)


def test_plan_parameters_are_checked_on_construction():
    with pytest.raises(ValueError, match="needs parameter N"):
        Plan("skip")
    with pytest.raises(ValueError, match="takes no parameter K"):
        Plan("skip", N=1, K=2)
    with pytest.raises(ValueError, match="unknown variant 'warp'"):
        Plan("warp")


def test_plans_for_lists_every_valid_n():
    assert [p.key for p in plans_for("skip", 8)] == ["skip-N0", "skip-N1", "skip-N2", "skip-N3"]
    assert len(plans_for("random", 12, seeds=[0, 1, 2])) == 6 * 3
    assert [p.key for p in plans_for("switch", 4)] == ["switch-L0", "switch-L1", "switch-L2"]
    with pytest.raises(ValueError, match="N must be in 0..3"):
        plans_for("skip", 8, N=[5])


# --- properties over T in 2..80 and every variant ----------------------------------------------


@st.composite
def plans_and_depths(draw):
    T = draw(st.integers(2, 80))
    variant = draw(
        st.sampled_from(
            ["baseline", *MIDDLE_VARIANTS, "skip_layer", "switch", "shuffle_all", "prune", "shuffle_prune", "order"]
        )
    )
    seed = draw(st.integers(0, 10_000))
    if variant in MIDDLE_VARIANTS:
        N = draw(st.integers(0, (T - 2) // 2))
        extra = {"seed": seed} if variant == "random" else {"K": draw(st.integers(1, 6))} if variant == "looped_parallel" else {}
        plan = Plan(variant, N=N, **extra)
    elif variant == "skip_layer":
        plan = Plan(variant, layer=draw(st.integers(0, T - 1)))
    elif variant == "switch":
        plan = Plan(variant, layer=draw(st.integers(0, T - 2)))
    elif variant == "shuffle_all":
        plan = Plan(variant, seed=seed)
    elif variant in ("prune", "shuffle_prune"):
        percent = draw(st.integers(1, 99).filter(lambda p: (T * p + 50) // 100 < T))
        plan = Plan(variant, percent=percent, seed=seed)
    elif variant == "order":
        steps = draw(st.lists(st.lists(st.integers(0, T - 1), min_size=1, max_size=3), min_size=1, max_size=6))
        plan = Plan(variant, order=tuple(tuple(s) for s in steps))
    else:
        plan = Plan("baseline")
    return plan, T


@settings(max_examples=400, deadline=None)
@given(plans_and_depths())
def test_only_valid_indices_and_key_round_trips(plan_and_T):
    plan, T = plan_and_T
    schedule = plan.schedule(T)
    assert schedule and all(step for step in schedule)
    assert all(0 <= i < T for step in schedule for i in step)
    assert parse(plan.key) == plan


@settings(max_examples=300, deadline=None)
@given(plans_and_depths())
def test_middle_variants_keep_bottom_and_top(plan_and_T):
    plan, T = plan_and_T
    if plan.variant not in MIDDLE_VARIANTS:
        return
    M = plan.affected(T)
    assert M == T - 2 * plan.N - 1
    schedule = plan.schedule(T)
    assert schedule[: plan.N + 1] == tuple((i,) for i in range(plan.N + 1))
    assert schedule[len(schedule) - plan.N :] == tuple((i,) for i in range(T - plan.N, T))
    executed_middle = [i for step in schedule[plan.N + 1 : len(schedule) - plan.N] for i in step]
    if plan.variant == "skip":
        assert executed_middle == []
    elif plan.variant == "middle_repeat":
        assert executed_middle == [T // 2] * M
    elif plan.variant in ("reverse", "random"):
        assert sorted(executed_middle) == list(plan.middle(T))  # a permutation of the middle
    elif plan.variant == "parallel":
        assert schedule[plan.N + 1] == plan.middle(T)
    else:
        assert executed_middle == list(plan.middle(T)) * plan.K


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 80), st.data())
def test_reverse_twice_is_identity_on_the_middle(T, data):
    N = data.draw(st.integers(0, (T - 2) // 2))
    reversed_middle = [step[0] for step in parse(f"reverse-N{N}").schedule(T)[N + 1 : T - N]]
    twice = [reversed_middle[i - (N + 1)] for i in reversed_middle]
    assert twice == list(range(N + 1, T - N))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 80), st.integers(0, 10_000), st.integers(1, 99))
def test_prune_removes_the_stated_share(T, seed, percent):
    dropped = math.floor(Fraction(T * percent, 100) + Fraction(1, 2))  # the share, rounded half up
    if dropped >= T:
        with pytest.raises(ValueError, match="leaves none"):
            parse(f"prune-P{percent}-S{seed}").schedule(T)
        return
    kept = [s[0] for s in parse(f"prune-P{percent}-S{seed}").schedule(T)]
    assert len(kept) == T - dropped
    assert kept == sorted(set(kept))  # order kept, no repeats
    shuffled = [s[0] for s in parse(f"shuffle_prune-P{percent}-S{seed}").schedule(T)]
    assert sorted(shuffled) == sorted(set(shuffled)) and len(shuffled) == T - dropped


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 80), st.integers(0, 10_000))
def test_shuffle_all_is_a_permutation(T, seed):
    assert sorted(s[0] for s in parse(f"shuffle_all-S{seed}").schedule(T)) == list(range(T))
