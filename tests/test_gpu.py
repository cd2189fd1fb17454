"""The CUDA paths, on small models: what the CPU tests check, checked on a GPU (issue 27).

Every test here is marked `gpu` and skips, with the reason, where torch sees no CUDA GPU, so CI
on CPUs stays green. `pytest -m gpu` runs them; `benchmarks/gpu_check.sh` runs them on a fresh
GPU machine together with the throughput benchmark. The models are random-init: a Llama-shaped
decoder of 8 layers (painters.tiny), a 6-layer BERT (as tests/test_glue.py) and a 4-layer ViT
(as tests/test_layershuffle_training.py), in bf16 and fp16 (fp32 where tokens must be equal).

The references are those of the CPU tests, whose helpers are reused: HFLM plan by plan under
`surgery.apply` (test_engine, test_generation), the real cache tensors (painters.cost), an
uninterrupted training run (kill-and-resume), training the model rebuilt with the plan's layers
in place (GLUE).
"""

import os

# deterministic cuBLAS for the bit-for-bit resume test: read when CUDA makes its cuBLAS
# handles, so it is set before anything here starts CUDA (collection imports this first)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import copy
import inspect
import random
import shutil
import warnings
from contextlib import contextmanager

import pytest
import torch
import transformers
from lm_eval.models.huggingface import HFLM

import test_engine
import test_generation
import test_glue
import test_layershuffle_training
from painters import cost, exactness, generation, surgery, trie
from painters import plan as plans
from painters.engine import SweepLM
from painters.glue import finetune, tasks
from painters.layershuffle import training, vision
from painters.tiny import tiny_model

CUDA = torch.cuda.is_available()
NO_CUDA = (f"needs a CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is False; "
           f"CUDA build: {torch.version.cuda or 'no, a CPU build'})")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NO_CUDA)]

DEPTH = 8  # the decoder's depth: the plan lists of test_engine and test_generation are for 8 layers
assert test_engine.DEPTH == test_generation.DEPTH == DEPTH
NO_BF16 = pytest.mark.skipif(CUDA and not torch.cuda.is_bf16_supported(), reason="this GPU has no bfloat16")
# bf16 and fp16, bf16 skipped where the GPU lacks it
HALF = [pytest.param(torch.bfloat16, id="bf16", marks=NO_BF16), pytest.param(torch.float16, id="fp16")]
# torch.testing's tolerances for the dtype (the shared pass computes what plan by plan computes,
# so the answers are expected equal; the tolerance only forgives kernels that are not bitwise stable)
TOLERANCE = {torch.float32: dict(rtol=1.3e-6, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
             torch.float16: dict(rtol=1e-3, atol=1e-3)}


@pytest.fixture(scope="module")
def tokenizer(world):
    """The tokenizer of the CPU tests' tiny model (conftest's `world`)."""
    _, model_dir, _ = world
    return transformers.AutoTokenizer.from_pretrained(model_dir)


def cuda_decoder(tokenizer, dtype, seed, **sizes):
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=seed, layers=DEPTH, **sizes)
    return model.to("cuda", dtype).eval()


# Requests that share a context are packed into one row when the engine does so (painters.packing,
# `share_contexts`): equal to HFLM's rows within float rounding, so compared within a bound per
# scored token (the engine's own check allows 0.1 in a half-precision log-probability); on rows of
# their own the pass computes what plan by plan computes, within the dtype's tolerance.
SHARES_CONTEXTS = "share_contexts" in inspect.signature(SweepLM.__init__).parameters
PACKED_PER_TOKEN = {torch.float32: 1e-4, torch.bfloat16: 0.1, torch.float16: 0.1}
ROWS = [pytest.param(False, id="own-rows"),
        pytest.param(True, id="packed", marks=pytest.mark.skipif(not SHARES_CONTEXTS, reason="this engine packs no contexts"))]


