# Config validation, the sweep table and the helpers the rules share.
import functools
import hashlib
import json
import os
import re
import shlex
from collections import Counter
from pathlib import Path

import yaml

from snakemake.logging import logger
from snakemake.utils import min_version, validate

from painters import plan as painters_plan
from painters import benchmarks, results, sweep
from painters import figures as painters_figures
from painters.evaluate import model_folder_lacks
from painters.layershuffle import study as layershuffle_study

min_version("9.0")


# one line for a schema error (Snakemake's own message prints the whole schema and config)
_PROBLEM = sweep.schema_problem(config, yaml.safe_load(Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text()))
if _PROBLEM:
    raise ValueError(_PROBLEM)
validate(config, schema="../schemas/config.schema.yaml")
sweep.with_results_paths(config)
sweep.with_demo_variants(config)  # a model NAME-VARIANT beside the demo model NAME per further demo.variants

RESULTS = config["results"]
REPORTS = config["reports"]
DEMO = config["demo"]
DEMO_DATA = f"{RESULTS}/demo/data"
DEMO_MODELS = sweep.demo_model_paths(config)  # {folder: training variant} of the demo's decoders (demo.variants)
DEMO_GLUE = f"{RESULTS}/demo/glue"
MODELS = {name: config["models"][name] for name in sweep.enabled_models(config)}
GLUE = config["glue"]


def check_config():
    """Checks a schema cannot express; each error names the key, the value and what is valid."""
    if not MODELS and not config["layershuffle"]["enabled"]:
        raise ValueError(f"models: none is enabled (configured: {', '.join(config['models']) or 'none'}), "
                         "and layershuffle.enabled is false: nothing to run")
    if MODELS and not config["sweeps"]:
        raise ValueError(f"sweeps: none given for the models {', '.join(MODELS)} (or disable them: enabled: false)")
    for name, model in MODELS.items():
        if model["path"] in DEMO_MODELS and not DEMO["enabled"]:
            raise ValueError(f"models.{name}.path is the demo model {model['path']}, but demo.enabled is false")
        looks_local = model["path"].startswith((".", "~")) or os.path.isabs(model["path"])
        if model["path"] not in DEMO_MODELS and looks_local and not os.path.isdir(os.path.expanduser(model["path"])):
            raise ValueError(f"models.{name}.path {model['path']!r}: no such folder (give a model folder or a Hugging Face id)")
        if model["path"] not in DEMO_MODELS and os.path.isdir(os.path.expanduser(model["path"])):
            lacking = model_folder_lacks(Path(model["path"]).expanduser())
            if lacking:
                raise ValueError(f"models.{name}.path {model['path']!r}: the folder has no {lacking}")
    texts = config["similarity"]["texts"]
    if texts and not texts.startswith(DEMO_DATA) and not os.path.isfile(texts):
        raise ValueError(f"similarity.texts {texts!r}: no such file (one text per line), or null to skip Fig 3")
    check_glue_config()


def check_glue_config():
    from painters.glue.tasks import task_table

    table = task_table(GLUE["custom_tasks"])
    unknown = [task for task in GLUE["tasks"] if task not in table]
    if unknown:
        raise ValueError(f"glue.tasks: unknown task(s) {', '.join(unknown)} (valid: {', '.join(table)}; "
                         "tasks of your own go under glue.custom_tasks)")
    data_dir = GLUE["data_dir"]
    if data_dir and data_dir != DEMO_GLUE and not os.path.isdir(data_dir):
        raise ValueError(f"glue.data_dir {data_dir!r}: no such folder (DATA_DIR/TASK/SPLIT.jsonl|csv|tsv|parquet, "
                         "docs/offline-data.md), or null for nyu-mll/glue from the local Hugging Face cache")
    if GLUE["custom_tasks"] and not data_dir:
        raise ValueError(f"glue.custom_tasks {', '.join(GLUE['custom_tasks'])} read local files: set glue.data_dir")
    if data_dir == DEMO_GLUE and not DEMO["enabled"]:
        raise ValueError(f"glue.data_dir is the demo's tasks {DEMO_GLUE}, but demo.enabled is false")


check_config()


