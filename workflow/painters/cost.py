"""What plans cost: FLOPs, bytes and seconds of a shared pass, and the memory of generation.

One place for the numbers that generation (how many sequences fit a device) and job sizing
(painters.sweep, `painters sweep --cost`) need: a model's shape as its config gives it, the
FLOPs of the layer calls along the plans' shared walk, of the lm head per plan and of
attention over the context; the weights read, the K/V cache a plan builds per sequence in
each cache mode, the hidden states and logits a shared pass keeps; and from them the seconds
on a device profile. Plain Python with no I/O and no torch, tested against
torch.utils.flop_counter and the real tensors (tests/test_cost.py, tests/test_generation.py).

Cache modes (`evaluation.kv_cache`):
- `exact`: one cache slot per executed layer call (painters' default), so cached generation
  gives the tokens of uncached generation under every plan.
- `reference`: the official Painters code's (`loop_parallel` in gpt/routing_llama.py): the calls
  of a parallel step share one slot per iteration, holding the mean of their K/V; each call of
  the step attends to that averaged past plus its own current K/V. Sequential steps keep one
  slot per call, so only plans with a parallel step change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from painters import trie
from painters.plan import Schedule

KV_CACHE_MODES = ("exact", "reference")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def check_kv_cache(mode: str) -> str:
    if mode not in KV_CACHE_MODES:
        raise ValueError(f"kv_cache {mode!r} is not one of {', '.join(KV_CACHE_MODES)}")
    return mode


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a torch dtype name (`torch.bfloat16` or `bfloat16`)."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r}: bytes per element unknown (known: {', '.join(DTYPE_BYTES)})")
    return DTYPE_BYTES[name]


# Families whose feed-forward has two matrices (up, down) instead of a gated three (gate, up, down).
UNGATED_FAMILIES = frozenset({"gpt2", "gpt_neox", "gptj", "gpt_neo", "opt", "bloom", "falcon", "phi", "codegen",
                              "gpt_bigcode", "mpt", "starcoder2", "biogpt", "xglm", "bert", "roberta", "vit", "deit"})


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that its memory and compute follow, read off its (text) config."""

    depth: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int | None = None
    vocab_size: int | None = None
    layer_types: tuple[str, ...] | None = None  # per layer, where the config lists them
    sliding_window: int | None = None
    gated_mlp: bool = True

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config object (its text config for a multimodal one)."""
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        hidden = text.hidden_size
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or hidden // heads
        layer_types = getattr(text, "layer_types", None)
        intermediate = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
        return cls(
            depth=text.num_hidden_layers,
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=intermediate,
            vocab_size=getattr(text, "vocab_size", None),
            layer_types=tuple(layer_types) if layer_types else None,
            sliding_window=getattr(text, "sliding_window", None),
            gated_mlp=getattr(text, "model_type", None) not in UNGATED_FAMILIES,
        )

    def layer_matmul_parameters(self) -> int:
        """Weights of a layer's matrix products: attention's q, k, v, o and the feed-forward's."""
        attention = 2 * self.hidden_size * self.num_heads * self.head_dim + 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return attention + (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    def lm_head_parameters(self) -> int:
        return self.hidden_size * (self.vocab_size or 0)

    @classmethod
    def from_config_dict(cls, config: Mapping) -> "ModelShape":
        """From a config.json's contents, through the family's config class (as the depth is read)."""
        from transformers import CONFIG_MAPPING

        model_type = config.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"model_type {model_type!r}: no transformers config class to read its shape from")
        return cls.from_config(CONFIG_MAPPING[model_type].from_dict(dict(config)))

    def is_sliding(self, layer: int) -> bool:
        if self.layer_types is not None:
            return self.layer_types[layer] == "sliding_attention" and bool(self.sliding_window)
        return False

    def kv_elements_per_token(self) -> int:
        """K and V elements one cache slot holds per token."""
        return 2 * self.num_kv_heads * self.head_dim