def sweep_lm(model, tokenizer, packed: bool, **kwargs) -> SweepLM:
    if SHARES_CONTEXTS:
        kwargs["share_contexts"] = packed
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, log=lambda line: None, **kwargs)
    if packed:  # the engine's own check of a packed row passed on this GPU in this dtype
        assert lm.packing_refusal is None, lm.packing_refusal
    return lm


def assert_answers_close(got, expected, requests, dtype, packed: bool):
    """(log-likelihood, is-greedy) pairs equal within the tolerance: the dtype's on rows of their own;
    on packed rows, a bound per scored token (and in half precision, a greedy flag may flip where
    two logits are within rounding: at most 1 in 100)."""
    assert len(got) == len(expected) == len(requests)
    exact = sum(a == b for a, b in zip(got, expected))
    flips = 0
    for index, ((value, greedy), (expected_value, expected_greedy), request) in enumerate(zip(got, expected, requests)):
        if packed:
            bound = PACKED_PER_TOKEN[dtype] * len(request[2])
            assert abs(value - expected_value) <= bound, (index, value, expected_value, f"{exact} equal")
        else:
            tolerance = TOLERANCE[dtype]
            assert value == pytest.approx(expected_value, rel=tolerance["rtol"], abs=tolerance["atol"]), (index, exact)
        flips += greedy != expected_greedy
    allowed = max(1, len(got) // 100) if packed and dtype != torch.float32 else 0
    assert flips <= allowed, f"{flips} greedy flags differ ({exact} of {len(got)} answers equal)"


# ---- loglikelihood: the shared pass, on the GPU


@pytest.mark.parametrize("packed", ROWS)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), *HALF])
def test_the_shared_loglikelihood_pass_equals_plan_by_plan_on_cuda(tokenizer, dtype, packed):
    """If this fails, the shared pass on a GPU answers a plan otherwise than HFLM under that plan
    does (test_engine's check, on CUDA), or keeps its branch-point states off the GPU."""
    model = cuda_decoder(tokenizer, dtype, seed=3)
    lm = sweep_lm(model, tokenizer, packed, batch_size=5)
    kept = []
    put = lm.store.put

    def recording_put(depth, output):
        state = surgery.output_state(output)
        kept.append((state.device.type, state.dtype))
        put(depth, output)

    lm.store.put = recording_put
    plan_list = [plans.parse(key) for key in test_engine.PLAN_KEYS]
    requests = test_engine.token_requests()
    answers, calls = test_engine.engine_answers(lm, plan_list, requests)
    assert calls == [len(requests)]  # one pass answered every plan
    assert kept and set(kept) == {("cuda", dtype)}  # the kept hidden states live on the GPU, in the model's dtype
    assert lm.store.peak_bytes > 0 and lm.store.states == {}
    for plan in plan_list:
        assert_answers_close(answers[plan.key], test_engine.plan_at_a_time(lm, plan, requests), requests, dtype, packed)
    assert answers["baseline"] != answers["skip-N3"]


# ---- batch_size auto: the size found fits the pass


