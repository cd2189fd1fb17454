"""One forward pass of a batch answered for many plans: each distinct schedule prefix runs once.

The plans of one model share prefixes of their schedules (every Painters plan runs layers 0..N
as the baseline does). Per batch, `SharedPass.walk` visits the plans depth-first in the trie of
their schedules (painters.trie.walk) and runs the model's own forward for each, under surgery
whose calls are wrapped by `Resume`: a call inside the prefix the visit shares with the one
before it is skipped and hands on the stored state; the states at branch points still ahead
are kept (`PrefixStore`, at most one per depth). Outputs equal the plan-at-a-time ones: a
skipped call gives the very tensor the same computation produced before.

Used by the lm-eval engine (painters.engine) and the image classifiers' evaluation
(painters.vision_sweep). Plain torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from torch import nn

from painters import surgery, trie
from painters.plan import Plan


class PrefixStore:
    """Hidden states of the current batch after `depth` steps, for the visits still to come."""

    resuming = True  # a loglikelihood forward always resumes (generation's store only in a prefill)

    def __init__(self):
        self.states: dict[int, object] = {}
        self.start = 0  # the current visit takes the state after this many steps
        self.keep: tuple[int, ...] = ()  # and stores the states after these depths
        self.peak_bytes = 0  # the most the kept states held at once (memory is measured, not assumed)

    def begin(self, start: int, keep: tuple[int, ...]) -> None:
        # a state deeper than where this visit starts is recomputed by it: drop the old one
        for depth in [d for d in self.states if d > start]:
            del self.states[depth]
        self.start, self.keep = start, keep

    def put(self, depth: int, output) -> None:
        self.states[depth] = output
        held = sum(surgery.output_state(state).nelement() * surgery.output_state(state).element_size() for state in self.states.values())
        self.peak_bytes = max(self.peak_bytes, held)

    def replay(self, slot: int) -> None:
        """A skipped call's cache entry (none: loglikelihood runs without a cache)."""


class Resume(surgery.LayerView):
    """One call of step `depth` of a plan: skipped (giving the stored state) inside the prefix
    that the visit shares with earlier ones, computed after it; the step's last call stores
    the state where a later visit starts."""

    def __init__(self, call: nn.Module, depth: int, ends_step: bool, slot: int, store):
        super().__init__()
        self.wrapped, self.depth, self.ends_step, self.slot, self.store = call, depth, ends_step, slot, store

    def forward(self, hidden_states, *args, **kwargs):
        store = self.store
        if not store.resuming:  # a decoding step of generation: every call runs
            return self.wrapped(hidden_states, *args, **kwargs)
        if self.depth < store.start:
            store.replay(self.slot)
            return store.states[store.start]
        output = self.wrapped(hidden_states, *args, **kwargs)
        if self.ends_step and self.depth + 1 in store.keep:
            store.put(self.depth + 1, output)
        return output


def resumable(calls: nn.ModuleList, schedule, store) -> nn.ModuleList:
    """Each of a plan's calls wrapped by Resume, knowing its step, whether it ends the step, and its slot."""
    depths, ends = surgery.call_steps(schedule), surgery.ends_of_steps(schedule)
    return nn.ModuleList(Resume(call, depth, end, slot, store)
                         for slot, (call, depth, end) in enumerate(zip(calls, depths, ends)))


class SharedPass:
    """The walk of `plans` over `model`'s layer stack, prepared once and run per batch."""

    def __init__(self, model: nn.Module, plans: Sequence[Plan], store: PrefixStore | None = None):
        layers = surgery.layer_list(model)
        schedules = [plan.schedule(len(layers)) for plan in plans]
        self.model, self.plans = model, list(plans)
        self.store = store if store is not None else PrefixStore()
        self.visits = trie.walk(schedules)
        self.steps = [resumable(surgery.build_steps(layers, schedule), schedule, self.store) for schedule in schedules]

    def walk(self, forward: Callable[[], object]) -> Iterator[tuple[int, object]]:
        """(plan index, `forward()` under that plan) for every plan, in walk order, on one batch."""
        try:
            for visit in self.visits:
                self.store.begin(visit.start, visit.keep)
                with surgery.apply(self.model, self.plans[visit.plan], steps=self.steps[visit.plan]):
                    output = forward()
                yield visit.plan, output
        finally:
            self.store.states.clear()
