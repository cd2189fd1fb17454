"""`painters evaluate`: score one model under many plans with lm-eval, one parquet per (plan, benchmark).

The model and tokenizer are loaded once and the lm-eval tasks are built once.
Per benchmark, each plan runs `lm_eval.evaluator.evaluate()` on those same task
objects; the model side (painters.engine.SweepLM) answers the loglikelihood
requests of all plans in one shared pass, and generate_until tasks run plan by
plan inside `surgery.apply`. lm-eval's sqlite request cache is never used: it keys
on the request text only, so it would hand one plan's answers to another.

Every (plan, benchmark) result is written as soon as it is known, atomically
(painters.results). A pair whose parquet already exists is kept, not recomputed,
unless --overwrite is given, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from painters import plan as plans_module
from painters.cost import KV_CACHE_MODES

# lm-eval's bootstrap of stderrs (perplexity, ...) forks a process pool unless this is
# set. Forking a process that runs torch threads can hang the pool (seen in a long-lived
# process); the single-process loop draws the same resamples (same per-chunk seeds).
os.environ.setdefault("DISABLE_MULTIPROC", "1")

DTYPES = ("auto", "float32", "bfloat16", "float16")
# lm-eval's own defaults in simple_evaluate (python, numpy, torch, few-shot sampler). They are
# pinned again before every (plan, benchmark) evaluation, so a score never depends on what
# ran before it in the same process; the few-shot seed is a setting (--fewshot-seed).
PYTHON_SEED, NUMPY_SEED, TORCH_SEED = 0, 1234, 1234
FEWSHOT_SEED = 1234
# what `--model` may be when it is not an existing directory: a hub id (`org/name` or `name`)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides how a model is loaded and which tasks it can run."""

    model: str
    dtype: str = "auto"
    device: str | None = None  # None: cuda if available, else cpu
    device_map: str | None = None
    batch_size: int | str = 16  # or "auto": lm-eval finds the largest that fits
    max_length: int | None = None
    data_dir: str | None = None
    include_paths: tuple[str, ...] = ()
    trust_remote_code: bool = False
    memory_gb: float | None = None  # the device's memory for generation's batch budget; None: measured
    # requests that share a prefix (a document's choices) packed into one row: answers within float
    # rounding of HFLM's (not a setting of a score); False gives HFLM's rows bit for bit
    share_contexts: bool = True


@dataclass(frozen=True)
class Request:
    """One call: which plans and benchmarks to score and where the files go."""

    name: str  # short model name in the results layout
    plans: tuple[str, ...]
    benchmarks: tuple[str, ...]
    out: str
    limit: float | int | None = None
    bootstrap_iters: int = 1000
    overwrite: bool = False
    gen_kwargs: dict = field(default_factory=dict)
    fewshot_seed: int = FEWSHOT_SEED
    kv_cache: str = "exact"  # generation's cache: exact, or the official code's for parallel steps (painters.cost)


def parse_limit(text: str | None) -> float | int | None:
    """`--limit`: a count of documents (an integer >= 1) or a fraction in (0, 1)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--limit {text!r} is not a number: give a count >= 1 or a fraction in (0, 1)") from None
    if value <= 0 or (value >= 1 and not value.is_integer()):
        raise ValueError(f"--limit {text!r} is out of range: give a whole count >= 1 or a fraction in (0, 1)")
    return int(value) if value >= 1 else value


def parse_memory_gb(text: str) -> float:
    """`--memory-gb`: a positive number of GiB."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give the device's memory in GiB, a number > 0")
    return value