DEPTHS = {name: sweep.model_depth(config, name) for name in MODELS}
KINDS = {name: sweep.configured_model_kind(config, name) for name in MODELS}
if not config["benchmarks"] and "decoder" in KINDS.values():
    raise ValueError(f"benchmarks: none given, but {', '.join(n for n in MODELS if KINDS[n] == 'decoder')} "
                     "are decoders, scored on lm-eval benchmarks: give some (or disable those models)")
JOBS = sweep.expand_jobs(config, DEPTHS, KINDS)
if GLUE["fp16"]:
    for name in MODELS:
        if KINDS[name] == "encoder" and (MODELS[name].get("device") or "").startswith("cpu"):
            raise ValueError(f"glue.fp16 needs a GPU, but models.{name}.device is {MODELS[name]['device']}")


def score_file(model, plan, benchmark, train_seed=None):
    """Where a score lives (painters.results layout), as the string the rules match."""
    seed = "" if train_seed is None else f".seed{train_seed}"
    return f"{RESULTS}/scores/{model}/{plan}/{benchmark}{seed}.parquet"


SCORE_FILES = [score_file(j.model, j.plan, j.benchmark, j.train_seed) for j in JOBS]
SUMMARY = f"{RESULTS}/summary.parquet"


def training_settings():
    """How GLUE scores are fine-tuned (painters.glue.finetune.TrainingSettings, as scores record it)."""
    from painters.glue.finetune import TrainingSettings

    keys = TrainingSettings.__dataclass_fields__
    return TrainingSettings(**{key: GLUE[key] for key in keys if key in GLUE})


def trained_wanted_settings(dtype, training, trained_from=None):
    """What a score of a model trained by the workflow (GLUE fine-tuning, LayerShuffle training,
    merging) must have been made with: no lm-eval settings, the training settings (a dict), and for
    a LayerShuffle model what it was trained from (base model, data)."""
    return {"fewshot_seed": None, "limit": None, "bootstrap_iters": None, "dtype": dtype, "max_gen_toks": None,
            "training": training, "trained_from": trained_from}


def wanted_settings(model):
    """The settings a finished score of `model` must have been made with (results.stale_reason)."""
    if KINDS[model] == "encoder":
        return trained_wanted_settings(MODELS[model]["dtype"], training_settings().recorded())
    evaluation = config["evaluation"]
    return {
        "fewshot_seed": evaluation["fewshot_seed"],
        "limit": config.get("limit"),
        "bootstrap_iters": evaluation["bootstrap_iters"],
        "dtype": MODELS[model]["dtype"],
        "max_gen_toks": evaluation.get("max_gen_toks"),
        "kv_cache": evaluation["kv_cache"],
    }


# A finished score file is final: no rule makes it, so nothing Snakemake does can delete or
# redo it. Only pending scores are outputs: missing ones, and finished ones that no longer
# stand for the config, judged from the settings each file records (a limit, dtype,
# bootstrap or generation length changed; a few-shot score made with another few-shot seed
# or before the sampler was seeded). Each stale score gets a rerun note
# (RESULTS/reruns/MODEL/PLAN/BENCHMARK.SCORED.why, saying why) as an input of its job, so that job
# runs although its outputs exist; Snakemake deletes a job's existing outputs first.
STALE_SCORES = {}
for model_name in MODELS:
    STALE_SCORES.update(results.stale_scores([f for j, f in zip(JOBS, SCORE_FILES) if j.model == model_name],
                                             wanted_settings(model_name)))
PENDING = [j for j, f in zip(JOBS, SCORE_FILES) if f in STALE_SCORES or not os.path.exists(f)]
# Pending scores grouped into evaluation jobs: one model and benchmark each, neighbouring
# plans in the trie walk, sized by layer work (sweep.batch_jobs; README "Job granularity").
GENERATIVE = {b for b in config["benchmarks"] if benchmarks.generates_text(b, config["include_paths"])}
BATCHES = sweep.batch_jobs(
    [j for j in PENDING if j.train_seed is None],
    DEPTHS,
    {name: MODELS[name].get("passes_per_job") or config["evaluation"]["passes_per_job"] for name in MODELS},
    plan_by_plan=GENERATIVE,
)
# Pending GLUE scores grouped into fine-tuning jobs: one model, task and seed each, at most
# glue.plans_per_job plans (each plan is a fine-tuning run of its own: no work is shared).
GLUE_BATCHES = sweep.glue_batches([j for j in PENDING if j.train_seed is not None], DEPTHS,
                                  {name: GLUE["plans_per_job"] for name in MODELS})