@contextmanager
def gpu_memory_cap(extra_bytes: int):
    """The caching allocator refuses to hold more than it holds now plus `extra_bytes`."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved() + extra_bytes) / total))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


@pytest.mark.parametrize("packed", ROWS)
def test_batch_size_auto_finds_a_batch_that_the_pass_then_runs_at(tokenizer, packed):
    """If this fails, `batch_size: auto` in a shared pass picks a batch that runs out of memory (its
    probe did not hold what the pass holds: kept states, packed rows), or answers otherwise at it."""
    model = cuda_decoder(tokenizer, torch.bfloat16, seed=3, hidden=128)
    rng = random.Random(4)
    requests = []
    # 3-token continuations: on rows of their own, one context each (400-500 tokens, no two rows alike);
    # packed, four continuations of each context (300-400 tokens) share one row
    for _ in range(60 if packed else 240):
        context = [rng.randrange(3, 200) for _ in range(rng.randrange(300, 400) if packed else rng.randrange(400, 500))]
        for _ in range(4 if packed else 1):
            requests.append(((None, None), context, [rng.randrange(3, 200) for _ in range(3)]))
    plan_list = [plans.parse(key) for key in ("baseline", "skip-N1", "reverse-N2", "looped_parallel-N1-K1",
                                              "looped_parallel-N1-K2", "looped_parallel-N1-K3")]
    lm = sweep_lm(model, tokenizer, packed, batch_size="auto", max_batch_size=1024)
    with gpu_memory_cap(128 * 2**20):  # far less than 1024 rows need: auto must lower the batch
        answers, calls = test_engine.engine_answers(lm, plan_list, requests)
    found = lm.detected_batch_size
    assert calls == [len(requests)]
    assert found is not None and 1 <= found < 1024, found
    assert found < (60 if packed else 240)  # the pass ran more than one batch at the size found
    for plan in plan_list:  # the answers HFLM gives plan by plan at that batch size
        with surgery.apply(model, plan):
            reference = HFLM._loglikelihood_tokens(lm, requests, override_bs=found)
        assert_answers_close(answers[plan.key], reference, requests, torch.bfloat16, packed)


# ---- generation: the shared prefill, both cache modes


GENERATION_PLANS = list(dict.fromkeys(test_generation.PLAN_KEYS))  # each plan once


@pytest.mark.parametrize("kv_cache", ["exact", "reference"])
def test_shared_prefill_generates_what_hflm_generates_plan_by_plan_on_cuda(tokenizer, kv_cache):
    """If this fails, generation on a GPU with the shared prefill gives other greedy tokens than
    HFLM plan by plan (test_generation's check, on CUDA, in fp32 where tokens must be equal)."""
    model = cuda_decoder(tokenizer, torch.float32, seed=5)
    plan_list = [plans.parse(key) for key in test_generation.PLAN_KEYS]
    requests = test_generation.instances(test_generation.prompts(tokenizer))
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=4, kv_cache=kv_cache)
    outputs = test_generation.shared_pass(lm, plan_list, requests)
    for plan in plan_list:
        assert outputs[plan.key] == test_generation.plan_by_plan(model, tokenizer, plan, requests, kv_cache, 4), plan.key
    assert outputs["baseline"] != outputs["skip-N1"]
    assert lm.prefill_store.states == {} and lm.prefill_store.kv == {}


class FirstTokenLogits:
    """The last position's logits of the first forward (the prompt's prefill) of each generate()."""

    def __init__(self, model):
        self.model, self.captured, self.armed = model, [], False

    def __enter__(self):
        generate = self.model.generate

        def armed_generate(*args, **kwargs):
            self.armed = True
            return generate(*args, **kwargs)

        self.model.generate = armed_generate
        self.handle = self.model.register_forward_hook(self._record)
        return self

    def _record(self, module, args, output):
        if self.armed:
            self.armed = False
            self.captured.append(output.logits[:, -1].detach().float().clone())

    def __exit__(self, *exc):
        self.handle.remove()
        del self.model.generate


@pytest.mark.parametrize("kv_cache", ["exact", "reference"])
@pytest.mark.parametrize("dtype", HALF)
def test_shared_prefill_gives_the_first_token_logits_of_plan_by_plan_in_half_precision(tokenizer, dtype, kv_cache):
    """If this fails, the shared prefill in bf16/fp16 computes another prompt state than HFLM plan
    by plan (greedy tokens may flip in half precision, so the first token's logits are compared)."""
    model = cuda_decoder(tokenizer, dtype, seed=5)
    plan_list = [plans.parse(key) for key in GENERATION_PLANS]
    requests = test_generation.instances(test_generation.prompts(tokenizer), max_gen_toks=3)
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=4, kv_cache=kv_cache)
    shared = {plan.key: [] for plan in plan_list}
    with FirstTokenLogits(model) as first:
        generate_batch = lm._generate_batch

        def attributed(*args):  # each plan's generate() of a batch, in the walk's order
            for plan, output in generate_batch(*args):
                shared[plan.key].append(first.captured.pop())
                yield plan, output

        lm._generate_batch = attributed
        test_generation.shared_pass(lm, plan_list, requests)
        assert first.captured == []
        for plan in plan_list:
            test_generation.plan_by_plan(model, tokenizer, plan, requests, kv_cache, 4)
            reference, first.captured = first.captured, []
            assert len(shared[plan.key]) == len(reference) == 3, plan.key  # 11 prompts, batches of 4
            for got, expected in zip(shared[plan.key], reference):
                torch.testing.assert_close(got, expected, **TOLERANCE[dtype], msg=lambda m: f"{plan.key}: {m}")
    assert not torch.equal(shared["baseline"][0], shared["skip-N1"][0])


