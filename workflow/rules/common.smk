# Config validation, the workflow's plan and the helpers the rules share. The planning itself
# (jobs, pending and stale scores, batches, LayerShuffle trainings and merges, figures) is
# painters.workflow_plan, plain Python; the rules files turn PLAN into rules.
import json
import os
import re
import shlex
from pathlib import Path

import yaml

from snakemake.logging import logger
from snakemake.utils import min_version, validate

from painters import cost as painters_cost
from painters import plan as painters_plan
from painters import sweep
from painters import figures as painters_figures
from painters import workflow_plan
from painters.layershuffle import study as layershuffle_study

min_version("9.0")


# one line for a schema error (Snakemake's own message prints the whole schema and config)
_PROBLEM = sweep.schema_problem(
    config, yaml.safe_load(Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text())
)
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
GLUE = config["glue"]
LAYERSHUFFLE = config["layershuffle"]

# Everything the rules are made of; a config that cannot run raises ValueError here.
PLAN = workflow_plan.plan_workflow(config)
MODELS = PLAN.models  # the enabled models' config blocks
KINDS = PLAN.kinds
SUMMARY = PLAN.summary
# the cost model's estimates beside what the finished jobs took (rule cost_table), where lm-eval scores are planned
COST_TABLE = [f"{RESULTS}/cost.csv"] if PLAN.cost_estimates else []
if PLAN.stale_warning and workflow.is_main_process:
    logger.warning(PLAN.stale_warning)


def score_file(model, plan, benchmark, train_seed=None):
    """Where a score lives (painters.results layout), as the string the rules match."""
    return workflow_plan.score_file(RESULTS, model, plan, benchmark, train_seed)


def rerun_reason(score_file):
    """What the rerun note of a stale score says (PLAN.stale)."""
    return PLAN.stale[score_file].message


wildcard_constraints:
    scored=r"[0-9]+|unknown",
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    plan=painters_plan.KEY_WILDCARD_REGEX,
    benchmark=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def rule_suffix(name):
    """A model name as part of a rule name (an identifier)."""
    return re.sub(r"\W", "_", name)


def batch_rule_name(stage, batch):
    seed = "" if batch.train_seed is None else f"_seed{batch.train_seed}"
    return f"{stage}_{rule_suffix(batch.model)}_{rule_suffix(batch.benchmark)}{seed}_{rule_suffix(batch.name)}"


def job_resources(resources):
    """A job's Snakemake resources from its planned ones (workflow_plan.Resources); mem_mb and runtime
    grow with each retry (a job killed for memory or for time gets more of it)."""
    return {
        "gpu": resources.gpu,
        "mem_mb": lambda wildcards, attempt, mem_mb=resources.mem_mb: mem_mb * attempt,
        "runtime": lambda wildcards, attempt, runtime=resources.runtime: runtime * attempt,
        "cpus_per_task": resources.cpus_per_task,
        "slurm_partition": resources.slurm_partition,
        "slurm_account": resources.slurm_account,
    }


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


def results_folder(score_file):
    """RESULTS, from a score file's path RESULTS/scores/MODEL/PLAN/BENCHMARK.parquet."""
    return str(Path(score_file).parents[3])


def training_settings():
    """How GLUE scores are fine-tuned (painters.glue.finetune.TrainingSettings, as scores record it)."""
    return workflow_plan.glue_training_settings(config)


# ---- evaluation


def evaluate_args(model):
    """`painters evaluate` settings of a model's jobs. Those that change scores are recorded in each
    score file and checked there (PLAN.stale), not by Snakemake's params trigger: no rule
    makes a finished score, so the trigger never sees one."""
    evaluation = config["evaluation"]
    args = ["--batch-size", model["batch_size"], "--fewshot-seed", evaluation["fewshot_seed"]]
    args += ["--dtype", model["dtype"], "--bootstrap-iters", evaluation["bootstrap_iters"]]
    if config.get("limit") is not None:
        args += ["--limit", config["limit"]]
    if evaluation.get("max_gen_toks"):
        args += ["--max-gen-toks", evaluation["max_gen_toks"]]
    args += ["--kv-cache", evaluation["kv_cache"]]
    args += [] if evaluation.get("share_contexts", True) else ["--no-share-contexts"]  # not a setting of a score
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
    score (PLAN.stale compares them), as evaluate_args' are."""
    settings = training_settings()
    args = [
        "--mode",
        settings.mode,
        "--epochs",
        settings.epochs,
        "--learning-rate",
        settings.learning_rate,
        "--frozen-learning-rate",
        settings.frozen_learning_rate,
        "--batch-size",
        settings.batch_size,
        "--max-seq-length",
        settings.max_seq_length,
        "--dtype",
        model["dtype"],
    ]
    args += ["--fp16"] if settings.fp16 else []
    for flag, value in (
        ("--max-train-samples", settings.max_train_samples),
        ("--max-eval-samples", settings.max_eval_samples),
        ("--device", model.get("device")),
        ("--data-dir", GLUE["data_dir"]),
    ):
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
    inputs = dict(PLAN.demo_inputs[wildcards.model])
    if texts.startswith(f"{DEMO_DATA}/"):  # a file inside the demo's data folder comes with that folder
        inputs["demo_data"] = DEMO_DATA
    else:
        inputs["texts"] = texts
    return inputs


# ---- figures


def figure_inputs(wildcards):
    inputs = {"summary": SUMMARY}
    if wildcards.figure == "fig03_similarity":
        inputs["similarity"] = f"{RESULTS}/similarity/{wildcards.model}.parquet"
    if wildcards.figure == "layershuffle_umap":
        inputs["umap"] = [
            f"{RESULTS}/layershuffle/umap/{m.name}.parquet" for m in PLAN.umap_models if m.base == wildcards.model
        ]
    return inputs


ALL_FIGURES = painters_figures.FIGURES