def parse_batch_size(text: str) -> int | str:
    """`--batch-size`: a whole number >= 1, or auto."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        # argparse prints this message as it is
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1, or auto")
    return int(text)


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.pt", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "spiece.model")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json",)  # a vision model's, instead of a tokenizer


def model_folder_lacks(path: Path, preprocessor_files: tuple[str, ...] = TOKENIZER_FILES) -> str | None:
    """What a local model folder lacks to be loaded (config, weights, tokenizer or, for a vision model
    (IMAGE_PROCESSOR_FILES), image processor; none with no `preprocessor_files`), or None."""
    if not (path / "config.json").is_file():
        return "config.json"
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        return f"weights ({', '.join(WEIGHT_FILES)})"
    if preprocessor_files and not any((path / name).is_file() for name in preprocessor_files):
        kind = "tokenizer" if preprocessor_files == TOKENIZER_FILES else "image processor"
        return f"{kind} files ({', '.join(preprocessor_files)})"
    return None


def check_model_source(model: str, preprocessor_files: tuple[str, ...] = TOKENIZER_FILES) -> None:
    """Fail early and clearly when `model` is neither a local model folder nor a hub id."""
    path = Path(model).expanduser()
    if path.exists():
        lacking = model_folder_lacks(path, preprocessor_files)
        if lacking:
            raise FileNotFoundError(f"--model {model}: {path} has no {lacking} (expected a Hugging Face model folder)")
        return
    looks_like_path = model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1)
    if looks_like_path or not _HUB_ID.match(model):
        raise FileNotFoundError(
            f"--model {model}: no such model folder (give a folder holding config.json and weights, "
            "or a Hugging Face id such as meta-llama/Llama-2-7b-hf that is in the local cache)"
        )
    # a hub id: look in the local cache first; without it, fail at once where the hub cannot be
    # reached, instead of after transformers' retries (about 50 s)
    import huggingface_hub

    if isinstance(huggingface_hub.try_to_load_from_cache(model, "config.json"), str):
        return
    if huggingface_hub.is_offline_mode() or not _hub_reachable():
        raise FileNotFoundError(
            f"--model {model}: not in the local Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE}) "
            "and the hub cannot be reached; download it first where there is internet "
            f"(hf download {model}), or give a model folder"
        )


def check_kind(model: str, wanted: str, what: str, trust_remote_code: bool = False) -> dict:
    """Fail before any work when `model` is not of the kind (sweep.model_kind) that `what` needs;
    returns its config (as a dict)."""
    import transformers

    from painters import sweep

    config = transformers.AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code).to_dict()
    kind = sweep.model_kind(config)
    if kind != wanted:
        other = {"encoder": "painters finetune (GLUE)", "vision": "painters evaluate-images (image benchmarks)",
                 "decoder": "painters evaluate (lm-eval benchmarks)"}[kind]
        raise ValueError(f"--model {model} is {_a(kind)} ({config.get('model_type')}); {what} need {_a(wanted)} model. "
                         f"Score it with {other}")
    return config


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    import huggingface_hub

    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_plan_keys(keys: list[str], num_layers: int | None = None) -> list[plans_module.Plan]:
    """Parse every key before any work starts, and check each plan against the model's depth when
    given; a bad key names itself and the valid forms, a plan too deep the valid range."""
    if not keys:
        raise ValueError("no plans given (--plans KEY [KEY ...]), e.g. baseline skip-N2")
    plans = [plans_module.parse(key) for key in keys]
    for plan in plans if num_layers is not None else []:
        try:
            plan.check(num_layers)
        except ValueError as error:
            raise ValueError(f"plan {plan.key} does not fit this {num_layers}-layer model: {error}") from None
    return plans


class Session:
    """A loaded model with its lm-eval wrapper and task manager; tasks are built once and reused."""

    def __init__(self, spec: ModelSpec, log=print):
        import torch
        import transformers
        from lm_eval.tasks import TaskManager

        from painters.engine import SweepLM

        from painters import benchmarks, results, surgery

        check_model_source(spec.model)
        check_kind(spec.model, "decoder", "lm-eval benchmarks", spec.trust_remote_code)
        self.spec, self.log = spec, log
        started = time.perf_counter()
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        load_kwargs = {"dtype": spec.dtype, "trust_remote_code": spec.trust_remote_code}
        if spec.device_map:
            load_kwargs["device_map"] = spec.device_map
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                spec.model, trust_remote_code=spec.trust_remote_code
            )
            self.model = transformers.AutoModelForCausalLM.from_pretrained(spec.model, **load_kwargs)
        except (OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise FileNotFoundError(f"--model {spec.model}: could not load it with its tokenizer ({reason})") from None
        if not spec.device_map:
            self.model.to(device)
        self.model.eval()
        surgery.check_supported(self.model)
        self.num_layers = surgery.num_layers(self.model)
        self.device = str(next(self.model.parameters()).device) if not spec.device_map else f"map:{spec.device_map}"
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.lm = SweepLM(
            pretrained=self.model,
            tokenizer=self.tokenizer,
            batch_size=spec.batch_size,
            max_length=spec.max_length,
            trust_remote_code=spec.trust_remote_code,
            memory_gb=spec.memory_gb,
            share_contexts=spec.share_contexts,
            log=log,
        )
        include = list(spec.include_paths)
        self.local_benchmarks = []
        if spec.data_dir:
            # generated overrides come last so they replace the built-in tasks of the same name
            # override the default benchmarks whose local files are all there; check() names missing ones
            self._overrides = tempfile.TemporaryDirectory(prefix="painters-overrides-")
            self.local_benchmarks = [
                name
                for name, local in benchmarks.LOCAL_DATA.items()
                if all((Path(spec.data_dir) / relative).is_file() for relative in local.files.values())
            ]
            include.append(str(benchmarks.write_local_overrides(spec.data_dir, self.local_benchmarks, self._overrides.name)))
        for path in spec.include_paths:
            if not Path(path).is_dir():
                raise FileNotFoundError(f"--include-path {path} is not a directory of lm-eval task YAMLs")
        # Indexing lm-eval's thousands of built-in task YAMLs takes seconds per process: a run
        # whose benchmarks all come from include paths (the demo's) never does it.
        self._include = include
        self._own_tasks = TaskManager(include_path=include, include_defaults=False) if include else None
        self._all_tasks = None
        self.tasks: dict[str, dict] = {}  # benchmark -> the task dict TaskManager.load gave for it
        # task name -> its generation settings as built, so one request's gen_kwargs never leak into the next
        self.generation_defaults: dict[str, dict] = {}
        self.versions = results.versions()
        self._request_sizes: dict[tuple, tuple[int, int]] = {}  # (task, prompt hash) -> requests, tokens
        log(f"loaded {spec.model}: {self.num_layers} layers, {self.dtype} on {self.device} "
            f"in {time.perf_counter() - started:.1f} s")

    @property
    def task_manager(self):
        """lm-eval's index of every task, built-in ones included (built on first use)."""
        from lm_eval.tasks import TaskManager

        if self._all_tasks is None:
            self._all_tasks = TaskManager(include_path=self._include or None)
        return self._all_tasks

    def tasks_for(self, names) -> object:
        """The index of the include paths' own tasks when it has all `names`, else the full one."""
        if self._own_tasks is not None and all(name in self._own_tasks.all_tasks for name in names):
            return self._own_tasks
        return self.task_manager

    def check(self, request: Request) -> list[plans_module.Plan]:
        """Validate a whole request before anything runs: plans for this depth, benchmarks, names."""
        from painters import benchmarks, results

        results.safe_name(request.name, "model name")
        plans = check_plan_keys(list(request.plans), self.num_layers)
        if self.spec.data_dir:
            # a default benchmark without its local files: this raises, naming each file and its schema
            lacking = [b for b in request.benchmarks if b in benchmarks.LOCAL_DATA and b not in self.local_benchmarks]
            if lacking:
                with tempfile.TemporaryDirectory() as scratch:
                    benchmarks.write_local_overrides(self.spec.data_dir, lacking, scratch)
        benchmarks.check_benchmarks(list(request.benchmarks), self.tasks_for(request.benchmarks))
        return plans

    def task(self, benchmark: str) -> dict:
        if benchmark not in self.tasks:
            started = time.perf_counter()
            try:
                self.tasks[benchmark] = self.tasks_for([benchmark]).load([benchmark])
            except (OSError, ConnectionError) as error:  # a hub download on a node without internet, typically
                raise FileNotFoundError(
                    f"benchmark {benchmark}: could not load its data ({error}); "
                    "without internet give --data-dir with local copies (docs/offline-data.md)"
                ) from None
            for name, task in self.tasks[benchmark]["tasks"].items():
                if is_generative(task):
                    self.generation_defaults[name] = copy.deepcopy(task.get_config("generation_kwargs") or {})
            self.log(f"built task {benchmark} in {time.perf_counter() - started:.1f} s")
        return self.tasks[benchmark]

    def prepare(self, task_dict: dict, request: Request) -> None:
        """Put every task and random generator in the state lm-eval's simple_evaluate starts from.

        Called before every evaluation, so that a score does not depend on which plans or
        benchmarks ran earlier in this process: the few-shot samplers start again from the
        seed (lm-eval builds them with an OS-seeded Random and advances them per document),
        python/numpy/torch are re-seeded (tasks and sampling generation may draw from them),
        a task with no few-shot count gets 0 as simple_evaluate gives it, and generation
        settings are the task's own plus this request's.
        """
        import numpy
        from lm_eval.utils import set_torch_seed

        random.seed(PYTHON_SEED)
        numpy.random.seed(NUMPY_SEED)
        set_torch_seed(TORCH_SEED)
        for name, task in task_dict["tasks"].items():
            if task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=request.fewshot_seed)
            if name in self.generation_defaults:
                settings = {**copy.deepcopy(self.generation_defaults[name]), **request.gen_kwargs}
                task.set_config(key="generation_kwargs", value=settings)

    def run(self, request: Request) -> list[Path]:
        """Score every (plan, benchmark) of `request`; returns the parquet paths written.

        Per benchmark, the requests of all plans still to do are answered in one shared pass
        (painters.engine): loglikelihood along the plans' trie, generate_until with the prompt's
        prefill shared along it and batches sized to the memory budget.
        """
        from lm_eval.evaluator import evaluate

        from painters import cost, generation, results

        plans = self.check(request)
        cost.check_kv_cache(request.kv_cache)
        written = []
        for benchmark in request.benchmarks:
            todo = {}  # plan -> its score file
            for plan in plans:
                final = results.score_path(request.out, request.name, plan.key, benchmark)
                if final.exists() and not request.overwrite:
                    self.log(f"kept {final} (exists; --overwrite recomputes it)")
                else:
                    todo[plan] = final
            if not todo:
                continue
            benchmark_started = time.perf_counter()
            task_dict = self.task(benchmark)
            generative = any(is_generative(task) for task in task_dict["tasks"].values())
            if generative:  # refused before any work, with the reason
                for plan in todo:
                    reason = generation.generation_refusal(self.model, plan, request.kv_cache)
                    if reason:
                        raise ValueError(f"benchmark {benchmark} (generate_until): {reason}")
            self.lm.kv_cache = request.kv_cache
            with self.lm.sweep(list(todo)), requests_built_once(task_dict):
                for plan, final in todo.items():
                    self.prepare(task_dict, request)
                    started = time.perf_counter()
                    self.lm.plan = plan
                    output = evaluate(
                        lm=self.lm,
                        task_dict=task_dict,
                        limit=request.limit,
                        bootstrap_iters=request.bootstrap_iters,
                        log_samples=False,
                        verbosity="WARNING",
                    )
                    seconds = time.perf_counter() - started
                    rows = self.rows(output, task_dict, request, plan, benchmark, seconds)
                    results.write_atomic(results.scores_frame(rows), final)
                    written.append(final)
            self.log(f"benchmark {benchmark}: {len(todo)} plan(s) in one shared pass in "
                     f"{time.perf_counter() - benchmark_started:.1f} s")
        return written

    def rows(self, output: dict, task_dict: dict, request: Request, plan, benchmark: str, seconds: float) -> list[dict]:
        """lm-eval's result dict as long-format rows (one per metric and filter)."""
        from datetime import datetime, timezone

        from painters import benchmarks

        now = datetime.now(timezone.utc)
        limit = None if request.limit is None else float(request.limit)
        rows = []
        for task_name, metrics in output["results"].items():
            config = output["configs"].get(task_name, {})
            higher = output.get("higher_is_better", {}).get(task_name, {})
            n_samples = output.get("n-samples", {}).get(task_name, {}).get("effective")
            task = task_dict["tasks"].get(task_name)
            generation = task.get_config("generation_kwargs") if task and is_generative(task) else None
            prompts = prompt_hash(task) if task else None
            for key, value in metrics.items():
                if "," not in key or "_stderr," in key:
                    continue
                metric, filter_name = key.split(",", 1)
                stderr = metrics.get(f"{metric}_stderr,{filter_name}")
                rows.append(
                    {
                        "model": request.name,
                        "model_id": self.spec.model,
                        "plan": plan.key,
                        "variant": plan.variant,
                        "N": plan.N,
                        "M": plan.affected(self.num_layers),
                        "K": plan.K,
                        "seed": plan.seed,
                        "layer": plan.layer,
                        "percent": plan.percent,
                        "num_layers": self.num_layers,
                        "benchmark": task_name,
                        "train_seed": None,
                        "metric": metric,
                        "filter": filter_name,
                        "value": _number(value),
                        "stderr": _number(stderr),
                        "higher_is_better": higher.get(metric),
                        "random_baseline": benchmarks.random_baseline(task_name, metric, config.get("metadata")),
                        "n_samples": n_samples,
                        "limit": limit,
                        "num_fewshot": config.get("num_fewshot") or 0,
                        "fewshot_seed": request.fewshot_seed,
                        "prompt_hash": prompts,
                        "generation_kwargs": None if generation is None else json.dumps(generation, sort_keys=True),
                        "settings": json.dumps({"dtype": self.spec.dtype, "max_gen_toks": request.gen_kwargs.get("max_gen_toks"),
                                                "kv_cache": request.kv_cache}),
                        "batch_size": str(self.spec.batch_size),
                        "batch_size_used": self._batch_size_used(plan, generation is not None),
                        "bootstrap_iters": request.bootstrap_iters,
                        "dtype": self.dtype,
                        "device": self.device,
                        "seconds": seconds,
                        **dict(zip(("requests", "request_tokens"), self.request_sizes(task, prompts) if task else (None, None))),
                        **self.versions,
                        "timestamp": now,
                    }
                )
        if not rows:
            raise ValueError(f"lm-eval returned no metrics for benchmark {benchmark!r}")
        return rows


    def request_sizes(self, task, prompts: str) -> tuple[int, int]:
        """How many requests lm-eval built for `task` (whose prompt_hash is `prompts`) and their tokens
        as sent (context and continuation; a generation's prompt): what the cost model reads once a
        benchmark has run."""
        key = (task.config.task, prompts)
        if key not in self._request_sizes:
            tokens = 0
            for instance in task.instances:
                if instance.request_type == "loglikelihood":
                    context, continuation = self.lm._encode_pair(*instance.args)
                    tokens += len(context) + len(continuation)
                else:  # generate_until (a prompt) and loglikelihood_rolling (a text)
                    tokens += len(self.lm.tok_encode(instance.args[0]))
            self._request_sizes[key] = (len(task.instances), tokens)
        return self._request_sizes[key]

    def _batch_size_used(self, plan, generative: bool) -> int | None:
        if generative and plan.key in self.lm.generation_batch_sizes:
            return self.lm.generation_batch_sizes[plan.key]
        return self.lm.detected_batch_size if self.spec.batch_size == "auto" else self.spec.batch_size