# ---- generation's memory: the cost model against the CUDA tensors and the allocator


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kv_cache", ["exact", "reference"])
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_cache_bytes_predicted_equal_the_cuda_tensors(arch, kv_cache, dtype):
    """If this fails, painters.cost's cache arithmetic (what generation budgets) is not what a
    PlanCache holds on a GPU in half precision (test_generation's check, on CUDA)."""
    model = tiny_model(arch, vocab_size=300, seed=1, layers=DEPTH).to("cuda", dtype).eval()
    shape = cost.ModelShape.from_config(model.config)
    element = cost.dtype_bytes(model.dtype)
    assert element == 2
    prompt, new_tokens = 13, 6
    inputs = torch.randint(5, 290, (3, prompt), device="cuda")
    checked = 0
    for key in ("baseline", "skip-N2", "middle_repeat-N1", "parallel-N1", "looped_parallel-N0-K3", "looped_parallel-N2-K4"):
        plan = plans.parse(key)
        schedule = plan.schedule(DEPTH)
        if kv_cache == "reference" and generation.generation_refusal(model, plan, kv_cache):
            continue
        cache = test_generation.generate_exactly(model, plan, inputs, new_tokens, kv_cache)
        tensors = [t for layer in cache.layers if layer.is_initialized for t in (layer.keys, layer.values)]
        assert tensors and {(t.device.type, t.dtype) for t in tensors} == {("cuda", dtype)}
        # the last generated token is never fed back: the cache holds prompt + new_tokens - 1
        assert cache.nbytes() == 3 * cost.cache_bytes(schedule, shape, prompt + new_tokens - 1, element, kv_cache), key
        checked += 1
    assert checked >= 3


