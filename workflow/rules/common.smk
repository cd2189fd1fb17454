# Config validation, the sweep table and the helpers the rules share.
import os
import re
import shlex
from collections import Counter
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version, validate

from painters import plan as painters_plan
from painters import results, sweep

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
REPORTS = config["reports"]
DEMO = config["demo"]
DEMO_DATA = f"{RESULTS}/demo/data"
DEMO_MODEL = f"{RESULTS}/demo/model"
MODELS = {name: config["models"][name] for name in sweep.enabled_models(config)}


def check_config():
    """Checks a schema cannot express; each error names the key, the value and what is valid."""
    if not MODELS:
        raise ValueError(f"models: none is enabled (configured: {', '.join(config['models']) or 'none'})")
    for name, model in MODELS.items():
        if model["path"] == DEMO_MODEL and not DEMO["enabled"]:
            raise ValueError(f"models.{name}.path is the demo model {DEMO_MODEL}, but demo.enabled is false")
        looks_local = model["path"].startswith((".", "~")) or os.path.isabs(model["path"])
        if model["path"] != DEMO_MODEL and looks_local and not os.path.isdir(os.path.expanduser(model["path"])):
            raise ValueError(f"models.{name}.path {model['path']!r}: no such folder (give a model folder or a Hugging Face id)")
    texts = config["similarity"]["texts"]
    if texts and not texts.startswith(DEMO_DATA) and not os.path.isfile(texts):
        raise ValueError(f"similarity.texts {texts!r}: no such file (one text per line), or null to skip Fig 3")


check_config()


DEPTHS = {name: sweep.model_depth(config, name) for name in MODELS}
JOBS = sweep.expand_jobs(config, DEPTHS)


def score_file(model, plan, benchmark):
    """Where a score lives (painters.results layout), as the string the rules match."""
    return f"{RESULTS}/scores/{model}/{plan}/{benchmark}.parquet"


SCORE_FILES = [score_file(j.model, j.plan, j.benchmark) for j in JOBS]
SUMMARY = f"{RESULTS}/summary.parquet"
# Finished scores that no longer stand for the config, read from the settings each file
# records: a few-shot score made with another few-shot seed, or before the sampler was seeded
# (0-shot scores never depend on the seed and stay). Each gets a rerun note
# (RESULTS/reruns/MODEL/PLAN/BENCHMARK.why, saying why) as an input of its evaluation, which
# therefore runs again. The note stays an input afterwards, so that the set of inputs that
# Snakemake recorded for the new score does not change on the next run.
STALE_SCORES = results.stale_scores(SCORE_FILES, config["evaluation"]["fewshot_seed"])
RERUN_NOTES = {str(p) for p in Path(RESULTS, "reruns").rglob("*.why")}
if STALE_SCORES and workflow.is_main_process:
    logger.warning(
        f"{len(STALE_SCORES)} finished score(s) will be recomputed: "
        + "; ".join(f"{count} x {reason}" for reason, count in Counter(r for r, _ in STALE_SCORES.values()).most_common())
    )


def rerun_note(score_file):
    return str(Path(RESULTS, "reruns", Path(score_file).relative_to(Path(RESULTS, "scores"))).with_suffix(".why"))


def rerun_reason(score_file):
    """The note's text: why the score is recomputed now, or what an existing note says."""
    if score_file in STALE_SCORES:
        reason, scored = STALE_SCORES[score_file]
        return f"{reason}; recomputed the score of {scored}"
    return Path(rerun_note(score_file)).read_text().strip()


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    plan=painters_plan.KEY_WILDCARD_REGEX,
    benchmark=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def rule_suffix(name):
    """A model name as part of a rule name (an identifier)."""
    return re.sub(r"\W", "_", name)


def uses_demo(model):
    return MODELS[model]["path"] == DEMO_MODEL


def demo_inputs(model):
    """The demo's data and model when `model` is the demo model (so they are built first)."""
    return {"demo_data": DEMO_DATA, "demo_model": DEMO_MODEL} if uses_demo(model) else {}


def evaluate_inputs(model):
    """An evaluation's inputs: the demo's files, and the score's rerun note if it is stale or has one."""

    def inputs(wildcards):
        score = score_file(model, wildcards.plan, wildcards.benchmark)
        note = rerun_note(score)
        return {**demo_inputs(model), **({"rerun_note": note} if score in STALE_SCORES or note in RERUN_NOTES else {})}

    return inputs