def rerun_note(score_file):
    """RESULTS/reruns/MODEL/PLAN/BENCHMARK.SCORED.why for a stale score made at SCORED."""
    scored = re.sub(r"\D", "", STALE_SCORES[score_file][1])[:14]  # 2026-11-23 10:15:02... -> 20261123101502
    relative = Path(score_file).relative_to(Path(RESULTS, "scores")).with_suffix("")
    return f"{RESULTS}/reruns/{relative}.{scored or 'unknown'}.why"


def rerun_reason(score_file):
    reason, scored = STALE_SCORES[score_file]
    return f"{reason}; recomputed the score of {scored}"


wildcard_constraints:
    scored=r"[0-9]+|unknown",
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    plan=painters_plan.KEY_WILDCARD_REGEX,
    benchmark=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def rule_suffix(name):
    """A model name as part of a rule name (an identifier)."""
    return re.sub(r"\W", "_", name)


def uses_demo(model):
    return MODELS[model]["path"] in DEMO_MODELS


def demo_inputs(model):
    """The demo's data and model when `model` is one of the demo's models (so they are built first)."""
    return {"demo_data": DEMO_DATA, "demo_model": MODELS[model]["path"]} if uses_demo(model) else {}


# Every benchmark checked once, before any evaluation job (one line naming an unknown one),
# by lm-eval's own task index: too slow for every dry run, so a job, remembered per setting.
_CHECKED = json.dumps([config["benchmarks"], config["include_paths"], config.get("data_dir")])
BENCHMARK_CHECK = f"{RESULTS}/checks/benchmarks.{hashlib.sha256(_CHECKED.encode()).hexdigest()[:12]}.ok"


# ---- LayerShuffle: trained vision models (BASE.VARIANT.sSEED) and their evaluation grid
LAYERSHUFFLE = config["layershuffle"]
TRAINED = {m.name: m for m in layershuffle_study.trained_models(LAYERSHUFFLE)} if LAYERSHUFFLE["enabled"] else {}
# the trained models whose layer outputs get a UMAP (figure layershuffle_umap)
UMAP_MODELS = layershuffle_study.umap_models(LAYERSHUFFLE) if LAYERSHUFFLE["enabled"] else []


def vision_depth(base):
    """A base model's depth: its `layers` (a tiny ViT's: 6 unless given), else its config.json (in
    its folder or the local Hugging Face cache, read at planning: no weights needed)."""
    from painters.layershuffle.vision import TINY_LAYERS

    spec = LAYERSHUFFLE["base_models"][base]
    if spec["layers"] is not None or spec["model"] == "tiny":
        return spec["layers"] or TINY_LAYERS
    try:
        return sweep.read_num_layers(base, {"path": spec["model"]})
    except ValueError:
        raise ValueError(f"layershuffle.base_models.{base}: no config.json of {spec['model']!r} with a layer count in that "
                         f"folder or the local Hugging Face cache; download it first or give its depth "
                         f"(layershuffle.base_models.{base}.layers)") from None


def check_layershuffle_config():
    """The data set and the base models fit together: digits for the tiny ViT, the others through a
    pretrained model's image processor; an image folder is given and there."""
    data, data_dir = LAYERSHUFFLE["data"], LAYERSHUFFLE["data_dir"]
    for name, spec in LAYERSHUFFLE["base_models"].items():
        if (spec["model"] == "tiny") != (data == "digits"):
            raise ValueError(f"layershuffle.base_models.{name}: model {spec['model']} and data {data} do not go together "
                             "(the tiny ViT trains on digits; the other data sets are read through a pretrained ViT/DeiT's "
                             "image processor)")
    if data == "imagefolder" and (data_dir is None or not os.path.isdir(data_dir)):
        raise ValueError(f"layershuffle.data_dir {data_dir!r}: no such folder (data imagefolder reads DATA_DIR/train/CLASS/*.jpg|png "
                         "and DATA_DIR/val/CLASS/...)")
    if data != "imagefolder" and data_dir is not None:
        raise ValueError(f"layershuffle.data_dir is for data imagefolder, not {data}: remove it")