def cache_slot_layers(schedule: Schedule, kv_cache: str = "exact") -> list[int]:
    """The layer whose attention fills each cache slot the plan makes, in slot order.

    exact: one slot per call. reference: one slot per step (a parallel step's calls share it).
    """
    check_kv_cache(kv_cache)
    if kv_cache == "reference":
        return [step[0] for step in schedule]
    return [index for step in schedule for index in step]


def slot_tokens(shape: ModelShape, layer: int, tokens: int) -> int:
    """Tokens a slot of `layer` holds after `tokens` have been cached: a sliding-window layer keeps
    its last sliding_window - 1 (transformers' DynamicSlidingWindowLayer)."""
    if shape.is_sliding(layer):
        return min(tokens, shape.sliding_window - 1)
    return tokens


def cache_bytes(schedule: Schedule, shape: ModelShape, tokens: int, element_bytes: int, kv_cache: str = "exact") -> int:
    """Bytes of the K/V cache of one sequence after `tokens` tokens under `schedule`."""
    per_token = shape.kv_elements_per_token() * element_bytes
    return sum(slot_tokens(shape, layer, tokens) * per_token for layer in cache_slot_layers(schedule, kv_cache))


def has_parallel_step(schedule: Schedule) -> bool:
    """Whether the two cache modes differ for this schedule."""
    return any(len(step) > 1 for step in schedule)


def shared_prefill_bytes(schedules: Sequence[Schedule], visits, shape: ModelShape, prompt_tokens: int,
                         element_bytes: int) -> int:
    """Most bytes per sequence that a shared prefill keeps for later plans at once: the hidden
    states at the branch points still ahead and the prompt's K/V of every call before the deepest.

    `visits`: the walk of `schedules`' trie (painters.trie.walk). An upper bound: the plan that is
    decoding shares the K/V of its own prefix with what is kept, counted here twice.
    """
    state = prompt_tokens * shape.hidden_size * element_bytes
    per_token = shape.kv_elements_per_token() * element_bytes
    most, held = 0, {}  # depth -> the schedule whose prefix state is kept there
    for visit in visits:
        held = {depth: schedule for depth, schedule in held.items() if depth <= visit.start}
        held.update(dict.fromkeys(visit.keep, schedules[visit.plan]))
        if held:
            deepest = max(held)
            prefix = held[deepest][:deepest]
            kv = sum(slot_tokens(shape, index, prompt_tokens) * per_token for step in prefix for index in step)
            most = max(most, len(held) * state + kv)
    return most


def working_bytes(shape: ModelShape, prompt_tokens: int, element_bytes: int) -> int:
    """A prefill's transient activations per sequence, beyond the cache: a layer's input, output and
    feed-forward intermediates over the prompt, and one row of float32 logits."""
    intermediate = shape.intermediate_size or 4 * shape.hidden_size
    return prompt_tokens * (3 * shape.hidden_size + 2 * intermediate) * element_bytes + 4 * (shape.vocab_size or 0)