def long_prompts(tokenizer, count: int, words: tuple[int, int], seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [tokenizer.decode([i]) for i in range(10, 200)]
    return ["".join(rng.choice(vocabulary) for _ in range(rng.randrange(*words))) for _ in range(count)]


def budget_per_sequence(lm, requests, plan_list) -> dict[str, tuple[int, int]]:
    """Per plan, (cache, kept + working) bytes per sequence: the arithmetic SweepLM.generation_batch_size
    budgets with (as tests/test_generation.py computes it)."""
    depth = surgery.num_layers(lm.model)
    shape, element = cost.ModelShape.from_config(lm.model.config), cost.dtype_bytes(lm.model.dtype)
    new_tokens = max(request.args[1]["max_gen_toks"] for request in requests)
    prompt = min(max(len(lm.tok_encode(request.args[0])) for request in requests), lm.max_length - new_tokens)
    schedules = [plan.schedule(depth) for plan in plan_list]
    extra = (cost.shared_prefill_bytes(schedules, trie.walk(schedules), shape, prompt, element)
             + cost.working_bytes(shape, prompt, element))
    return {plan.key: (cost.cache_bytes(schedule, shape, prompt + new_tokens, element, lm.kv_cache), extra)
            for plan, schedule in zip(plan_list, schedules)}


@pytest.mark.parametrize("kv_cache", ["exact", "reference"])
def test_a_generation_pass_stays_within_the_memory_it_budgeted(tokenizer, kv_cache):
    """If this fails, generation's memory budget (weights + batch x (cache + kept + working), per plan)
    underestimates what a shared-prefill pass allocates on a GPU: a batch that 'fits' would run out of memory."""
    model = cuda_decoder(tokenizer, torch.bfloat16, seed=5, hidden=256, heads=8)
    plan_list = [plans.parse(key) for key in ("baseline", "skip-N2", "reverse-N1", "parallel-N1", "looped_parallel-N0-K4")]
    requests = test_generation.instances(long_prompts(tokenizer, 12, (120, 160), seed=7), max_gen_toks=16)
    logged = []
    lm = SweepLM(pretrained=model, tokenizer=tokenizer, batch_size=12, kv_cache=kv_cache, log=logged.append)
    per_sequence = budget_per_sequence(lm, requests, plan_list)
    loaded = sum(t.nelement() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    largest = max(sum(parts) for parts in per_sequence.values())
    lm.memory_gb = (loaded + 3.5 * largest) / 2**30  # room for three sequences of the plan that needs most
    sizes = lm.generation_batch_size(requests, plan_list)
    assert min(sizes.values()) == 3 and max(sizes.values()) <= 12, sizes
    test_generation.shared_pass(lm, plan_list[:2], requests[:4])  # kernels and cuBLAS workspaces, outside the measurement
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    lm.peak_cache_bytes = 0
    outputs = test_generation.shared_pass(lm, plan_list, requests)
    torch.cuda.synchronize()
    used = torch.cuda.max_memory_allocated() - before
    budgeted = max(sizes[key] * sum(parts) for key, parts in per_sequence.items())
    caches = max(sizes[key] * cache for key, (cache, _) in per_sequence.items())
    assert used <= budgeted <= lm.memory_gb * 2**30 - loaded, (
        f"a generate pass allocated {used:,} bytes beyond the weights; generation budgeted {budgeted:,} "
        f"(caches {caches:,}); batch sizes {sizes}")
    assert 0 < lm.peak_cache_bytes <= caches
    assert all(len(outputs[key]) == len(requests) for key in outputs)
    assert any("lowered" in line for line in logged)


# ---- device_map: auto over the visible GPUs


@pytest.mark.skipif(CUDA and torch.cuda.device_count() < 2,
                    reason=f"device_map auto over GPUs needs 2 or more; {torch.cuda.device_count()} visible")
def test_device_map_auto_over_the_gpus_gives_the_logits_of_one_device(tmp_path):
    """If this fails, a model spread over GPUs by `device_map: auto` (painters evaluate
    --device-map auto) answers otherwise than on one GPU: surgery does not move the hidden state
    to the device of each layer it runs (repeated, reversed, parallel layers)."""
    from painters.evaluate import ModelSpec, Session
    from painters.tiny import save_tiny_causal_lm

    model_dir = save_tiny_causal_lm(tmp_path / "model", arch="llama", seed=0, layers=DEPTH, hidden=256, heads=8)
    spread = Session(ModelSpec(model=str(model_dir), dtype="float32", device_map="auto", batch_size=4), log=lambda _: None)
    devices = {str(device) for device in spread.model.hf_device_map.values()}
    assert len({d for d in devices if d not in ("cpu", "disk")}) >= 2, f"auto put every layer on {devices}"
    single = Session(ModelSpec(model=str(model_dir), dtype="float32", device="cuda:0", batch_size=4), log=lambda _: None)
    keys = ["baseline", "reverse-N1", "middle_repeat-N2", "parallel-N1", "looped_parallel-N1-K3", "shuffle_all-S0",
            "order-0_7_3.4_3.4_1_2"]
    plan_list = [plans.parse(key) for key in keys]
    requests = test_engine.token_requests(seed=5, count=10)
    answers, _ = test_engine.engine_answers(spread.lm, plan_list, requests)
    expected, _ = test_engine.engine_answers(single.lm, plan_list, requests)
    for plan in plan_list:  # the same rows (packed or not) on one GPU and on several
        assert_answers_close(answers[plan.key], expected[plan.key], requests, torch.float32, packed=False)
    generate = test_generation.instances(test_generation.prompts(spread.tokenizer, count=6, seed=4), max_gen_toks=5)
    assert test_generation.shared_pass(spread.lm, plan_list, generate) == test_generation.shared_pass(single.lm, plan_list, generate)


# ---- GLUE: fine-tuning in fp16 with the Trainer


def glue_tokenizer():
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *test_glue.POSITIVE, *test_glue.NEGATIVE, *test_glue.NEUTRAL]
    return transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="the Trainer would replicate over every visible GPU "
                    "(painters finetune refuses that): run with CUDA_VISIBLE_DEVICES set to one GPU")