if LAYERSHUFFLE["enabled"]:
    check_layershuffle_config()


def vision_trained_from(base):
    """What `base`'s trained models are trained from (painters.layershuffle.study.trained_from), as train-vision records it."""
    spec, data_dir = LAYERSHUFFLE["base_models"][base], LAYERSHUFFLE["data_dir"]
    tiny = spec["model"] == "tiny"
    return layershuffle_study.trained_from(spec["model"], LAYERSHUFFLE["data"], LAYERSHUFFLE["data_seed"],
                                           str(Path(data_dir).resolve()) if data_dir is not None else None,
                                           vision_depth(base) if tiny else None, spec["hidden"] if tiny else None)


def vision_training(trained):
    """The settings a trained model is trained with (painters.layershuffle.training.TrainSettings)."""
    from painters.layershuffle.training import TrainSettings

    keys = [key for key in TrainSettings.__dataclass_fields__ if key in LAYERSHUFFLE]
    return TrainSettings(variant=trained.variant, seed=trained.seed, **{key: LAYERSHUFFLE[key] for key in keys})


VISION_PLANS = {base: layershuffle_study.evaluation_plans(LAYERSHUFFLE, vision_depth(base)) for base in
                {m.base for m in TRAINED.values()}}
VISION_SCORES = {name: [score_file(name, key, LAYERSHUFFLE["data"]) for key in VISION_PLANS[m.base]]
                 for name, m in TRAINED.items()}
# a score of a model trained with other settings is stale (its model is trained again first)
for name, trained_model in TRAINED.items():
    STALE_SCORES.update(results.stale_scores(VISION_SCORES[name],
                                             trained_wanted_settings("float32", vision_training(trained_model).recorded(),
                                                                     vision_trained_from(trained_model.base))))
VISION_PENDING = {name: [f for f in files if f in STALE_SCORES or not os.path.exists(f)] for name, files in VISION_SCORES.items()}
SCORE_FILES += [f for files in VISION_SCORES.values() for f in files]


@functools.cache  # asked once per merged model: drawn once per (base, variant)
def merge_assignments(base, variant):
    """Which trained model gives each layer of each merge of `variant` (painters.layershuffle.merging)."""
    from painters.layershuffle import merging

    settings = LAYERSHUFFLE["merging"]
    try:
        return merging.merge_assignments(len(settings["seeds"]), vision_depth(base), settings["merges"], settings["seed"])
    except ValueError as error:
        raise ValueError(f"layershuffle.merging.merges: {error}") from None


def combined_training(combined):
    """What a merged model's or an ensemble's scores record as its training (painters.layershuffle.merging)."""
    from painters.layershuffle import merging

    sources = [vision_training(m).recorded() for m in layershuffle_study.merge_sources(LAYERSHUFFLE, combined.base, combined.variant)]
    if combined.merge is None:
        return merging.ensemble_training(sources)
    return merging.merged_training(sources, merge_assignments(combined.base, combined.variant)[combined.merge])


# merged models and ensembles: one merge job per (base model, variant) writes the pending scores of all
COMBINED = layershuffle_study.combined_models(LAYERSHUFFLE) if LAYERSHUFFLE["enabled"] else []
MERGE_PENDING = {}
for combined in COMBINED:
    files = [score_file(combined.name, key, LAYERSHUFFLE["data"]) for key in layershuffle_study.merge_plans(LAYERSHUFFLE)]
    STALE_SCORES.update(results.stale_scores(files, trained_wanted_settings("float32", combined_training(combined), vision_trained_from(combined.base))))
    pending = [f for f in files if f in STALE_SCORES or not os.path.exists(f)]
    MERGE_PENDING.setdefault((combined.base, combined.variant), []).extend(pending)
    SCORE_FILES += files
if STALE_SCORES and workflow.is_main_process:
    logger.warning(
        f"{len(STALE_SCORES)} finished score(s) will be recomputed: "
        + "; ".join(f"{count} x {reason}" for reason, count in Counter(r for r, _ in STALE_SCORES.values()).most_common())
    )


def batch_scores(batch):
    return [score_file(batch.model, plan, batch.benchmark, batch.train_seed) for plan in batch.plans]