def fitting_batch(per_sequence_bytes: int, budget_bytes: int) -> int:
    """How many sequences of `per_sequence_bytes` fit `budget_bytes` (0: not even one)."""
    if per_sequence_bytes <= 0:
        raise ValueError("per_sequence_bytes must be positive")
    return max(0, int(budget_bytes // per_sequence_bytes))


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


# ---- FLOPs and bytes (matrix products, as torch.utils.flop_counter counts them: 2 per multiply-add)


def call_flops(shape: ModelShape, rows: int, query_tokens: int, key_tokens: int) -> int:
    """One layer call over `rows` sequences of `query_tokens` new tokens that attend to
    `key_tokens` (cached + new): its matrix products, and attention's two (scores and values,
    counted over every key position as attention kernels compute them)."""
    linear = 2 * shape.layer_matmul_parameters() * rows * query_tokens
    attention = 4 * rows * shape.num_heads * query_tokens * key_tokens * shape.head_dim
    return linear + attention


def lm_head_flops(shape: ModelShape, positions: int) -> int:
    return 2 * shape.lm_head_parameters() * positions


def decode_step_flops(schedule: Schedule, shape: ModelShape, rows: int, past_tokens: int) -> int:
    """One cached decoding step of `rows` sequences under `schedule`: every call attends to its
    cache (a sliding-window layer's holds its window) plus the new token; one lm head position."""
    layers = sum(call_flops(shape, rows, 1, slot_tokens(shape, layer, past_tokens) + 1)
                 for step in schedule for layer in step)
    return layers + lm_head_flops(shape, rows)


@dataclass(frozen=True)
class PassFlops:
    """FLOPs of one batch through every plan of a pass: layer calls along the shared walk (each
    distinct schedule prefix once) and the lm head once per plan."""

    layers: int
    lm_head: int

    @property
    def total(self) -> int:
        return self.layers + self.lm_head


def pass_flops(schedules: Sequence[Schedule], shape: ModelShape, rows: int, tokens: int, logit_positions: int | None = None,
               shared: bool = True) -> PassFlops:
    """A forward of `rows` x `tokens` (no cache) under each schedule, sharing prefixes when `shared`.

    `logit_positions` per row that the lm head computes (default: every token, as a loglikelihood
    forward does; a generation's prefill computes 1)."""
    calls = trie.distinct_layer_calls(schedules) if shared else trie.layer_calls(schedules)
    positions = tokens if logit_positions is None else logit_positions
    return PassFlops(layers=calls * call_flops(shape, rows, tokens, tokens),
                     lm_head=len(schedules) * lm_head_flops(shape, rows * positions))


def weight_bytes(shape: ModelShape, calls: int, element_bytes: int) -> int:
    """Weights a forward reads for `calls` layer calls and the lm head (matrices only)."""
    return (calls * shape.layer_matmul_parameters() + shape.lm_head_parameters()) * element_bytes


def most_kept_states(visits) -> int:
    """The most hidden states the walk `visits` (painters.trie.walk) holds at once: after a visit
    begins, the states at depths up to its start and those it keeps (painters.shared_pass.PrefixStore)."""
    most, held = 0, set()
    for visit in visits:
        held = {depth for depth in held if depth <= visit.start} | set(visit.keep)
        most = max(most, len(held))
    return most


def loglikelihood_kept_bytes(shape: ModelShape, kept_depths: int, rows: int, tokens: int, element_bytes: int) -> int:
    """What a loglikelihood pass holds beside the model for a batch: the hidden states kept at
    `kept_depths` branch points and one plan's logits and their float32 log-softmax."""
    states = kept_depths * rows * tokens * shape.hidden_size * element_bytes
    logits = rows * tokens * (shape.vocab_size or 0) * (element_bytes + 4)
    return states + logits


# ---- seconds on a device


@dataclass(frozen=True)
class DeviceProfile:
    """What a device can do: dense FLOP/s at the dtype, memory bandwidth, memory, and the shares
    of them a real run reaches (matrix-product efficiency, bandwidth efficiency)."""

    name: str
    flops: float
    bandwidth: float  # bytes/s
    memory_gb: float
    flops_efficiency: float = 0.5
    bandwidth_efficiency: float = 0.8
    call_seconds: float = 0.0  # fixed cost of one layer call in one forward (kernel launches; Python on a CPU)

    def seconds(self, flops: float, nbytes: float, calls: int = 0) -> float:
        """A step bound by its FLOPs or by the bytes it reads, whichever takes longer, plus its layer calls' fixed cost."""
        return max(flops / (self.flops * self.flops_efficiency), nbytes / (self.bandwidth * self.bandwidth_efficiency)) + calls * self.call_seconds


CPU_CALL_SECONDS = 6e-4

# bf16 dense peaks and memory bandwidth from the vendors' data sheets; a GPU layer call's fixed cost
# (~10 kernel launches) is an assumption, not yet measured. `cpu` is this project's 2-core machine in
# float32, fitted to the demo's evaluation jobs (results/cost.csv of a demo run; say so when changing it).
DEVICES = {
    "h100": DeviceProfile("h100", flops=989e12, bandwidth=3.35e12, memory_gb=80, call_seconds=3e-5),
    "h200": DeviceProfile("h200", flops=989e12, bandwidth=4.8e12, memory_gb=141, call_seconds=3e-5),
    "a100": DeviceProfile("a100", flops=312e12, bandwidth=2.0e12, memory_gb=80, call_seconds=3e-5),
    "l40s": DeviceProfile("l40s", flops=362e12, bandwidth=0.864e12, memory_gb=48, call_seconds=3e-5),
    "cpu": DeviceProfile("cpu", flops=200e9, bandwidth=20e9, memory_gb=24, flops_efficiency=0.5, bandwidth_efficiency=0.5,
                         call_seconds=CPU_CALL_SECONDS),
}


def device_profile(setting) -> DeviceProfile:
    """`cost.device`: a profile's name, or a mapping of DeviceProfile's fields."""
    if isinstance(setting, str):
        if setting not in DEVICES:
            raise ValueError(f"cost.device {setting!r} is not a known profile ({', '.join(DEVICES)}); "
                             "or give {name, flops, bandwidth, memory_gb}")
        return DEVICES[setting]
    fields = dict(setting)
    missing = [key for key in ("name", "flops", "bandwidth", "memory_gb") if key not in fields]
    if missing:
        raise ValueError(f"cost.device: missing {', '.join(missing)} (a profile needs name, flops, bandwidth, memory_gb)")
    return DeviceProfile(**fields)


# ---- benchmarks: how many tokens a pass holds


@dataclass(frozen=True)
class BenchmarkTokens:
    """The requests of one plan's evaluation of a benchmark: how many, and their mean sizes.

    Loglikelihood: `context` + `continuation` tokens per request. generate_until: a prompt of
    `context` tokens and up to `generated` new ones (plans that break a model rarely stop early).
    """

    requests: int
    context: float
    continuation: float = 0.0
    generated: int = 0
    measured: bool = False  # from a finished score's recorded requests, not the estimate below
    computed: float = 1.0  # the share of the tokens sent that a pass computes with shared contexts (painters.packing)

    @property
    def tokens(self) -> float:
        """Tokens as lm-eval sends them (each request its whole context and continuation)."""
        return self.requests * (self.context + self.continuation)

    @property
    def computed_tokens(self) -> float:
        """Tokens a pass computes when a document's context is computed once for all its choices."""
        return self.tokens * self.computed

    def limited(self, limit: float | None, per_document: float = 1.0) -> "BenchmarkTokens":
        """The requests under lm-eval's `limit` (a count of documents or a fraction)."""
        if limit is None or self.measured:
            return self
        documents = self.requests / per_document
        kept = min(documents, limit) if limit >= 1 else documents * limit
        return BenchmarkTokens(round(kept * per_document), self.context, self.continuation, self.generated, computed=self.computed)


# Estimates before a benchmark has run for a model (Llama-2 tokenizer; lm-eval 0.4.13's tasks):
# documents x choices requests, mean context and continuation tokens. Once a benchmark has run,
# its score rows record the real counts (`requests`, `request_tokens`), which replace these.
BENCHMARK_ESTIMATES = {
    "hellaswag": (BenchmarkTokens(40168, 55, 22), 4),        # 10,042 documents x 4 endings: ~3.1 M tokens
    "arc_easy": (BenchmarkTokens(9504, 25, 4), 4),           # 2,376 x 4 answers: ~0.28 M
    "arc_challenge": (BenchmarkTokens(4688, 30, 6), 4),      # 1,172 x 4: ~0.17 M
    "winogrande": (BenchmarkTokens(2534, 20, 8), 2),         # 1,267 x 2 (partial scoring): ~0.07 M
    "lambada_openai": (BenchmarkTokens(5153, 78, 2), 1),     # ~0.41 M
    "gsm8k": (BenchmarkTokens(1319, 824, 0, 256), 1),        # 5-shot prompts, 256 new tokens
}
DEFAULT_ESTIMATE = (BenchmarkTokens(1000, 64, 8), 1)  # any other benchmark, until it has run once


def measured_tokens(requests: int, request_tokens: int, generated: int = 0, computed: float = 1.0) -> BenchmarkTokens:
    """A benchmark's size as a finished score records it (painters.results.recorded_request_sizes);
    `computed`: the share shared contexts leave, from the benchmark's stated estimate."""
    return BenchmarkTokens(requests, request_tokens / max(1, requests), 0.0, generated, measured=True, computed=computed)


def benchmark_tokens(benchmark: str, generative: bool, max_gen_toks: int | None, limit: float | None,
                     shared_contexts: bool = True) -> BenchmarkTokens:
    """The stated estimate of a benchmark's requests (before any score of it exists). With
    `shared_contexts`, a document's context counts once for all its choices (`computed`)."""
    estimate, per_document = BENCHMARK_ESTIMATES.get(benchmark, DEFAULT_ESTIMATE)
    if generative:
        estimate = BenchmarkTokens(estimate.requests, estimate.context + estimate.continuation, 0,
                                   max_gen_toks or estimate.generated or 256)
    else:
        continuation = estimate.continuation or 1
        computed = (estimate.context + per_document * continuation) / (per_document * (estimate.context + continuation))
        estimate = BenchmarkTokens(estimate.requests, estimate.context, continuation,
                                   computed=computed if shared_contexts else 1.0)
    return estimate.limited(limit, per_document)


# Shapes of the paper's models (their config.json files), for planning where a model is not in the
# local cache yet; a config.json at hand always wins.
STATED_SHAPES = {
    "meta-llama/Llama-2-7b-hf": ModelShape(32, 4096, 32, 32, 128, 11008, 32000),
    "meta-llama/Llama-2-13b-hf": ModelShape(40, 5120, 40, 40, 128, 13824, 32000),
    "meta-llama/Llama-2-70b-hf": ModelShape(80, 8192, 64, 8, 128, 28672, 32000),
    "mistralai/Mistral-7B-v0.1": ModelShape(32, 4096, 32, 8, 128, 14336, 32000),
    "EleutherAI/pythia-6.9b": ModelShape(32, 4096, 32, 32, 128, 16384, 50432, gated_mlp=False),
}


# ---- the cost of a job: one model, one benchmark, a set of plans in one shared pass


class PassEstimate:
    """The running cost of one evaluation job (one model, one benchmark, plans in one shared pass),
    plans added one by one as a job is filled (painters.sweep.batch_jobs).

    Loglikelihood: batches of `batch_size` requests of the mean length through the shared walk,
    each bound by its FLOPs or its weight reads. generate_until: per plan, the batch its cache
    lets fit (painters.engine sizes it so); the prompt's prefill computes only the schedule
    prefixes not seen before in the job; then one decode step per new token, bound by its
    weight and cache reads or its FLOPs.
    """

    def __init__(self, shape: ModelShape, tokens: BenchmarkTokens, device: DeviceProfile, element_bytes: int,
                 batch_size: int, kv_cache: str = "exact"):
        self.shape, self.tokens, self.device, self.element_bytes = shape, tokens, device, element_bytes
        self.batch_size, self.kv_cache = batch_size, kv_cache
        self.weights = weight_bytes(shape, shape.depth, element_bytes)
        self.seen: set[Schedule] = set()
        self.schedules: list[Schedule] = []
        self.calls = self.plans = 0
        self.flops = self.generation_seconds = 0.0
        self.generation_peak = 0

    def _new_calls(self, schedule: Schedule) -> tuple[list[Schedule], int]:
        new = [schedule[: depth + 1] for depth in range(len(schedule)) if schedule[: depth + 1] not in self.seen]
        return new, trie.prefix_calls(new)

    def _loglikelihood(self, calls: int, plans: int) -> tuple[float, float]:
        length = max(1, round(self.tokens.context + self.tokens.continuation))
        # shared contexts pack a document's requests into fewer rows: as if fewer requests of that length
        batches = -(-round(self.tokens.requests * self.tokens.computed) // self.batch_size)
        flops = calls * call_flops(self.shape, self.batch_size, length, length) + plans * lm_head_flops(self.shape, self.batch_size * length)
        return batches * flops, batches * self.device.seconds(flops, weight_bytes(self.shape, calls, self.element_bytes), calls)

    def _generation(self, schedule: Schedule, new_calls: int) -> tuple[float, float, int]:
        shape, prompt, new = self.shape, max(1, round(self.tokens.context)), self.tokens.generated
        per_sequence = (cache_bytes(schedule, shape, prompt + new, self.element_bytes, self.kv_cache)
                        + working_bytes(shape, prompt, self.element_bytes))
        budget = self.device.memory_gb * 2**30 - self.weights
        rows = max(1, min(self.batch_size, self.tokens.requests, fitting_batch(per_sequence, budget)))
        batches = -(-self.tokens.requests // rows)
        calls = len([i for step in schedule for i in step])
        prefill = new_calls * call_flops(shape, rows, prompt, prompt) + lm_head_flops(shape, rows)
        step = decode_step_flops(schedule, shape, rows, prompt + new // 2)
        step_bytes = weight_bytes(shape, calls, self.element_bytes) + rows * cache_bytes(
            schedule, shape, prompt + new // 2, self.element_bytes, self.kv_cache)
        seconds = (self.device.seconds(prefill, weight_bytes(shape, new_calls, self.element_bytes), new_calls)
                   + new * self.device.seconds(step, step_bytes, calls))
        return batches * (prefill + new * step), batches * seconds, self.weights + rows * per_sequence

    def seconds_with(self, schedule: Schedule) -> float:
        """The job's seconds if `schedule` were added."""
        _, new_calls = self._new_calls(schedule)
        if self.tokens.generated:
            return self.generation_seconds + self._generation(schedule, new_calls)[1]
        return self._loglikelihood(self.calls + new_calls, self.plans + 1)[1]

    def add(self, schedule: Schedule) -> None:
        new, new_calls = self._new_calls(schedule)
        self.seen.update(new)
        self.schedules.append(schedule)
        self.calls += new_calls
        self.plans += 1
        if self.tokens.generated:
            flops, seconds, peak = self._generation(schedule, new_calls)
            self.flops += flops
            self.generation_seconds += seconds
            self.generation_peak = max(self.generation_peak, peak)

    @property
    def seconds(self) -> float:
        return self.generation_seconds if self.tokens.generated else self._loglikelihood(self.calls, self.plans)[1]

    def total_flops(self) -> float:
        return self.flops if self.tokens.generated else self._loglikelihood(self.calls, self.plans)[0]

    @property
    def peak_bytes(self) -> int:
        """The most memory the job holds: the weights, and the largest generation batch's cache or a
        loglikelihood batch's kept states and logits."""
        if self.tokens.generated:
            return int(self.generation_peak)
        length = max(1, round(self.tokens.context + self.tokens.continuation))
        kept = most_kept_states(trie.walk(self.schedules))
        return int(self.weights + loglikelihood_kept_bytes(self.shape, kept, self.batch_size, length, self.element_bytes))


@dataclass(frozen=True)
class JobCost:
    """What one evaluation job costs on a device: FLOPs, seconds, and the most memory it holds."""

    flops: float
    seconds: float
    peak_bytes: int  # weights, and the largest batch's cache or kept states and logits


def job_cost(schedules: Sequence[Schedule], shape: ModelShape, tokens: BenchmarkTokens, device: DeviceProfile,
             element_bytes: int, batch_size: int, kv_cache: str = "exact") -> JobCost:
    """The cost of scoring `schedules` on a benchmark of `tokens` in one shared pass (PassEstimate)."""
    estimate = PassEstimate(shape, tokens, device, element_bytes, batch_size, kv_cache)
    for schedule in schedules:
        estimate.add(schedule)
    return JobCost(estimate.total_flops(), estimate.seconds, estimate.peak_bytes)
