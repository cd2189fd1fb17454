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

Shared contexts (`share_contexts`, on by default): requests whose inputs share a prefix (the
choices of one document, the text before a WinoGrande blank) are packed into one row, the trie
of their tokens (painters.packing), with a 4D attention mask that lets each token see its own
prefix only and position ids that are each token's position in its own request; so a context is
computed once per schedule prefix and each continuation is scored on it. The answers equal the
unpacked ones within float rounding (CPU fp32: 1e-5 in log-likelihood). Requests cut from the
left at the model's length, requests that share nothing, rolling windows, and every request of
a family that cannot take such a mask (checked once per model, the reason logged) stay on the
rows above, bit for bit HFLM's.

generate_until requests are answered for every plan of the pass too: per batch of prompts
(HFLM's own batching and generate()), the plans are visited in the same trie order and the
prompt's prefill shares each distinct schedule prefix (painters.generation). The batch size is
what the plans' caches let fit the memory budget (painters.cost), at most the one asked for.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate import find_executable_batch_size
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator, normalize_gen_kwargs
from lm_eval.models.utils_hf import clear_torch_cache, pad_and_concat
from torch import nn

from painters import cost, generation, packing, surgery, trie
from painters.shared_pass import PrefixStore, SharedPass, resumable
from painters.plan import Plan


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


# attention implementations whose masking takes a ready 4D mask as it is (transformers.masking_utils
# returns a 4D mask unchanged): sdpa a boolean one, eager an additive float one
_MASKED_ATTENTION = ("sdpa", "eager")
# layer types whose mask packing builds: from the token depths, as masking_utils builds them from positions
_MASKED_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")
# config fields of local attention windows (a family whose decoder takes one mask for all layers packs
# only requests within the smallest: there every window sees the whole request)
_WINDOW_FIELDS = ("sliding_window", "attention_chunk_size", "window_size", "attention_window_size",
                  "sliding_window_size", "local_attention")
# the largest difference a packed row may show against rows of their own in the check (log-probabilities)
_CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
_CHECK_TOLERANCE_HALF = 0.1
_CHECK_TEXT = ("The quick brown fox jumps over the lazy dog. Question: which one can be worn? Answer: a warm coat. "
               "Ann has a plum, a saw and a hat; the plum was sweet and the saw was sharp. ")


@dataclass(frozen=True)
class _Packing:
    """How a model takes packed rows."""

    attention: str  # sdpa (boolean mask) or eager (additive mask)
    layer_masks: dict[str, tuple[str, int | None]] | None  # layer type -> (full/sliding/chunked, size); None: one mask
    max_input: int | None  # longest request input packed (one mask for all layers and a local window), None: any
    keeps_logits: bool  # forward takes logits_to_keep
    takes_use_cache: bool


@dataclass
class _PackedBatch:
    """Packed rows as model inputs: tokens, position ids (depths), the 4D mask (one, or one per layer
    type), how many last positions to keep logits of, and where each scored position is."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: object
    keep: int
    select_rows: torch.Tensor
    select_positions: torch.Tensor

    @classmethod
    def build(cls, lm: "SweepLM", packing_: _Packing, rows: Sequence[packing.Row], needed: Sequence[int]) -> "_PackedBatch":
        """`needed`: per member of the rows in order, how many last positions of its input are scored."""
        width = max(len(row) for row in rows)
        device = lm.device

        def padded(values_of, pad) -> torch.Tensor:
            return torch.tensor([list(values_of(row)) + [pad] * (width - len(row)) for row in rows],
                                dtype=torch.long, device=device)

        input_ids = padded(lambda row: row.tokens, 0)
        depths = padded(lambda row: row.depths, 0)
        # a pad token sees itself only, and no real token sees it
        ends = torch.tensor([list(row.ends) + list(range(len(row) + 1, width + 1)) for row in rows],
                            dtype=torch.long, device=device)
        index = torch.arange(width, device=device)
        seen = (index[None, None, :] <= index[None, :, None]) & (index[None, :, None] < ends[:, None, :])
        distance = depths[:, :, None] - depths[:, None, :]  # query depth - key depth

        def mask_of(kind: str, size: int | None) -> torch.Tensor:
            allowed = seen
            if kind == "sliding":
                allowed = allowed & (distance < size)
            elif kind == "chunked":
                allowed = allowed & (depths[:, :, None] // size == depths[:, None, :] // size)
            allowed = allowed[:, None]  # [rows, 1, query, key]
            if packing_.attention == "sdpa":
                return allowed
            dtype = lm.model.dtype
            return torch.where(allowed, torch.zeros((), dtype=dtype, device=device), torch.finfo(dtype).min)

        if packing_.layer_masks is None:
            mask = mask_of("full", None)
        else:
            made = {}
            mask = {name: made.setdefault(kind, mask_of(*kind)) for name, kind in packing_.layer_masks.items()}
        select_rows, select_positions = [], []
        member = 0
        for r, row in enumerate(rows):
            for path in row.paths:
                count = needed[member] if member < len(needed) else 0
                member += 1
                select_rows += [r] * count
                select_positions += list(path[len(path) - count:])
        start = min(select_positions) if select_positions else 0
        keep = width - start
        return cls(input_ids, depths, mask, keep,
                   torch.tensor(select_rows, dtype=torch.long, device=device),
                   torch.tensor([p - start for p in select_positions], dtype=torch.long, device=device))


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _forward_source(module: nn.Module) -> str:
    try:
        return inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return ""


def _takes_mask_per_layer_type(owner: nn.Module) -> bool:
    """Whether the decoder takes a dict of masks by layer type in place of building them (transformers 5.x:
    `if not isinstance(causal_mask_mapping := attention_mask, dict)`)."""
    return "attention_mask, dict)" in _forward_source(owner)


def _check_packing(lm: "SweepLM") -> tuple[_Packing | None, str | None]:
    """How `lm`'s model takes packed rows, or why it cannot (one line): what its config says, then a packed
    row checked against rows of their own on real tokens (windows crossed where they are short)."""
    model = lm.model
    if lm.backend != "causal":
        return None, f"lm-eval runs it as {lm.backend}, not as a causal decoder"
    config = model.config.get_text_config(decoder=True)
    attention = getattr(config, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    if attention not in _MASKED_ATTENTION:
        return None, (f"attention implementation {attention!r} does not take a custom 4D mask as it is "
                      f"(those that do: {', '.join(_MASKED_ATTENTION)})")
    parameters = inspect.signature(model.forward).parameters
    for name in ("attention_mask", "position_ids"):
        if name not in parameters:
            return None, f"its forward takes no {name}"
    types = list(getattr(config, "layer_types", None) or [])
    other = sorted(set(types) - set(_MASKED_LAYER_TYPES))
    if other:
        return None, (f"layer types {', '.join(map(str, other))} are not masked attention (packed continuations "
                      "would pass state to one another)")
    windows = {name: value for name in _WINDOW_FIELDS
               if isinstance(value := getattr(config, name, None), int) and not isinstance(value, bool) and value > 0}
    owner, _, _ = surgery.find_stack(model)
    layer_masks, max_input = None, None
    if types and _takes_mask_per_layer_type(owner):
        sizes = {"full_attention": ("full", None), "sliding_attention": ("sliding", windows.get("sliding_window")),
                 "chunked_attention": ("chunked", windows.get("attention_chunk_size"))}
        for name in set(types):
            if sizes[name][0] != "full" and sizes[name][1] is None:
                return None, f"its {name} layers have no window size in the config"
        layer_masks = {name: sizes[name] for name in sorted(set(types))}
        unmasked = [v for k, v in windows.items() if k not in ("sliding_window", "attention_chunk_size")]
        max_input = min(unmasked) if unmasked else None
    elif windows:
        max_input = min(windows.values())
    # logits of the scored positions only, where the head alone reads logits_to_keep (Gemma 4's decoder
    # also cuts its KV-sharing layers' inputs by it, at a position of the stack that a plan moves)
    keeps_logits = "logits_to_keep" in parameters and "logits_to_keep" not in _forward_source(owner)
    found = _Packing(attention, layer_masks, max_input, keeps_logits, "use_cache" in parameters)
    try:
        difference = _packing_difference(lm, found)
    except Exception as error:  # noqa: BLE001 - any failure of a packed row is a refusal, with its reason
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, f"a packed row fails: {type(error).__name__}: {first}"[:300]
    tolerance = _CHECK_TOLERANCE.get(model.dtype, _CHECK_TOLERANCE_HALF)
    if not difference <= tolerance:
        return None, (f"a packed row gives log-probabilities {difference:.3g} away from rows of their own "
                      f"(more than {tolerance:g}): its attention or positions do not follow the mask and position ids")
    return found, None


def _packing_difference(lm: "SweepLM", packing_: _Packing) -> float:
    """The largest difference in log-probability between packed rows and each request on a row of its own
    (the model untouched): two rows of a few continuations after a context, one of them a trie of two
    contexts, padded, crossing each short window."""
    ids = lm.tok_encode(_CHECK_TEXT)
    ids = ids * (1 + 400 // max(1, len(ids)))  # repeated ids: no text beyond the model's length is encoded
    limit = packing_.max_input
    small = [v for v in ((limit,) if limit else ()) + tuple(size for _, size in (packing_.layer_masks or {}).values() if size)]
    window = min(small) if small else None
    if limit is not None:  # every request within the window, the rows beyond it
        context, continuations = max(1, min(8, limit - 3)), (4, 1, 3, 2)
        continuations = tuple(min(c, limit - context + 1) for c in continuations)
    else:  # requests crossing the smallest window, where it is short
        context = window + 2 if window is not None and window <= 64 else 8
        continuations = (4, 1, 3, 2)
    context = min(context, lm.max_length - max(continuations))
    if context < 1 or len(ids) < 300 + context:
        raise ValueError("the model's tokenizer or length leaves no room for the check")
    first = [ids[:context] + ids[context + 20 * j: context + 20 * j + t - 1] for j, t in enumerate(continuations)]
    shared = max(1, context - 2)
    second = [ids[:shared] + ids[200 + j * 7: 200 + j * 7 + context - shared + t - 1] for j, t in enumerate(continuations[:2])]
    rows = [packing.trie_row(first), packing.trie_row(second)]
    inputs = [[first[m] for m in rows[0].members], [second[m] for m in rows[1].members]]
    needed = [len(tokens) for row_inputs in inputs for tokens in row_inputs]
    batch = _PackedBatch.build(lm, packing_, rows, needed)
    with torch.no_grad():
        packed = F.log_softmax(lm._packed_call(packing_, batch)[batch.select_rows, batch.select_positions].double(), dim=-1)
        alone = [F.log_softmax(HFLM._model_call(lm, torch.tensor([tokens], device=lm.device))[0].double(), dim=-1)
                 for row_inputs in inputs for tokens in row_inputs]
    return float((packed - torch.cat(alone)).abs().max())


def _score_selected(selected: torch.Tensor, continuations) -> list[tuple[float, bool]]:
    """Answers from the log-probabilities [1, seq, vocab] at a row's scored positions, as HFLM computes them."""
    greedy = selected.argmax(dim=-1)
    answers = []
    for tokens in continuations:
        target = torch.tensor(tokens, dtype=torch.long, device=selected.device).unsqueeze(0)
        is_greedy = bool((greedy[:, -target.shape[1]:] == target).all())
        answers.append((float(torch.gather(selected, 2, target.unsqueeze(-1)).sum()), is_greedy))
    return answers


class SweepLM(HFLM):
    """HFLM that answers loglikelihood requests for all plans of a pass in one pass over them.

    Outside `sweep(...)`, or with `plan` None, it is plain HFLM.
    """

    def __init__(self, *args, kv_cache: str = "exact", memory_gb: float | None = None, share_contexts: bool = True,
                 log=print, **kwargs):
        super().__init__(*args, **kwargs)
        self.share_contexts = share_contexts  # pack requests that share a prefix (off: HFLM's rows, bit for bit)
        self.packing_refusal: str | None = None  # why this model's requests are not packed (None: they are, or not asked)
        self._packing: _Packing | None = None
        self._packing_checked = False
        self._rolling = False
        self.tokens_computed = 0  # tokens of the rows the loglikelihood pass ran (once per batch, for all plans)
        self.tokens_padded = 0  # the same with padding: what each layer call of the walk computes
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
        self._pass: SharedPass | None = None  # the pass's walk, with each plan's steps wrapped by Resume
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
        self._pass = SharedPass(self.model, self._plans, self.store)  # once per pass, not per batch of requests
        try:
            yield
        finally:
            self._plans, self._answers, self._encoded, self.plan = [], {}, {}, None
            self._generations, self._generating, self.generation_batch_sizes = {}, None, {}
            self._pass = None
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

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # rolling windows share no context: they stay on HFLM's rows
        self._rolling = True
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        finally:
            self._rolling = False

    def _answer_all_plans(self, requests, override_bs: int | None) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, is-greedy) of every request under every plan of the pass, in request order:
        the requests that share a prefix on packed rows, the others on HFLM's."""
        for _, context, continuation in requests:
            if not context or not continuation or len(continuation) > self.max_length:
                raise ValueError("a loglikelihood request needs a context and a continuation no longer than the model")
        packing_ = self._packing_for_pass() if self.share_contexts and not self._rolling and override_bs is None else None
        if packing_ is None:
            return self._answer_rows(requests, override_bs)
        groups = packing.cache_groups(requests, self.logits_cache)
        inputs = [packing.model_input(requests[g[0]][1], requests[g[0]][2], self.max_length) for g in groups]
        eligible = [
            i for i, members in enumerate(groups)
            if not packing.truncated(requests[members[0]][1], requests[members[0]][2], self.max_length)
            and (packing_.max_input is None or len(inputs[i]) <= packing_.max_input)
        ]
        auto = self.batch_size == "auto"
        batch_size = int((self.max_batch_size or 64) if auto else self.batch_size)
        rows = packing.plan_pass(inputs, eligible, self.max_length, batch_size, self._hidden_size())
        if not rows:  # nothing worth packing: HFLM's rows for all
            return self._answer_rows(requests, override_bs)
        longest = max(len(inputs[i]) for i in eligible)
        if auto:  # the largest batch of packed rows that fits, and the rows for it
            batch_size = self._packed_batch_size(packing_, longest)
            rows = packing.plan_pass(inputs, eligible, self.max_length, batch_size, self._hidden_size())
            if not rows:
                return self._answer_rows(requests, override_bs)
        answers: list[list] = [[None] * len(requests) for _ in self._plans]
        packed = {g for row in rows for g in row.members}
        rest = [r for g, members in enumerate(groups) if g not in packed for r in members]
        if rest:
            for plan_answers, rest_answers in zip(answers, self._answer_rows([requests[r] for r in rest], override_bs)):
                for r, answer in zip(rest, rest_answers):
                    plan_answers[r] = answer
        try:
            self._answer_packed(packing_, rows, groups, requests, answers, batch_size, longest)
        except Exception as error:  # noqa: BLE001 - a family that fails on packed rows under a plan
            if _out_of_memory(error):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self._packing, self.packing_refusal = None, f"a packed batch fails: {type(error).__name__}: {first}"[:300]
            self.log(f"shared contexts: off for {type(self.model).__name__} ({self.packing_refusal}); "
                     "each request is scored on its own row, as lm-eval's HFLM does")
            return self._answer_rows(requests, override_bs)
        return answers

    def _answer_rows(self, requests, override_bs: int | None) -> list[list[tuple[float, bool]]]:
        """Every plan's answers with HFLM's rows (one per request, one-token continuations of a context sharing one)."""
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
            self.tokens_computed += sum(input_lengths)
            self.tokens_padded += inputs.numel()
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

    def _walk(self, inputs: torch.Tensor, forward: Callable[[], torch.Tensor] | None = None
              ) -> Iterator[tuple[int, torch.Tensor]]:
        """(plan index, logits) for every plan of the pass on one batch, computing each schedule prefix once.
        `forward`: the model call on the batch (default HFLM's on `inputs`; packed rows pass their mask)."""
        return self._pass.walk(forward or (lambda: HFLM._model_call(self, inputs)))

    # ---- shared contexts: packed rows (painters.packing)

    def _hidden_size(self) -> int:
        config = self.model.config.get_text_config(decoder=True)
        return int(getattr(config, "hidden_size", None) or packing.DEFAULT_HIDDEN)

    def _packing_for_pass(self) -> "_Packing | None":
        """How this model takes packed rows, or None (it cannot: the reason logged once). Checked at the
        first loglikelihood pass that may pack: a few forwards of the untouched model."""
        if not self._packing_checked:
            self._packing_checked = True
            self._packing, self.packing_refusal = _check_packing(self)
            if self.packing_refusal:
                self.log(f"shared contexts: off for {type(self.model).__name__} ({self.packing_refusal}); "
                         "each request is scored on its own row, as lm-eval's HFLM does")
        return self._packing

    def _packed_batch_size(self, packing_: "_Packing", longest: int) -> int:
        """batch_size auto: the largest batch size whose worst packed batch (batch size x the longest input,
        as tokens and as attention) runs every plan of the pass."""
        @find_executable_batch_size(starting_batch_size=self.max_batch_size)
        def forward_batch(batch_size: int) -> int:
            row = packing.Row((0,), (1,) * longest, tuple(range(longest)), (longest,) * longest, ((),))
            batch = _PackedBatch.build(self, packing_, [row] * batch_size, [])
            for _ in range(2):
                for _, logits in self._walk(batch.input_ids, lambda: self._packed_call(packing_, batch)):
                    F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            return batch_size

        try:
            batch_size = forward_batch()
        except RuntimeError as error:
            if "No executable batch size found" not in str(error):
                raise
            batch_size = 1
        clear_torch_cache()
        self.detected_batch_size = batch_size
        return batch_size

    def _packed_call(self, packing_: "_Packing", batch: "_PackedBatch") -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.mask, "position_ids": batch.position_ids}
        if packing_.keeps_logits:
            kwargs["logits_to_keep"] = batch.keep
        if packing_.takes_use_cache:
            kwargs["use_cache"] = False
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            logits = self.model(**kwargs).logits
        return logits if packing_.keeps_logits else logits[:, -batch.keep:]

    def _answer_packed(self, packing_: "_Packing", rows: list[packing.Row], groups, requests, answers,
                       batch_size: int, longest: int) -> None:
        """Every plan's answers to the requests of packed `rows` (their members are HFLM's row groups)."""
        for indices in packing.batch_rows([len(row) for row in rows], batch_size, longest):
            batch_rows = [rows[i] for i in indices]
            scored = []  # per group of the batch: (its requests, its continuations)
            for row in batch_rows:
                for g in row.members:
                    scored.append((groups[g], [requests[r][2] for r in groups[g]]))
            needed = [len(requests[groups[g][0]][2]) for row in batch_rows for g in row.members]
            batch = _PackedBatch.build(self, packing_, batch_rows, needed)
            self.tokens_computed += sum(len(row) for row in batch_rows)
            self.tokens_padded += batch.input_ids.numel()
            for plan_index, logits in self._walk(batch.input_ids, lambda: self._packed_call(packing_, batch)):
                selected = logits[batch.select_rows, batch.select_positions]
                log_probs = F.log_softmax(selected, dim=-1, dtype=self.softmax_dtype)
                plan_answers = answers[plan_index]
                for (members, continuations), part in zip(scored, log_probs.split(needed)):
                    for r, answer in zip(members, _score_selected(part.unsqueeze(0), continuations)):
                        plan_answers[r] = answer

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
        return [resumable(surgery.build_steps(layers, plan.schedule(len(layers))), plan.schedule(len(layers)),
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


def _score(log_probs: torch.Tensor, input_length: int, continuation_length: int, continuations) -> list[tuple[float, bool]]:
    """Answers from one row of log-probabilities, as HFLM computes them for a causal model."""
    selected = log_probs[input_length - continuation_length: input_length].unsqueeze(0)  # [1, seq, vocab]
    return _score_selected(selected, continuations)