def batch_inputs(batch):
    """A job's inputs: the demo's files, the benchmark check (lm-eval) or the demo's GLUE-style
    tasks, and the rerun notes of its stale scores."""
    stale = [rerun_note(score) for score in batch_scores(batch) if score in STALE_SCORES]
    if batch.train_seed is None:
        inputs = {**demo_inputs(batch.model), "benchmark_check": BENCHMARK_CHECK}
    else:
        inputs = {"demo_glue": DEMO_GLUE} if GLUE["data_dir"] == DEMO_GLUE else {}
    return {**inputs, **({"rerun_notes": stale} if stale else {})}


def batch_rule_name(stage, batch):
    seed = "" if batch.train_seed is None else f"_seed{batch.train_seed}"
    return f"{stage}_{rule_suffix(batch.model)}_{rule_suffix(batch.benchmark)}{seed}_{rule_suffix(batch.name)}"


def job_resources(resources):
    """A job's resources from a `resources` block (a model's, or layershuffle's); mem_mb grows with each retry."""
    return {
        "gpu": resources["gpu"],
        "mem_mb": lambda wildcards, attempt, mem_mb=resources["mem_mb"]: mem_mb * attempt,
        "runtime": resources["runtime"],
        "cpus_per_task": resources["cpus_per_task"],
        "slurm_partition": slurm_setting_of(resources, "partition", "PAINTERS_SLURM_PARTITION"),
        "slurm_account": slurm_setting_of(resources, "account", "PAINTERS_SLURM_ACCOUNT"),
    }


def model_resources(model_name):
    return job_resources(MODELS[model_name]["resources"])


class NoRerun:
    """Shell arguments that must not trigger a rerun when they change (the device), or that cannot
    change for an output (the demo model's variant, which its folder names).

    Snakemake's params trigger records only plain values (str, int, list, ...);
    an object of this class is left out of that record, yet `{params.x}` renders it.
    """

    def __init__(self, args):
        self.args = [str(a) for a in args]

    def __str__(self):
        return shlex.join(self.args)


def slurm_setting_of(resources, key, env):
    """Partition/account: the `resources` block, then the config's `slurm` block, then the environment."""
    return resources.get(f"slurm_{key}") or config["slurm"].get(key) or os.environ.get(env, "")


def slurm_setting(model, key, env):
    """A model's partition/account (slurm_setting_of its resources)."""
    return slurm_setting_of(MODELS[model].get("resources", {}), key, env)


def results_folder(score_file):
    """RESULTS, from a score file's path RESULTS/scores/MODEL/PLAN/BENCHMARK.parquet."""
    return str(Path(score_file).parents[3])


# ---- evaluation


def evaluate_args(model):
    """`painters evaluate` settings of a model's jobs. Those that change scores are recorded in each
    score file and checked there (STALE_SCORES), not by Snakemake's params trigger: no rule
    makes a finished score, so the trigger never sees one."""
    evaluation = config["evaluation"]
    args = ["--batch-size", model["batch_size"], "--fewshot-seed", evaluation["fewshot_seed"]]
    args += ["--dtype", model["dtype"], "--bootstrap-iters", evaluation["bootstrap_iters"]]
    if config.get("limit") is not None:
        args += ["--limit", config["limit"]]
    if evaluation.get("max_gen_toks"):
        args += ["--max-gen-toks", evaluation["max_gen_toks"]]
    args += ["--kv-cache", evaluation["kv_cache"]]
    if evaluation.get("memory_gb"):
        args += ["--memory-gb", evaluation["memory_gb"]]
    for flag, key in (("--device", "device"), ("--device-map", "device_map"), ("--max-length", "max_length")):
        if model.get(key):
            args += [flag, model[key]]
    # where the tasks come from is not a setting of a score (a task's prompts are: prompt_hash)
    if config.get("data_dir"):
        args += ["--data-dir", config["data_dir"]]
    for path in config["include_paths"]:
        args += ["--include-path", path]
    if model.get("trust_remote_code"):
        args += ["--trust-remote-code"]
    return shlex.join(str(a) for a in args)