class NoRerun:
    """Shell arguments that must not trigger a rerun when they change (batch size, device, worker).

    Snakemake's params trigger records only plain values (str, int, list, ...);
    an object of this class is left out of that record, yet `{params.x}` renders it.
    """

    def __init__(self, args):
        self.args = [str(a) for a in args]

    def __str__(self):
        return shlex.join(self.args)


def slurm_setting(model, key, env):
    """Partition/account: the model's resources, then the config's `slurm` block, then the environment."""
    value = MODELS[model].get("resources", {}).get(f"slurm_{key}") or config["slurm"].get(key) or os.environ.get(env, "")
    return value


def results_folder(score_file):
    """RESULTS, from a score file's path RESULTS/scores/MODEL/PLAN/BENCHMARK.parquet."""
    return str(Path(score_file).parents[3])


# ---- evaluation


def evaluate_run_args(model):
    """Settings that Snakemake's params trigger must not track (see NoRerun): batch size, device
    and worker do not change scores; the few-shot seed does, but only those of few-shot
    benchmarks, so its changes are found in the score files themselves (STALE_SCORES)."""
    args = ["--batch-size", model["batch_size"], "--fewshot-seed", config["evaluation"]["fewshot_seed"]]
    for flag, key in (("--device", "device"), ("--device-map", "device_map"), ("--max-length", "max_length")):
        if model.get(key):
            args += [flag, model[key]]
    if config["evaluation"]["worker"]:
        args += ["--worker", "--worker-idle", config["evaluation"]["worker_idle"]]
    return NoRerun(args)


def evaluate_result_args(model):
    """Settings that change the scores: a change re-runs the affected jobs (Snakemake's params trigger)."""
    evaluation = config["evaluation"]
    args = ["--dtype", model["dtype"], "--bootstrap-iters", evaluation["bootstrap_iters"]]
    if config.get("limit") is not None:
        args += ["--limit", config["limit"]]
    if evaluation.get("max_gen_toks"):
        args += ["--max-gen-toks", evaluation["max_gen_toks"]]
    if config.get("data_dir"):
        args += ["--data-dir", config["data_dir"]]
    for path in config["include_paths"]:
        args += ["--include-path", path]
    if model.get("trust_remote_code"):
        args += ["--trust-remote-code"]
    return shlex.join(str(a) for a in args)


# ---- similarity


def similarity_inputs(wildcards):
    texts = config["similarity"]["texts"]
    inputs = demo_inputs(wildcards.model)
    if not texts.startswith(f"{DEMO_DATA}/"):  # a file inside the demo's data folder comes with that folder
        inputs["texts"] = texts
    return inputs


# ---- figures


FIGURE_VARIANTS = {
    "fig04_skip": "skip",
    "fig05_middle_repeat": "middle_repeat",
    "fig06_reverse": "reverse",
    "fig07_random": "random",
    "fig08_parallel": "parallel",
    "fig09_looped_parallel": "looped_parallel",
}


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
    return figures


FIGURES = {model: figures_of(model) for model in MODELS}
# skip against the fraction of layers skipped, across models (model sizes of a family)
SKIP_MODELS = [m for m in MODELS if "fig04_skip" in FIGURES[m]]
if len(SKIP_MODELS) >= 2:
    FIGURES["all"] = ["skip_fraction"]
FIGURE_FILES = [
    f"{RESULTS}/figures/{model}/{figure}.{ext}" for model, figures in FIGURES.items() for figure in figures for ext in ("png", "svg")
]


def figure_inputs(wildcards):
    inputs = {"summary": SUMMARY}
    if wildcards.figure == "fig03_similarity":
        inputs["similarity"] = f"{RESULTS}/similarity/{wildcards.model}.parquet"
    return inputs


def figure_benchmarks(wildcards):
    models = MODELS if wildcards.model == "all" else [wildcards.model]
    return sorted({job.benchmark for job in JOBS if job.model in models})


ALL_FIGURES = ["fig02_skip_switch", "fig03_similarity", *FIGURE_VARIANTS, "fig10_heatmap", "fig11_all_variants", "skip_fraction"]