def test_glue_finetuning_in_fp16_with_the_trainer_under_a_plan_equals_the_rebuilt_model():
    """If this fails, GLUE fine-tuning under a plan on a GPU in fp16 (the reference's setting) is not
    fine-tuning the plan's network (test_glue's check, on CUDA with the Trainer's mixed precision)."""
    tokenizer = glue_tokenizer()
    task = tasks.get_task("sst2")
    train_set = finetune.encode(tokenizer, task, test_glue.TRAIN_ROWS, test_glue.SEQ)
    eval_set = finetune.encode(tokenizer, task, test_glue.EVAL_ROWS, test_glue.SEQ)
    torch.manual_seed(0)
    start = transformers.BertForSequenceClassification(test_glue.bert_config(len(tokenizer)))
    settings = finetune.TrainingSettings(epochs=2, batch_size=8, learning_rate=3e-3, max_seq_length=test_glue.SEQ, fp16=True)
    finetune.check_settings(settings, "cuda")
    plan = plans.parse("skip-N1")
    calls = surgery.called_layers(plan.schedule(test_glue.DEPTH))

    under_plan = copy.deepcopy(start)
    dtypes = []
    handle = under_plan.bert.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda module, args, output: dtypes.append(output.dtype) if module.training else None)
    predicted = finetune.train_and_predict(under_plan, plan, train_set, eval_set, settings, 0, "cuda")
    handle.remove()
    rebuilt = exactness.rebuilt_model(start, plan, tie_repeated=True)
    expected = finetune.train_and_predict(rebuilt, test_glue.BASELINE, train_set, eval_set, settings, 0, "cuda")

    assert dtypes and set(dtypes) == {torch.float16}  # the Trainer trained in fp16 autocast
    assert next(under_plan.parameters()).device.type == "cuda" and next(under_plan.parameters()).dtype == torch.float32
    assert predicted.shape == (len(test_glue.EVAL_ROWS),)
    assert predicted.tolist() == expected.tolist()
    assert test_glue.largest_difference(rebuilt, under_plan, calls) <= 1e-3
    assert test_glue.most_changed(under_plan.classifier, start.classifier) > 1e-4  # it trained (loss scaling let steps through)
    for index in set(range(test_glue.DEPTH)) - set(calls):  # the layers the plan skips do not train
        for trained, original in zip(under_plan.bert.encoder.layer[index].parameters(),
                                     start.bert.encoder.layer[index].parameters()):
            assert torch.equal(trained.cpu(), original)


# ---- LayerShuffle training: mixed precision, kill-and-resume with the CUDA RNG, pinned workers


@pytest.fixture(scope="module")
def digits():
    return vision.load_digits(0)


def cuda_vit(data, attention="sdpa"):
    """test_layershuffle_training's tiny ViT on the GPU, with dropout (so training draws from the CUDA RNG)."""
    model = test_layershuffle_training.tiny(data)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    model.config._attn_implementation = attention
    return model.to("cuda")