def finetune_args(model):
    """`painters finetune` settings of a model's GLUE jobs; the training settings are recorded in each
    score (STALE_SCORES compares them), as evaluate_args' are."""
    settings = training_settings()
    args = ["--mode", settings.mode, "--epochs", settings.epochs, "--learning-rate", settings.learning_rate,
            "--frozen-learning-rate", settings.frozen_learning_rate, "--batch-size", settings.batch_size,
            "--max-seq-length", settings.max_seq_length, "--dtype", model["dtype"]]
    args += ["--fp16"] if settings.fp16 else []
    for flag, value in (("--max-train-samples", settings.max_train_samples), ("--max-eval-samples", settings.max_eval_samples),
                        ("--device", model.get("device")), ("--data-dir", GLUE["data_dir"])):
        if value is not None:
            args += [flag, value]
    for name, like in GLUE["custom_tasks"].items():
        args += ["--custom-task", f"{name}={like}"]
    if model.get("trust_remote_code"):
        args += ["--trust-remote-code"]
    return shlex.join(str(a) for a in args)


# ---- similarity


def similarity_inputs(wildcards):
    texts = config["similarity"]["texts"]
    inputs = demo_inputs(wildcards.model)
    if texts.startswith(f"{DEMO_DATA}/"):  # a file inside the demo's data folder comes with that folder
        inputs["demo_data"] = DEMO_DATA
    else:
        inputs["texts"] = texts
    return inputs


# ---- figures


FIGURE_VARIANTS = painters_figures.VARIANT_FIGURES


def figures_of(model):
    """The figures a model's configured plans can fill."""
    variants = {job.plan.split("-")[0] for job in JOBS if job.model == model}
    figures = []
    if {"skip_layer", "switch"} & variants:
        figures.append("fig02_skip_switch")
    if config["similarity"]["texts"]:
        figures.append("fig03_similarity")
    figures += [figure for figure, variant in FIGURE_VARIANTS.items() if variant in variants]
    looped_K = {painters_plan.parse(j.plan).K for j in JOBS if j.model == model and j.plan.startswith("looped_parallel")}
    if len(looped_K) >= 2:
        figures.append("fig10_heatmap")
    if variants & set(FIGURE_VARIANTS.values()):
        figures.append("fig11_all_variants")
    if variants & set(painters_plan.STACK_VARIANTS):
        figures.append("whole_stack")
    return figures


FIGURES = {model: figures_of(model) for model in MODELS}
# skip against the fraction of layers skipped, across models (model sizes of a family)
SKIP_MODELS = [m for m in MODELS if "fig04_skip" in FIGURES[m] and KINDS[m] == "decoder"]
if len(SKIP_MODELS) >= 2:
    FIGURES["all"] = ["skip_fraction"]
# decoders and encoders side by side (the paper's Llama 2 | BERT panels)
SIDE_BY_SIDE = {KINDS[m] for m in MODELS if "fig11_all_variants" in FIGURES[m]}
if SIDE_BY_SIDE == {"decoder", "encoder"}:
    FIGURES.setdefault("all", []).append("decoder_encoder")
for base in {m.base for m in TRAINED.values()}:  # LayerShuffle: a base model's trained models together
    FIGURES[base] = ["layershuffle_order", "layershuffle_pruning"]
    if LAYERSHUFFLE["merging"]["variants"]:
        FIGURES[base].append("layershuffle_merging")
    if any(painters_plan.parse(key).variant in ("skip_layer", "switch") for key in LAYERSHUFFLE["evaluation"]["plans"]):
        FIGURES[base].append("layershuffle_layers")
    if any(m.base == base for m in UMAP_MODELS):
        FIGURES[base].append("layershuffle_umap")
FIGURE_FILES = [
    f"{RESULTS}/figures/{model}/{figure}.{ext}" for model, figures in FIGURES.items() for figure in figures for ext in ("png", "svg")
]


def figure_inputs(wildcards):
    inputs = {"summary": SUMMARY}
    if wildcards.figure == "fig03_similarity":
        inputs["similarity"] = f"{RESULTS}/similarity/{wildcards.model}.parquet"
    if wildcards.figure == "layershuffle_umap":
        inputs["umap"] = [f"{RESULTS}/layershuffle/umap/{m.name}.parquet" for m in UMAP_MODELS if m.base == wildcards.model]
    return inputs


ALL_FIGURES = painters_figures.FIGURES