@contextmanager
def requests_built_once(task_dict: dict):
    """Inside the block, every evaluate() of the same settings reuses the requests the first built.

    The plans of a pass ask for identical requests (same documents, same seeded few-shot
    examples): building them again per plan would cost more than a small model's pass
    (lm-eval compiles a prompt template per document). Responses are cleared for each reuse.
    """
    built = {}

    def build_once(task, build):
        def build_all_requests(*args, **kwargs):
            key = repr((args, sorted(kwargs.items())))
            if key not in built.setdefault(task, {}):
                build(*args, **kwargs)
                built[task][key] = list(task._instances)
                return
            for instance in built[task][key]:
                instance.resps.clear()
                instance.filtered_resps.clear()
            task._instances = list(built[task][key])

        return build_all_requests

    tasks = list(task_dict["tasks"].values())
    for task in tasks:
        task.build_all_requests = build_once(task, task.build_all_requests)  # shadows the method
    try:
        yield
    finally:
        for task in tasks:
            del task.build_all_requests


def is_generative(task) -> bool:
    return task.get_config("output_type") == "generate_until"


def prompt_hash(task) -> str:
    """A fingerprint of every request lm-eval built for `task` (documents, contexts with their
    few-shot examples, continuations, generation settings): equal hashes, equal prompts."""
    digest = hashlib.sha256()
    for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        digest.update(json.dumps([instance.doc_id, instance.idx, instance.args], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):  # lm-eval writes "N/A" where it has no stderr
        return None
    return number


def spec_from_args(args) -> ModelSpec:
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype {args.dtype!r} is not one of {', '.join(DTYPES)}")
    check_model_source(args.model)
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} is not a directory (see docs/offline-data.md)")
    for path in args.include_path:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--include-path {path} is not a directory of lm-eval task YAMLs")
    return ModelSpec(
        model=str(Path(args.model).resolve()) if Path(args.model).expanduser().exists() else args.model,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        batch_size=args.batch_size,
        max_length=args.max_length,
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        include_paths=tuple(str(Path(p).resolve()) for p in args.include_path),
        trust_remote_code=args.trust_remote_code,
        memory_gb=args.memory_gb,
        share_contexts=args.share_contexts,
    )