@pytest.fixture
def deterministic():
    """Deterministic kernels where torch has them (cuDNN's convolutions, scatter and index ops); bit-for-bit
    resume on a GPU needs them, as it would in a user's job."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)  # NLLLoss has no deterministic CUDA kernel: warn, not fail
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=NO_BF16),
                                       "fp16"])
def test_a_killed_cuda_run_resumes_bit_for_bit_with_the_cuda_rng(digits, tmp_path, precision, attention, deterministic, monkeypatch):
    """If this fails, a LayerShuffle training job on a GPU in mixed precision (fp16: with its loss
    scale) killed and rerun does not end where an uninterrupted one ends: the checkpoint lacks the
    CUDA RNG state (dropout), the scaler's state, or a kernel is not deterministic."""
    settings = training.TrainSettings(variant="layershuffle_position", steps=12, batch_size=32, learning_rate=2e-3,
                                      checkpoint_every=4, precision=precision)
    straight = cuda_vit(digits, attention)
    straight_modules, straight_history = training.train(straight, digits.train, settings, log=lambda _: None)

    checkpoint = tmp_path / "run.ckpt"
    training.train(cuda_vit(digits, attention), digits.train, settings, checkpoint=checkpoint, log=lambda _: None, stop_after=6)
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 4 and state["cuda_rng"] is not None
    assert ("scale" in state["scaler"]) == (precision == "fp16")  # fp16: the loss scale is saved; bf16 needs none
    shutil.copy(checkpoint, tmp_path / "step4.ckpt")
    lines = []
    resumed = cuda_vit(digits, attention)  # a new process: the model as built, then the checkpoint
    modules, history = training.train(resumed, digits.train, settings, checkpoint=checkpoint, log=lines.append)
    assert lines[0].startswith("resumed from the checkpoint of step 4")
    assert [step for step, _ in history] == list(range(4, 12))
    assert [loss for _, loss in history] == [loss for step, loss in straight_history if step >= 4]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for a, b in zip(straight_modules.state_dict().values(), modules.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # the comparison can fail: resumed without the CUDA RNG state, dropout draws other masks
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *args, **kwargs: None)
    _, other = training.train(cuda_vit(digits, attention), digits.train, settings, checkpoint=tmp_path / "step4.ckpt",
                              log=lambda _: None)
    assert [loss for _, loss in other] != [loss for step, loss in straight_history if step >= 4]


def test_pinned_memory_workers_read_the_batches_the_main_process_reads(digits):
    """If this fails, DataLoader workers with pinned memory (a GPU job's `workers`) hand the
    training or the evaluation other batches, or batches that are not pinned."""
    rows = [training.batch_indices(len(digits.train), 32, 0, step) for step in range(10)]
    plain = list(vision.batches(digits.train, iter(rows), workers=0))
    pinned = list(vision.batches(digits.train, iter(rows), workers=2, pin_memory=True))
    assert len(plain) == len(pinned) == 10
    for (images, labels), (pinned_images, pinned_labels) in zip(plain, pinned):
        assert pinned_images.is_pinned() and pinned_labels.is_pinned()
        assert torch.equal(images, pinned_images) and torch.equal(labels, pinned_labels)


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=NO_BF16),
                                       "fp16"])
def test_training_and_scoring_with_pinned_workers_equal_reading_in_process(digits, precision, deterministic):
    """If this fails, `--workers N` changes what a GPU training or evaluation computes (it must not:
    the workers are not a setting of the trained model)."""
    settings = training.TrainSettings(variant="layerdrop", steps=8, batch_size=32, learning_rate=2e-3, precision=precision)
    in_process, with_workers = cuda_vit(digits), cuda_vit(digits)
    _, history = training.train(in_process, digits.train, settings, log=lambda _: None, workers=0)
    _, worker_history = training.train(with_workers, digits.train, settings, log=lambda _: None, workers=2)
    assert worker_history == history
    for a, b in zip(in_process.state_dict().values(), with_workers.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    plan_list = [training.BASELINE, plans.parse("shuffle_all-S0"), plans.parse("prune-P25-S1")]
    scores = training.accuracies(in_process, None, plan_list, digits.test, precision=precision, workers=0)
    assert training.accuracies(in_process, None, plan_list, digits.test, precision=precision, workers=2) == scores
