"""The sweep engine: one pass over a benchmark's requests answers them for many plans.

lm-eval still builds the requests and computes the metrics; `SweepLM` is the model
side. Asked for one plan's log-likelihoods, it computes them for every plan of the
pass at once. Per batch, the plans are visited depth-first in the trie of their
schedules (painters.trie), so each distinct schedule prefix runs once: a plan starts
from the hidden states where it parts from the plans before it, and the states at the
branch points still ahead are kept until the batch ends (one per depth at most).
The other plans' answers wait in a table keyed by the request's tokens until
lm-eval asks for them: evaluate() runs once per plan, on requests that seeding makes
identical (painters.evaluate.Session.prepare).

Batching follows HFLM's own (same order, batch sizes, right padding, model call and
log-softmax), so each answer is the one the plan-at-a-time HFLM gives under
surgery.apply. lm-eval's sqlite cache is never used: it keys on request text only.

generate_until requests are answered for every plan of the pass too: per batch of prompts
(HFLM's own batching and generate()), the plans are visited in the same trie order and the
prompt's prefill shares each distinct schedule prefix (painters.generation). The batch size is
what the plans' caches let fit the memory budget (painters.cost), at most the one asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator, normalize_gen_kwargs
from lm_eval.models.utils_hf import pad_and_concat
from torch import nn

from painters import cost, generation, surgery, trie
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


def _request_key(request) -> tuple:
    _, context, continuation = request
    return tuple(context), tuple(continuation)


def _longest_first(request):
    # HFLM's order: longest first (OOMs show at once, batch length known from its first item)
    tokens = request[1] + request[2]
    return -len(tokens), tuple(tokens)


def _context_group(request):
    # HFLM's group for one-token continuations that share context: scored from one row of logits
    return request[-2] + request[-1][:-1]


class SweepLM(HFLM):
    """HFLM that answers loglikelihood requests for all plans of a pass in one pass over them.

    Outside `sweep(...)`, or with `plan` None, it is plain HFLM.
    """

    def __init__(self, *args, kv_cache: str = "exact", memory_gb: float | None = None, log=print, **kwargs):
        super().__init__(*args, **kwargs)
        self.kv_cache = cost.check_kv_cache(kv_cache)  # generation's cache mode (painters.cost)
        self.memory_gb = memory_gb  # the device's memory for generation's budget; None: measured
        self.log = log
        self.generation_batch_sizes: dict[str, int] = {}  # plan key -> the batch its generation ran at
        self.peak_cache_bytes = 0  # the largest generation cache a batch held (measured, for benchmarks)
        self._generations: dict[str, dict[tuple, str]] = {}
        self._generating: _GenerationRun | None = None
        self.prefill_store = generation.PrefillStore()
        self.store = PrefixStore()
        self.plan: Plan | None = None  # whose answers lm-eval is given
        self.detected_batch_size: int | None = None  # batch_size auto: what lm-eval detected last
        self._plans: list[Plan] = []
        self._visits: list[trie.Visit] = []  # the pass's walk, and each plan's steps wrapped by Resume
        self._steps: list[nn.ModuleList] = []
        self._answers: dict[str, dict[tuple, tuple[float, bool]]] = {}
        self._encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        self._probing = False

    @contextmanager
    def sweep(self, plans: Sequence[Plan]) -> Iterator[None]:
        """Answer requests for all `plans` together inside the block (set `plan` per evaluate())."""
        self._plans = list(plans)
        self._answers = {plan.key: {} for plan in plans}
        self._generations = {plan.key: {} for plan in plans}
        self.generation_batch_sizes = {}
        self._visits, self._steps = self._prepare_walk()  # once per pass, not per batch of requests
        try:
            yield
        finally:
            self._plans, self._answers, self._encoded, self.plan = [], {}, {}, None
            self._generations, self._generating, self.generation_batch_sizes = {}, None, {}
            self._visits, self._steps = [], []
            self.store.states.clear()
            self.prefill_store.clear()

    def _encode_pair(self, context: str, continuation: str):
        # every plan of a pass asks for the same requests: tokenize each once
        if not self._plans:
            return super()._encode_pair(context, continuation)
        key = (context, continuation)
        if key not in self._encoded:
            self._encoded[key] = super()._encode_pair(context, continuation)
        return self._encoded[key]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.plan is None:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        table = self._answers[self.plan.key]
        keys = [_request_key(request) for request in requests]
        missing = [request for request, key in zip(requests, keys) if key not in table]
        if missing:
            for plan, answers in zip(self._plans, self._answer_all_plans(missing, override_bs)):
                self._answers[plan.key].update(zip((_request_key(r) for r in missing), answers))
        return [table[key] for key in keys]

    def _answer_all_plans(self, requests, override_bs: int | None) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, is-greedy) of every request under every plan of the pass, in request order."""
        collator = Collator(
            requests,
            sort_fn=_longest_first,
            group_by="contexts" if self.logits_cache else None,
            group_fn=_context_group,
        )
        auto = self.batch_size == "auto"
        if auto and not override_bs:
            self.batch_sizes = {}  # as HFLM: detect again for this set of requests
        batch_size = override_bs if auto and override_bs is not None else (0 if auto else self.batch_size)
        batch_fn = self._batch_scheduler if auto and not override_bs else None
        answers: list[list[tuple[float, bool]]] = [[] for _ in self._plans]
        for chunk in collator.get_batched(n=batch_size, batch_fn=batch_fn):
            inputs, input_lengths = self._batch_inputs(chunk)
            # the continuations each row of logits answers (several when contexts are shared);
            # asked once per chunk because the collator hands out each group once
            placeholder = torch.zeros(1, 1, 1)
            answered = [
                [tokens for _, tokens, _ in collator.get_cache(
                    req_str=request[0], cxt_toks=request[1], cont_toks=request[2], logits=placeholder)]
                for request in chunk
            ]
            for plan_index, logits in self._walk(inputs):
                log_probs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
                for row, length, request, continuations in zip(log_probs, input_lengths, chunk, answered):
                    answers[plan_index] += _score(row, length, len(request[2]), continuations)
        return [collator.get_original(plan_answers) for plan_answers in answers]

    def _batch_inputs(self, chunk) -> tuple[torch.Tensor, list[int]]:
        """Context + continuation minus its last token, cut from the left to the model's length, right-padded."""
        rows = []
        for _, context, continuation in chunk:
            if not context or not continuation or len(continuation) > self.max_length:
                raise ValueError("a loglikelihood request needs a context and a continuation no longer than the model")
            rows.append(torch.tensor((context + continuation)[-(self.max_length + 1):][:-1], dtype=torch.long, device=self.device))
        lengths = [len(row) for row in rows]
        return pad_and_concat(max(lengths), rows, padding_side="right"), lengths

    def _prepare_walk(self) -> tuple[list[trie.Visit], list[nn.ModuleList]]:
        """The pass's visit order, and each plan's steps wrapped to resume from the stored states."""
        layers = surgery.layer_list(self.model)
        schedules = [plan.schedule(len(layers)) for plan in self._plans]
        steps = [_resumable(surgery.build_steps(layers, schedule), schedule, self.store) for schedule in schedules]
        return trie.walk(schedules), steps

    def _walk(self, inputs: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(plan index, logits) for every plan of the pass on one batch, computing each schedule prefix once."""
        try:
            for visit in self._visits:
                self.store.begin(visit.start, visit.keep)
                with surgery.apply(self.model, self._plans[visit.plan], steps=self._steps[visit.plan]):
                    logits = HFLM._model_call(self, inputs)
                yield visit.plan, logits
        finally:
            self.store.states.clear()

    # batch_size auto: lm-eval probes with its own model calls; inside a pass a probe runs
    # every plan with the states the pass keeps, so the batch size found fits the pass.
    def _detect_batch_size(self, requests=None, pos: int = 0):
        self._probing = bool(self._plans)
        try:
            self.detected_batch_size = super()._detect_batch_size(requests, pos)
        finally:
            self._probing = False
        return self.detected_batch_size

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self._probing:
            logits = None
            for _, logits in self._walk(inps):
                pass
            return logits
        return super()._model_call(inps, attn_mask=attn_mask, labels=labels)


    # ---- generate_until: all plans of the pass, each batch's prefill shared along the trie

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if self.plan is None:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        table = self._generations[self.plan.key]
        keys = [_generation_key(request) for request in requests]
        missing = [request for request, key in zip(requests, keys) if key not in table]
        if missing:
            self._generate_all_plans(missing)
        return [table[key] for key in keys]

    def _generate_all_plans(self, requests) -> None:
        """Every plan's generations for `requests`: HFLM's generate_until once per plan, whose
        generate() calls (`_model_generate`) run each batch for all plans of the same batch size."""
        keys = [_generation_key(request) for request in requests]
        sizes = self.generation_batch_size(requests, self._plans)
        shares_prefill = generation.plan_cache_refusal(self.model) is None
        saved = self.batch_size_per_gpu
        try:
            for batch_size in sorted(set(sizes.values()), reverse=True):
                group = [plan for plan in self._plans if sizes[plan.key] == batch_size]
                steps = self._resumable_steps(group) if shares_prefill else []
                visits = trie.walk([plan.schedule(surgery.num_layers(self.model)) for plan in group])
                self._generating = _GenerationRun(group, shares_prefill, steps, visits)
                self.batch_size_per_gpu = batch_size
                for plan in group:
                    self._generating.plan = plan
                    outputs = HFLM.generate_until(self, requests, disable_tqdm=True)
                    self._generations[plan.key].update(zip(keys, outputs))
                    self.generation_batch_sizes[plan.key] = batch_size
        finally:
            self.batch_size_per_gpu = saved
            self._generating = None
            self.prefill_store.clear()

    def generation_batch_size(self, requests, plans: Sequence[Plan]) -> dict[str, int]:
        """Per plan, the batch its generation runs at: the one asked for (auto: all requests at
        once), lowered to what its cache lets fit the memory budget (painters.cost). A plan whose
        single sequence cannot fit is refused, before any work."""
        depth = surgery.num_layers(self.model)
        shape = cost.ModelShape.from_config(self.model.config)
        element = cost.dtype_bytes(self.model.dtype)
        new_tokens = max(normalize_gen_kwargs(dict(r.args[1]), self.max_gen_toks)["max_gen_toks"] for r in requests)
        prompt = min(max(len(self.tok_encode(r.args[0])) for r in requests), self.max_length - new_tokens)
        schedules = [plan.schedule(depth) for plan in plans]
        kept = 0
        if generation.plan_cache_refusal(self.model) is None:
            kept = cost.shared_prefill_bytes(schedules, trie.walk(schedules), shape, prompt, element)
        working = cost.working_bytes(shape, prompt, element)
        budget, source = generation.memory_budget(self.model, self.memory_gb)
        asked = self.batch_size_per_gpu if self.batch_size != "auto" else len(requests)
        sizes, lowered = {}, []
        for plan, schedule in zip(plans, schedules):
            cache = cost.cache_bytes(schedule, shape, prompt + new_tokens, element, self.kv_cache)
            fits = cost.fitting_batch(cache + kept + working, budget)
            if fits == 0:
                slots = len(cost.cache_slot_layers(schedule, self.kv_cache))
                raise ValueError(
                    f"plan {plan.key}: one sequence cannot fit the memory budget for generation: its {self.kv_cache} "
                    f"cache is {cost.gib(cache)} ({slots} slots x {prompt + new_tokens} tokens), plus {cost.gib(kept + working)} "
                    f"kept and working, against {cost.gib(budget)} ({source}); give more memory (evaluation.memory_gb, "
                    "--memory-gb), fewer max_gen_toks, or for a parallel plan kv_cache reference")
            sizes[plan.key] = min(asked, fits)
            if self.batch_size != "auto" and fits < asked:
                lowered.append((plan.key, fits, cache))
        if lowered:
            worst = min(lowered, key=lambda item: item[1])
            self.log(f"generation: batch size {asked} lowered for {len(lowered)} plan(s) to what fits {cost.gib(budget)} "
                     f"({source}), down to {worst[1]} for {worst[0]} ({cost.gib(worst[2])} of cache per sequence)")
        return sizes

    def _resumable_steps(self, plans: Sequence[Plan]) -> list[nn.ModuleList]:
        layers = surgery.layer_list(self.model)
        return [_resumable(surgery.build_steps(layers, plan.schedule(len(layers))), plan.schedule(len(layers)),
                           self.prefill_store) for plan in plans]

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        run = self._generating
        if run is None:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        key = (tuple(map(tuple, context.tolist())), max_length, tuple(stop),
               repr(sorted((k, v) for k, v in generation_kwargs.items() if k != "attention_mask")))
        if (run.plan.key, key) not in run.outputs:
            for plan, output in self._generate_batch(run, context, max_length, stop, generation_kwargs):
                run.outputs[plan.key, key] = output
        return run.outputs.pop((run.plan.key, key))

    def _generate_batch(self, run: "_GenerationRun", context, max_length, stop, kwargs):
        """(plan, generated ids) for every plan of `run` on one batch of prompts."""
        if not run.shares_prefill:  # the family's own cache, plan by plan (exact mode)
            for plan in run.plans:
                with surgery.apply(self.model, plan):
                    yield plan, HFLM._model_generate(self, context, max_length, stop, **dict(kwargs))
            return
        store, depth = self.prefill_store, surgery.num_layers(self.model)
        argument = generation.cache_argument(self.model)
        hook = self.model.register_forward_hook(lambda *_: store.end_prefill())
        try:
            for visit in run.visits:
                plan = run.plans[visit.plan]
                schedule = plan.schedule(depth)
                with surgery.apply(self.model, plan, steps=run.steps[visit.plan]):
                    cache = generation.PlanCache(self.model.config, schedule, self.kv_cache, store)
                    store.begin(visit.start, visit.keep, surgery.call_steps(schedule), cache)
                    output = HFLM._model_generate(self, context, max_length, stop, **dict(kwargs), **{argument: cache})
                self.peak_cache_bytes = max(self.peak_cache_bytes, cache.nbytes())
                yield plan, output
        finally:
            hook.remove()
            store.clear()


@dataclass
class _GenerationRun:
    """The plans generating together at one batch size, and the generations not yet handed out."""

    plans: list[Plan]
    shares_prefill: bool
    steps: list[nn.ModuleList]
    visits: list[trie.Visit]
    plan: Plan | None = None  # whose generations HFLM's generate_until is collecting now
    outputs: dict = field(default_factory=dict)  # (plan key, batch key) -> generated ids


def _generation_key(request) -> tuple:
    context, gen_kwargs = request.args
    return context, json.dumps(gen_kwargs, sort_keys=True, default=str)


def _resumable(calls: nn.ModuleList, schedule, store) -> nn.ModuleList:
    """Each of a plan's calls wrapped by Resume, knowing its step, whether it ends the step, and its slot."""
    depths, ends = surgery.call_steps(schedule), surgery.ends_of_steps(schedule)
    return nn.ModuleList(Resume(call, depth, end, slot, store)
                         for slot, (call, depth, end) in enumerate(zip(calls, depths, ends)))


def _score(log_probs: torch.Tensor, input_length: int, continuation_length: int, continuations) -> list[tuple[float, bool]]:
    """Answers from one row of log-probabilities, as HFLM computes them for a causal model."""
    selected = log_probs[input_length - continuation_length: input_length].unsqueeze(0)  # [1, seq, vocab]
    greedy = selected.argmax(dim=-1)
    answers = []
    for tokens in continuations:
        target = torch.tensor(tokens, dtype=torch.long, device=selected.device).unsqueeze(0)
        is_greedy = bool((greedy[:, -target.shape[1]:] == target).all())
        answers.append((float(torch.gather(selected, 2, target.unsqueeze(-1)).sum()), is_greedy))
    return answers
