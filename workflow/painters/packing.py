"""Shared contexts: the loglikelihood requests that share a token prefix, packed into one row.

lm-eval sends one request per choice of a multiple-choice document, each the whole
context plus that choice; HFLM runs each as its own row. Here the inputs of requests
that share a prefix (a document's context, the text before a WinoGrande blank, a
few-shot preamble) become one row: the trie of their tokens in depth-first order,
each distinct prefix once. A token sees its ancestors in the trie (and itself) and
nothing else, and its position id is its depth, so each request's tokens get exactly
the attention and the positions they have in a row of their own (painters.engine
builds the 4D mask and position ids from `Row`).

Plain Python with no torch: `token_counts` is what the cost model reads, and it plans
the rows exactly as the engine does.

Which requests share a row (`plan_rows`): the inputs in lexicographic order (so a
trie's members are neighbours, and the trie is their depth-first order), each joining
the row of the one before it when that saves at least a quarter of what it costs on a
row of its own. Cost counts tokens and attention: a row of R tokens costs
R + R^2 / (6 x hidden) (a layer's matrix products are ~12 hidden^2 multiply-adds per
token, its attention 2 x R x hidden), since attention is computed over the whole row,
masked or not. A row is at most `max_row` tokens (engine: the model's length, and
sqrt(batch size) x the longest input, so a batch of rows never holds more tokens or
attention than a batch of that many longest requests). A pass packs only where its rows save at
least a tenth of its tokens (`plan_pass`): packed rows are batched apart from the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# a request joins a row when that saves at least this share of what it costs alone
MIN_SAVING = 0.25
# a pass packs only when its rows save at least this share of its tokens: packed rows are batched apart
# from the rest, and a few of them cost more batches than they save
MIN_PASS_SAVING = 0.1
# attention per token is 2 x R x hidden multiply-adds against ~12 x hidden^2 for the layer's matrices
ATTENTION_PER_HIDDEN = 6
DEFAULT_HIDDEN = 4096  # Llama-2-7B's, the paper's model, where the caller does not say


@dataclass(frozen=True)
class Row:
    """A packed row: the trie of its members' inputs in depth-first order.

    Token q of the row attends to token k exactly when k <= q < ends[k] (k is q or one of
    its ancestors); `depths` are the position ids; `paths[i]` gives, for each position of
    member i's input, the index of its token in the row.
    """

    members: tuple[int, ...]  # indices into the inputs given to plan_rows, in row order
    tokens: tuple[int, ...]
    depths: tuple[int, ...]
    ends: tuple[int, ...]
    paths: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.tokens)


def row_cost(tokens: int, hidden_size: int) -> float:
    """Work of one row of `tokens` tokens, in token units (see the module docstring)."""
    return tokens + tokens * tokens / (ATTENTION_PER_HIDDEN * hidden_size)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _RowBuilder:
    """A row grown one input at a time, the inputs coming in lexicographic order."""

    def __init__(self):
        self.members: list[int] = []
        self.tokens: list[int] = []
        self.depths: list[int] = []
        self.ends: list[int | None] = []
        self.paths: list[tuple[int, ...]] = []
        self.last: Sequence[int] = ()

    def add(self, index: int, tokens: Sequence[int]) -> None:
        shared = _common_prefix(self.last, tokens) if self.members else 0
        previous = self.paths[-1] if self.paths else ()
        for node in previous[shared:]:  # the previous input's nodes below the branch point are done
            if self.ends[node] is None:
                self.ends[node] = len(self.tokens)
        path = list(previous[:shared])
        for depth in range(shared, len(tokens)):
            path.append(len(self.tokens))
            self.tokens.append(tokens[depth])
            self.depths.append(depth)
            self.ends.append(None)
        self.members.append(index)
        self.paths.append(tuple(path))
        self.last = tokens

    def length_with(self, tokens: Sequence[int]) -> tuple[int, int]:
        """(tokens shared with the row, the row's length with `tokens` added)."""
        shared = _common_prefix(self.last, tokens)
        return shared, len(self.tokens) + len(tokens) - shared

    def row(self) -> Row:
        ends = tuple(len(self.tokens) if end is None else end for end in self.ends)
        return Row(tuple(self.members), tuple(self.tokens), tuple(self.depths), ends, tuple(self.paths))


def trie_row(inputs: Sequence[Sequence[int]]) -> Row:
    """All `inputs` in one row (members in lexicographic order of their tokens)."""
    builder = _RowBuilder()
    for index in sorted(range(len(inputs)), key=lambda i: tuple(inputs[i])):
        builder.add(index, inputs[index])
    return builder.row()


def plan_rows(inputs: Sequence[Sequence[int]], max_row: int, hidden_size: int = DEFAULT_HIDDEN) -> list[Row]:
    """The rows of `inputs` (token lists; each at most `max_row` long): see the module docstring.
    Every input is a member of exactly one row; a row of one member is that input alone."""
    order = sorted(range(len(inputs)), key=lambda i: tuple(inputs[i]))
    rows: list[Row] = []
    builder: _RowBuilder | None = None
    for index in order:
        tokens = inputs[index]
        if builder is not None:
            shared, length = builder.length_with(tokens)
            alone = row_cost(len(tokens), hidden_size)
            saving = row_cost(len(builder.tokens), hidden_size) + alone - row_cost(length, hidden_size)
            if shared and length <= max_row and saving >= MIN_SAVING * alone:
                builder.add(index, tokens)
                continue
            rows.append(builder.row())
        builder = _RowBuilder()
        builder.add(index, tokens)
    if builder is not None:
        rows.append(builder.row())
    return rows


def plan_pass(inputs: Sequence[Sequence[int]], eligible: Sequence[int], max_length: int, batch_size: int,
              hidden_size: int = DEFAULT_HIDDEN) -> list[Row]:
    """The packed rows of a pass: `inputs` are HFLM's rows (one per request group), `eligible` those that may
    be packed (not cut at the model's length). Rows of one input are left out (they gain nothing), and all
    rows when together they save less than MIN_PASS_SAVING of the pass's tokens. Row members index `inputs`."""
    if not eligible:
        return []
    longest = max(len(inputs[i]) for i in eligible)
    limit = max_row_tokens(max_length, batch_size, longest)
    rows = [Row(tuple(eligible[m] for m in row.members), row.tokens, row.depths, row.ends, row.paths)
            for row in plan_rows([inputs[i] for i in eligible], limit, hidden_size) if len(row.members) > 1]
    saved = sum(sum(len(inputs[m]) for m in row.members) - len(row) for row in rows)
    return rows if saved >= MIN_PASS_SAVING * sum(len(tokens) for tokens in inputs) else []


def max_row_tokens(max_length: int, batch_size: int, longest_input: int) -> int:
    """The longest row: the model's length, and at most sqrt(batch size) x the longest input
    (then one row holds no more tokens, nor attention, than a batch of the longest inputs)."""
    return max(longest_input, min(max_length, math.isqrt(max(1, batch_size) * longest_input * longest_input)))


def batch_rows(lengths: Sequence[int], batch_size: int, longest_input: int) -> list[list[int]]:
    """Batches of rows (indices into `lengths`), longest rows first: a batch holds, padded, at most
    the tokens (batch size x longest input) and attention (batch size x longest input^2) of a
    batch of `batch_size` longest inputs, and at least one row."""
    tokens, attention = batch_size * longest_input, batch_size * longest_input * longest_input
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches:
            width, rows = lengths[batches[-1][0]], len(batches[-1]) + 1
            if rows * width <= tokens and rows * width * width <= attention:
                batches[-1].append(index)
                continue
        batches.append([index])
    return batches


def model_input(context: Sequence[int], continuation: Sequence[int], max_length: int | None) -> list[int]:
    """The tokens HFLM gives the model for a request: context + continuation minus its last
    token, cut from the left to `max_length` (None: not cut)."""
    tokens = list(context) + list(continuation)
    if max_length is not None:
        tokens = tokens[-(max_length + 1):]
    return tokens[:-1]


def truncated(context: Sequence[int], continuation: Sequence[int], max_length: int | None) -> bool:
    """Whether HFLM cuts the request from the left (its rows then share no prefix: never packed)."""
    return max_length is not None and len(context) + len(continuation) > max_length + 1


def _pair(request) -> tuple[Sequence[int], Sequence[int]]:
    # lm-eval's ((context, continuation), context ids, continuation ids), or (context ids, continuation ids)
    return (request[1], request[2]) if len(request) == 3 else (request[0], request[1])


def cache_groups(requests: Sequence, logits_cache: bool = True) -> list[list[int]]:
    """HFLM's rows: requests with the same context + continuation minus its last token share one
    (its one-token logits cache), the first with the longest continuation first in its group."""
    if not logits_cache:
        return [[i] for i in range(len(requests))]
    groups: dict[tuple, list[int]] = {}
    for index, request in enumerate(requests):
        context, continuation = _pair(request)
        groups.setdefault(tuple(context) + tuple(continuation[:-1]), []).append(index)
    result = []
    for members in groups.values():
        rep = max(members, key=lambda i: len(_pair(requests[i])[1]))  # Collator's: the first longest
        result.append([rep, *(m for m in members if m != rep)])
    return result


def token_counts(
    requests: Iterable,
    max_length: int | None = None,
    hidden_size: int = DEFAULT_HIDDEN,
    batch_size: int = 16,
    logits_cache: bool = True,
) -> tuple[int, int]:
    """(tokens as sent, tokens computed with shared contexts) for a benchmark's loglikelihood requests.

    `requests`: lm-eval's ((context, continuation), context ids, continuation ids), or
    (context ids, continuation ids) pairs. Tokens as sent: what HFLM computes, one row per
    request (one-token continuations sharing a context counted once, its logits cache),
    each cut to `max_length`. With shared contexts: the packed rows' tokens, planned as the
    engine plans them for a model of `hidden_size` run at `batch_size` (plan_pass), plus the
    requests that stay on rows of their own (cut ones, those that share nothing). Per layer call and
    per plan of a sweep the work scales with these counts. A family refused for packing
    (painters.engine) computes the first count; one with a short attention window packs
    only requests within it (windows of real models are thousands of tokens, not counted).
    """
    requests = list(requests)
    groups = cache_groups(requests, logits_cache)
    inputs, eligible = [], []
    for members in groups:
        context, continuation = _pair(requests[members[0]])
        inputs.append(model_input(context, continuation, max_length))
        if not truncated(context, continuation, max_length) and inputs[-1]:
            eligible.append(len(inputs) - 1)
    as_sent = sum(len(tokens) for tokens in inputs)
    rows = plan_pass(inputs, eligible, max_length if max_length is not None else 2**31, batch_size, hidden_size)
    return as_sent, as_sent - sum(sum(len(inputs[m]) for m in row.members) - len(row) for row in rows)