def run_command(args) -> int:
    from painters import results

    spec = spec_from_args(args)
    check_plan_keys(args.plans)
    gen_kwargs = {}
    if args.max_gen_toks:
        gen_kwargs["max_gen_toks"] = args.max_gen_toks
    request = Request(
        name=args.name or results.model_slug(args.model),
        plans=tuple(args.plans),
        benchmarks=tuple(args.benchmarks),
        out=str(Path(args.out).resolve()),
        limit=parse_limit(args.limit),
        bootstrap_iters=args.bootstrap_iters,
        overwrite=args.overwrite,
        gen_kwargs=gen_kwargs,
        fewshot_seed=args.fewshot_seed,
        kv_cache=args.kv_cache,
    )
    results.safe_name(request.name, "--name")
    slurm_job = os.environ.get("SLURM_JOB_ID")
    if slurm_job:
        print(f"Slurm job {slurm_job}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
    session = Session(spec, log=lambda line: print(line, flush=True))
    session.run(request)
    return 0


def register(subparsers) -> None:
    from painters.benchmarks import DEFAULT_BENCHMARKS

    parser = subparsers.add_parser(
        "evaluate",
        help="score a model under execution plans with lm-eval",
        description="Load a model once, build the lm-eval tasks once, and score every plan on every "
        "benchmark; writes OUT/scores/NAME/PLAN/BENCHMARK.parquet atomically.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face id (from the local cache)")
    parser.add_argument("--name", help="short model name in the results layout (default: from --model)")
    parser.add_argument("--plans", nargs="+", required=True, metavar="KEY", help="plan keys, e.g. baseline skip-N2")
    parser.add_argument(
        "--benchmarks", nargs="+", default=list(DEFAULT_BENCHMARKS), metavar="NAME", help="lm-eval task names"
    )
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--limit", help="documents per benchmark: a count >= 1 or a fraction in (0, 1)")
    parser.add_argument(
        "--batch-size", type=parse_batch_size, default=16,
        help="requests per forward pass, or auto (lm-eval finds the largest that fits; recorded per score)",
    )
    parser.add_argument("--max-length", type=int, help="context length for lm-eval (default: the model's)")
    parser.add_argument("--dtype", default="auto", help=f"one of {', '.join(DTYPES)}")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--device-map", help="e.g. auto: spread a large model over the node's GPUs")
    parser.add_argument("--data-dir", help="local copies of the default benchmarks (docs/offline-data.md)")
    parser.add_argument("--include-path", action="append", default=[], metavar="DIR", help="folder of your own lm-eval task YAMLs")
    parser.add_argument("--bootstrap-iters", type=int, default=1000, help="lm-eval bootstrap for non-mean stderrs")
    parser.add_argument(
        "--fewshot-seed", type=int, default=FEWSHOT_SEED,
        help=f"seed of lm-eval's few-shot sampler, reset before every plan (default {FEWSHOT_SEED}, lm-eval's)",
    )
    parser.add_argument("--max-gen-toks", type=int, help="cap generation length of generate_until tasks")
    parser.add_argument(
        "--kv-cache", choices=KV_CACHE_MODES, default="exact",
        help="generation's K/V cache: exact (one slot per layer call, the default) or reference (the official "
        "Painters code's: a parallel step's calls share one averaged slot per iteration); recorded per score",
    )
    parser.add_argument(
        "--memory-gb", type=parse_memory_gb,
        help="memory of the device for generation's batch budget, in GiB (default: measured free memory)",
    )
    parser.add_argument(
        "--no-share-contexts", dest="share_contexts", action="store_false",
        help="score every loglikelihood request on its own row, as lm-eval's HFLM does (bit for bit); by default "
        "requests that share a context are packed into one row, the context computed once (answers within float rounding)",
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute results that exist")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    parser.set_defaults(func=run_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(__import__("painters.cli").cli.main(["evaluate", *sys.argv[1:]]))
