"""The workflow's plan: what the Snakefile's rules are made of, as plain data.

`plan_workflow(config)` takes the validated config (the schema's defaults filled as Snakemake's
`validate` fills them, `{results}` expanded and the demo's further variants added:
painters.sweep.with_results_paths, with_demo_variants; painters.sweep.read_config does the two
last for a file) and returns a `WorkflowPlan`: the models with their depths and kinds, every score
job and its file, the finished scores that are stale (with why, when they were made and their
rerun note), the pending ones grouped into evaluation and fine-tuning jobs with their inputs and
resources, the LayerShuffle trainings, merges and UMAPs with their pending scores, and the figures
of each model. workflow/rules/*.smk only turn it into rules.

No Snakemake here. What it reads from disk: which score files exist and the settings they record
(painters.results.stale_scores), models' config.json (depth, kind), benchmark task YAMLs of the
include paths (which generate text), and whether the folders and files the config names are there.
A config that cannot be run raises ValueError naming the key, the value and what is valid.

Staleness. A finished score file is final: no rule makes it, so nothing Snakemake does can delete
or redo it. Only pending scores are outputs: missing ones, and finished ones that no longer stand
for the config, judged from the settings each file records (a limit, dtype, bootstrap or
generation length changed; a few-shot score made with another few-shot seed or before the sampler
was seeded; a trained model's training settings). Each stale score gets a rerun note
(RESULTS/reruns/MODEL/PLAN/BENCHMARK.SCORED.why, saying why) as an input of its job, so that job
runs although its outputs exist; Snakemake deletes a job's existing outputs first.

Job size is decided in one place, `evaluation_batches` (and `glue_batches`, `vision_batches`, `batch_resources`).
"""

from __future__ import annotations

import hashlib
import json
import os
import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from painters import benchmarks, cost, results, sweep
from painters import figures as painters_figures
from painters import plan as painters_plan
from painters.evaluate import model_folder_lacks
from painters.layershuffle import study as layershuffle_study
from painters.layershuffle.study import CombinedModel, TrainedModel


@dataclass(frozen=True)
class Resources:
    """What a job asks the scheduler for, as plain numbers (the rules add the retry's growth)."""

    gpu: int
    mem_mb: int
    runtime: int  # minutes
    cpus_per_task: int
    slurm_partition: str
    slurm_account: str

    @classmethod
    def of(cls, block: Mapping, config: Mapping) -> "Resources":
        """From a `resources` block (a model's, or layershuffle's); partition and account from the
        block, then the config's `slurm` block, then PAINTERS_SLURM_PARTITION / PAINTERS_SLURM_ACCOUNT."""
        return cls(gpu=block["gpu"], mem_mb=block["mem_mb"], runtime=block["runtime"], cpus_per_task=block["cpus_per_task"],
                   slurm_partition=slurm_setting(block, config, "partition", "PAINTERS_SLURM_PARTITION"),
                   slurm_account=slurm_setting(block, config, "account", "PAINTERS_SLURM_ACCOUNT"))


@dataclass(frozen=True)
class StaleScore:
    """A finished score that must be recomputed: why, when it was made (as it records it) and its rerun note."""

    reason: str
    scored: str  # its timestamp, or "unknown" for an unreadable file
    note: str  # RESULTS/reruns/MODEL/PLAN/BENCHMARK.SCORED.why

    @property
    def message(self) -> str:
        """What the rerun note says."""
        return f"{self.reason}; recomputed the score of {self.scored}"


@dataclass(frozen=True)
class ScoreBatch:
    """One evaluation job (plans of one model on one lm-eval benchmark, one shared pass) or one
    fine-tuning job (plans of one encoder on one GLUE task with one seed, one after another)."""

    model: str
    benchmark: str  # an lm-eval benchmark, or a GLUE task
    plans: tuple[str, ...]
    train_seed: int | None  # GLUE: the fine-tuning seed; None for an evaluation job
    scores: tuple[str, ...]  # its outputs: the pending score file of each plan, in order
    inputs: dict  # {name: path or list of paths}: the demo's files, the benchmark check or the demo's GLUE tasks, rerun notes
    resources: Resources
    seconds: float | None = None  # an evaluation job's estimate on cost.device (painters.cost); None: not sized by time
    peak_bytes: int | None = None  # and the most memory it holds (weights, cache or kept states)

    @property
    def name(self) -> str:
        """Unique among the batches of its (model, benchmark, seed) (painters.sweep.Batch.name)."""
        return sweep.Batch(self.model, self.benchmark, self.plans, self.train_seed).name


@dataclass(frozen=True)
class VisionTraining:
    """A LayerShuffle model to train (one job) and its evaluation scores (one job, when any is pending)."""

    model: TrainedModel
    settings: object  # painters.layershuffle.training.TrainSettings
    trained_from: dict  # painters.layershuffle.study.trained_from
    depth: int  # its base model's
    folder: str  # RESULTS/layershuffle/models/NAME
    scores: tuple[str, ...]  # every score of its evaluation grid
    pending: tuple[str, ...]  # the missing and stale ones: its evaluation job's outputs
    rerun_notes: tuple[str, ...]
    start: str | None = None  # the folder of the pretrained base model it is fine-tuned from (None: from the base model)

    @property
    def name(self) -> str:
        return self.model.name


@dataclass(frozen=True)
class VisionPretraining:
    """A LayerShuffle base model pretrained once (`pretrain_steps`), that its trained models fine-tune from: one job."""

    base: str
    settings: object  # painters.layershuffle.training.TrainSettings
    folder: str  # RESULTS/layershuffle/pretrained/BASE (its classifier: FOLDER/model)
    depth: int


@dataclass(frozen=True)
class VisionMerge:
    """The merged models and the ensemble of one (base model, variant): one merge job writes the pending scores of all."""

    base: str
    variant: str
    models: tuple[CombinedModel, ...]
    sources: tuple[str, ...]  # the folders of the trained models merged
    plans: tuple[str, ...]  # scored under each
    scores: tuple[str, ...]
    pending: tuple[str, ...]
    rerun_notes: tuple[str, ...]


@dataclass(frozen=True)
class WorkflowPlan:
    results: str
    models: dict  # {name: its config block} of the enabled models
    depths: dict  # {model: number of layers}
    kinds: dict  # {model: "decoder", "encoder" or "vision"}
    demo_inputs: dict  # {model: {"demo_data": ..., "demo_model": ...}} for the demo's decoders, {} for others
    jobs: tuple[sweep.Job, ...]  # every (model, plan, benchmark[, seed]) the sweeps ask for
    score_files: tuple[str, ...]  # every score file of the workflow: the jobs', then the trained, merged and ensembled models'
    summary: str
    stale: dict  # {score file: StaleScore}, in the order found (jobs, trained models, merges)
    pending: tuple[sweep.Job, ...]  # the jobs whose score is missing or stale
    batches: tuple[ScoreBatch, ...]  # evaluation jobs
    glue_batches: tuple[ScoreBatch, ...]  # fine-tuning jobs
    vision_batches: tuple[ScoreBatch, ...]  # image classifiers' evaluation jobs (painters evaluate-images)
    benchmark_check: str  # the benchmark check's file, remembered per (benchmarks, include paths, data folder)
    glue_training: object  # painters.glue.finetune.TrainingSettings of the encoders (None without encoders)
    resources: dict  # {model: Resources}
    vision_resources: Resources | None  # every LayerShuffle job's (None: layershuffle disabled)
    vision_depths: dict  # {base model: depth} of the LayerShuffle base models that are trained
    trainings: dict  # {trained model name: VisionTraining}
    pretrainings: dict  # {base model: VisionPretraining} of the base models pretrained by the workflow
    merges: tuple[VisionMerge, ...]
    umap_models: tuple[TrainedModel, ...]  # whose layer outputs get a UMAP
    figures: dict  # {model, base model or "all": [figure, ...]}
    figure_files: tuple[str, ...]  # RESULTS/figures/MODEL/FIGURE.png|svg
    cost_estimates: tuple[dict, ...] = ()  # per (model, benchmark): the cost model's estimate of all its scores (cost_estimates)

    @property
    def stale_warning(self) -> str | None:
        """One line saying how many finished scores will be recomputed and why (None: none)."""
        if not self.stale:
            return None
        counts = Counter(stale.reason for stale in self.stale.values())
        return (f"{len(self.stale)} finished score(s) will be recomputed: "
                + "; ".join(f"{count} x {reason}" for reason, count in counts.most_common()))


def plan_workflow(config: Mapping) -> WorkflowPlan:
    """The workflow's plan for a validated config (see the module's doc); raises ValueError for a config that cannot run."""
    results_dir = config["results"]
    demo_models = sweep.demo_model_paths(config)
    models = {name: config["models"][name] for name in sweep.enabled_models(config)}
    check_config(config, models)

    depths = {name: sweep.model_depth(config, name) for name in models}
    kinds = {name: sweep.configured_model_kind(config, name) for name in models}
    if not config["benchmarks"] and "decoder" in kinds.values():
        raise ValueError(f"benchmarks: none given, but {', '.join(n for n in models if kinds[n] == 'decoder')} "
                         "are decoders, scored on lm-eval benchmarks: give some (or disable those models)")
    jobs = sweep.expand_jobs(config, depths, kinds)
    check_vision_config(config, models, kinds)
    if config["glue"]["fp16"]:
        for name in models:
            if kinds[name] == "encoder" and (models[name].get("device") or "").startswith("cpu"):
                raise ValueError(f"glue.fp16 needs a GPU, but models.{name}.device is {models[name]['device']}")

    job_files = [score_file(results_dir, j.model, j.plan, j.benchmark, j.train_seed) for j in jobs]
    score_files = list(job_files)
    glue_training = glue_training_settings(config) if "encoder" in kinds.values() else None
    stale: dict[str, tuple[str, str]] = {}  # {score file: (reason, scored)}
    for name in models:
        stale.update(results.stale_scores([f for j, f in zip(jobs, job_files) if j.model == name],
                                          wanted_settings(config, models[name], kinds[name], glue_training)))
    pending = [j for j, f in zip(jobs, job_files) if f in stale or not os.path.exists(f)]
    evaluations = evaluation_batches([j for j in pending if kinds[j.model] == "decoder"], config, models, depths)
    trainings_of_glue = glue_batches(pending, config, models, depths)
    image_evaluations = vision_batches([j for j in pending if kinds[j.model] == "vision"], depths)

    # ---- LayerShuffle: trained vision models (BASE.VARIANT.sSEED) and their evaluation grid
    layershuffle = config["layershuffle"]
    trained = {m.name: m for m in layershuffle_study.trained_models(layershuffle)} if layershuffle["enabled"] else {}
    umap_models = layershuffle_study.umap_models(layershuffle) if layershuffle["enabled"] else []
    if layershuffle["enabled"]:
        check_layershuffle_config(layershuffle)
    vision_depths = {base: sweep.vision_depth(layershuffle, base) for base in dict.fromkeys(m.base for m in trained.values())}
    vision_plans = {base: layershuffle_study.evaluation_plans(layershuffle, depth) for base, depth in vision_depths.items()}
    trainings = {}
    for name, model in trained.items():
        files = [score_file(results_dir, name, key, layershuffle["data"]) for key in vision_plans[model.base]]
        settings = vision_training(layershuffle, model)
        origin = vision_trained_from(layershuffle, model.base)
        # a score of a model trained with other settings is stale (its model is trained again first)
        stale.update(results.stale_scores(files, trained_wanted_settings("float32", settings.recorded(), origin)))
        trainings[name] = (model, settings, origin, files, [f for f in files if f in stale or not os.path.exists(f)])
    score_files += [f for *_, files, _pending in trainings.values() for f in files]

    # merged models and ensembles: one merge job per (base model, variant) writes the pending scores of all
    assignments = {}  # drawn once per (base, variant)
    merges: dict[tuple[str, str], tuple[list, list, list]] = {}
    merge_plans = layershuffle_study.merge_plans(layershuffle) if layershuffle["enabled"] else []
    for combined in layershuffle_study.combined_models(layershuffle) if layershuffle["enabled"] else []:
        files = [score_file(results_dir, combined.name, key, layershuffle["data"]) for key in merge_plans]
        training = combined_training(layershuffle, combined, assignments)
        stale.update(results.stale_scores(files, trained_wanted_settings("float32", training,
                                                                         vision_trained_from(layershuffle, combined.base))))
        members, all_files, pending_files = merges.setdefault((combined.base, combined.variant), ([], [], []))
        members.append(combined)
        all_files += files
        pending_files += [f for f in files if f in stale or not os.path.exists(f)]
        score_files += files

    stale_scores = {f: StaleScore(reason, scored, rerun_note(results_dir, f, scored)) for f, (reason, scored) in stale.items()}
    # base models pretrained once, that their trained models fine-tune from (and vision models may sweep)
    pretrainings = {base: VisionPretraining(base, vision_pretraining(layershuffle, base), sweep.pretrained_vision_folder(results_dir, base),
                                           sweep.vision_depth(layershuffle, base))
                    for base in sweep.pretrained_vision_paths(config).values()}

    def notes(files):
        return tuple(stale_scores[f].note for f in files if f in stale_scores)

    demo_inputs = {name: ({"demo_data": f"{results_dir}/demo/data", "demo_model": model["path"]}
                          if model["path"] in demo_models else {}) for name, model in models.items()}
    benchmark_check = benchmark_check_file(config)
    demo_glue = f"{results_dir}/demo/glue"
    pretrained = sweep.pretrained_vision_paths(config)
    # a vision model the workflow pretrains (LayerShuffle's base model) is made by its pretraining job
    vision_inputs = {name: ({"pretrained": str(Path(model["path"]).parent)} if model["path"] in pretrained else {})
                     for name, model in models.items()}

    def score_batch(batch):
        scores = tuple(score_file(results_dir, batch.model, plan, batch.benchmark, batch.train_seed) for plan in batch.plans)
        if kinds[batch.model] == "vision":
            inputs = vision_inputs[batch.model]
        elif batch.train_seed is None:
            inputs = {**demo_inputs[batch.model], "benchmark_check": benchmark_check}
        else:
            inputs = {"demo_glue": demo_glue} if config["glue"]["data_dir"] == demo_glue else {}
        stale_notes = list(notes(scores))
        return ScoreBatch(batch.model, batch.benchmark, batch.plans, batch.train_seed, scores,
                          {**inputs, **({"rerun_notes": stale_notes} if stale_notes else {})},
                          batch_resources(batch, config, models), batch.seconds, batch.peak_bytes)

    figures = model_figures(config, models, kinds, jobs, trained, umap_models)
    return WorkflowPlan(
        results=results_dir,
        models=models,
        depths=depths,
        kinds=kinds,
        demo_inputs=demo_inputs,
        jobs=tuple(jobs),
        score_files=tuple(score_files),
        summary=f"{results_dir}/summary.parquet",
        stale=stale_scores,
        pending=tuple(pending),
        batches=tuple(score_batch(b) for b in evaluations),
        glue_batches=tuple(score_batch(b) for b in trainings_of_glue),
        vision_batches=tuple(score_batch(b) for b in image_evaluations),
        benchmark_check=benchmark_check,
        glue_training=glue_training,
        resources={name: Resources.of(model["resources"], config) for name, model in models.items()},
        vision_resources=Resources.of(layershuffle["resources"], config) if layershuffle["enabled"] else None,
        vision_depths=vision_depths,
        trainings={name: VisionTraining(model, settings, origin, vision_depths[model.base],
                                        f"{results_dir}/layershuffle/models/{name}", tuple(files), tuple(pending_files),
                                        notes(pending_files), pretrainings[model.base].folder if model.base in pretrainings else None)
                   for name, (model, settings, origin, files, pending_files) in trainings.items()},
        pretrainings=pretrainings,
        merges=tuple(VisionMerge(base, variant, tuple(members),
                                 tuple(f"{results_dir}/layershuffle/models/{m.name}"
                                       for m in layershuffle_study.merge_sources(layershuffle, base, variant)),
                                 tuple(merge_plans), tuple(files), tuple(pending_files), notes(pending_files))
                     for (base, variant), (members, files, pending_files) in merges.items()),
        umap_models=tuple(umap_models),
        figures=figures,
        figure_files=tuple(f"{results_dir}/figures/{model}/{figure}.{ext}" for model, names in figures.items()
                           for figure in names for ext in ("png", "svg")),
        cost_estimates=tuple(cost_estimates([j for j in jobs if kinds[j.model] == "decoder"], config, models, depths)),
    )


# ---- job size: the one place that groups pending scores into jobs and says what each asks for


def evaluation_batches(pending: Sequence[sweep.Job], config: Mapping, models: Mapping, depths: Mapping) -> list[sweep.Batch]:
    """Pending lm-eval scores grouped into evaluation jobs: one model and benchmark each, neighbouring
    plans in the trie walk, each within `minutes_per_job` of the cost model's estimate on the
    `cost.device` profile (painters.sweep.batch_jobs_by_time; README "Job granularity"). Where a
    model or the config sets `passes_per_job`, its jobs are sized by layer work instead
    (painters.sweep.batch_jobs)."""
    jobs = [j for j in pending if j.train_seed is None]
    by_passes = {name for name in models if (models[name].get("passes_per_job") or config["evaluation"].get("passes_per_job"))}
    batches = []
    if by_passes:
        generative = generative_benchmarks(config)
        batches += sweep.batch_jobs(
            [j for j in jobs if j.model in by_passes], depths,
            {name: models[name].get("passes_per_job") or config["evaluation"]["passes_per_job"] for name in by_passes},
            plan_by_plan=generative)
    timed = [j for j in jobs if j.model not in by_passes]
    if timed:
        estimates = PassEstimates(config, models, [j for j in jobs if j.model not in by_passes])
        budgets = {name: 60 * (models[name].get("minutes_per_job") or config["evaluation"]["minutes_per_job"]) for name in models}
        batches += sweep.batch_jobs_by_time(timed, depths, estimates, budgets)
    return sorted(batches, key=lambda b: (b.model, b.benchmark))


def cost_estimates(jobs: Sequence[sweep.Job], config: Mapping, models: Mapping, depths: Mapping) -> list[dict]:
    """Per (model, benchmark): what all its lm-eval scores cost on `cost.device`, finished or not, in
    the jobs they would make (the report puts it beside what the finished ones took)."""
    batches = evaluation_batches([j for j in jobs if j.train_seed is None], config, models, depths)
    rows: dict[tuple[str, str], dict] = {}
    for batch in batches:
        gpus = max(1, models[batch.model]["resources"]["gpu"])
        row = rows.setdefault((batch.model, batch.benchmark), {"model": batch.model, "benchmark": batch.benchmark, "gpus": gpus,
                                                                "plans": 0, "jobs": 0, "estimated_gpu_hours": None})
        row["plans"] += len(batch.plans)
        row["jobs"] += 1
        if batch.seconds is not None:
            row["estimated_gpu_hours"] = (row["estimated_gpu_hours"] or 0.0) + batch.seconds / 3600 * gpus
    return [rows[key] for key in sorted(rows)]


def generative_benchmarks(config: Mapping) -> set[str]:
    return {b for b in config["benchmarks"] if benchmarks.generates_text(b, config["include_paths"])}


class PassEstimates:
    """The cost model of each (model, benchmark) pass (painters.cost.PassEstimate): a model's shape
    and weight bytes, the benchmark's size (measured from a finished score of it, else the stated
    estimate), the `cost.device` profile, the batch size and generation's cache mode."""

    def __init__(self, config: Mapping, models: Mapping, jobs: Sequence[sweep.Job]):
        self.config, self.models = config, models
        self.device = cost.device_profile(config["cost"]["device"])
        self.generative = generative_benchmarks(config)
        self.files: dict[tuple[str, str], list[str]] = {}
        for job in jobs:
            self.files.setdefault((job.model, job.benchmark), []).append(score_file(config["results"], job.model, job.plan, job.benchmark))
        self._shapes: dict[str, tuple] = {}
        self._tokens: dict[tuple[str, str], object] = {}

    def shape(self, model: str):
        if model not in self._shapes:
            self._shapes[model] = (sweep.model_shape(self.config, model), sweep.model_element_bytes(self.config, model))
        return self._shapes[model]

    def tokens(self, model: str, benchmark: str):
        """The benchmark's requests for one plan of `model`: measured where a score of it (any plan) records them."""
        key = (model, benchmark)
        if key not in self._tokens:
            generative = benchmark in self.generative
            new_tokens = self.config["evaluation"].get("max_gen_toks")
            shared = self.config["evaluation"].get("share_contexts", True)
            measured = results.recorded_request_sizes(self.files.get(key, []) + [
                score_file(self.config["results"], model, "baseline", benchmark)])
            if measured:
                estimate = cost.benchmark_tokens(benchmark, generative, new_tokens, None, shared)
                self._tokens[key] = cost.measured_tokens(*measured, generated=estimate.generated, computed=estimate.computed)
            else:
                self._tokens[key] = cost.benchmark_tokens(benchmark, generative, new_tokens, self.config.get("limit"), shared)
        return self._tokens[key]

    def __call__(self, model: str, benchmark: str):
        shape, element_bytes = self.shape(model)
        batch_size = self.models[model]["batch_size"]
        # a model spread over several GPUs (device_map) runs them one after another: their memory adds up
        gpus = max(1, self.models[model]["resources"]["gpu"])
        device = dataclasses.replace(self.device, memory_gb=self.device.memory_gb * gpus)
        return cost.PassEstimate(shape, self.tokens(model, benchmark), device, element_bytes,
                                 batch_size if isinstance(batch_size, int) else AUTO_BATCH_SIZE,
                                 self.config["evaluation"]["kv_cache"])


AUTO_BATCH_SIZE = 64  # what the cost model assumes `batch_size: auto` finds


def glue_batches(pending: Sequence[sweep.Job], config: Mapping, models: Mapping, depths: Mapping) -> list[sweep.Batch]:
    """Pending GLUE scores grouped into fine-tuning jobs: one model, task and seed each, at most
    glue.plans_per_job plans (each plan is a fine-tuning run of its own: no work is shared)."""
    return sweep.plan_batches([j for j in pending if j.train_seed is not None], depths,
                              {name: config["glue"]["plans_per_job"] for name in models})


def vision_batches(pending: Sequence[sweep.Job], depths: Mapping) -> list[sweep.Batch]:
    """Pending image scores grouped into evaluation jobs: one per model and benchmark, all its plans in
    one shared pass over the test images (a ViT-B/16 on ImageNet's 50,000 images: ~17.5 GFLOP per
    image and plan before sharing, minutes on one GPU; reading the images is most of a job)."""
    return sweep.plan_batches(pending, depths, dict.fromkeys(depths))


def batch_resources(batch: sweep.Batch, config: Mapping, models: Mapping) -> Resources:
    """What one evaluation or fine-tuning job asks for: its model's `resources`; an evaluation job
    sized by time gets its estimate times `cost.margin` plus `cost.startup_minutes` as its runtime,
    at most the model's `resources.runtime` (a retry gets runtime x attempt, as mem_mb)."""
    resources = Resources.of(models[batch.model]["resources"], config)
    if batch.seconds is None:
        return resources
    runtime = sweep.runtime_minutes(batch.seconds, config["cost"]["margin"], config["cost"]["startup_minutes"], resources.runtime)
    return dataclasses.replace(resources, runtime=runtime)


# ---- config checks a schema cannot express; each error names the key, the value and what is valid


def check_config(config: Mapping, models: Mapping) -> None:
    demo_models = sweep.demo_model_paths(config)
    pretrained = sweep.pretrained_vision_paths(config)
    demo_data = f"{config['results']}/demo/data"
    if not models and not config["layershuffle"]["enabled"]:
        raise ValueError(f"models: none is enabled (configured: {', '.join(config['models']) or 'none'}), "
                         "and layershuffle.enabled is false: nothing to run")
    if models and not config["sweeps"]:
        raise ValueError(f"sweeps: none given for the models {', '.join(models)} (or disable them: enabled: false)")
    for name, model in models.items():
        if model["path"] in demo_models and not config["demo"]["enabled"]:
            raise ValueError(f"models.{name}.path is the demo model {model['path']}, but demo.enabled is false")
        built = model["path"] in demo_models or model["path"] in pretrained
        unbuilt = [base for base in config["layershuffle"]["base_models"]
                   if model["path"] == sweep.pretrained_vision_model(config["results"], base) and not built]
        if unbuilt:
            raise ValueError(f"models.{name}.path is the pretrained LayerShuffle base model {unbuilt[0]} ({model['path']}), but "
                             "layershuffle.enabled is false or its pretrain_steps is 0: nothing makes it (disable the model, or enable those)")
        looks_local = model["path"].startswith((".", "~")) or os.path.isabs(model["path"])
        if not built and looks_local and not os.path.isdir(os.path.expanduser(model["path"])):
            raise ValueError(f"models.{name}.path {model['path']!r}: no such folder (give a model folder or a Hugging Face id)")
        if not built and os.path.isdir(os.path.expanduser(model["path"])):
            folder = Path(model["path"]).expanduser()
            lacking = model_folder_lacks(folder, ())  # config.json and weights
            # and a tokenizer; a vision model's image processor is checked by its job (the digits need none)
            if lacking is None and sweep.configured_model_kind(config, name) != "vision":
                lacking = model_folder_lacks(folder)
            if lacking:
                raise ValueError(f"models.{name}.path {model['path']!r}: the folder has no {lacking}")
    texts = config["similarity"]["texts"]
    if texts and not texts.startswith(demo_data) and not os.path.isfile(texts):
        raise ValueError(f"similarity.texts {texts!r}: no such file (one text per line), or null to skip Fig 3")
    check_glue_config(config)


def check_vision_config(config: Mapping, models: Mapping, kinds: Mapping) -> None:
    """The vision models' benchmarks can be read, and their names leave the LayerShuffle base models' figures alone."""
    vision_models = [name for name in models if kinds[name] == "vision"]
    if not vision_models:
        return
    settings, layershuffle = config["vision"], config["layershuffle"]
    data_dir = settings["data_dir"]
    if "imagefolder" in settings["benchmarks"] and (data_dir is None or not os.path.isdir(data_dir)):
        raise ValueError(f"vision.data_dir {data_dir!r}: no such folder (benchmark imagefolder reads DATA_DIR/val/CLASS/*.jpg|png, "
                         "or validation, test)")
    pretrained = sweep.pretrained_vision_paths(config)
    for name in vision_models:
        if layershuffle["enabled"] and name in layershuffle["base_models"]:
            raise ValueError(f"models.{name}: a LayerShuffle base model has that name (its figures go under it); "
                             "give the vision model another name")
        base = pretrained.get(models[name]["path"])
        if base is not None and "digits" in settings["benchmarks"] and settings["data_seed"] != layershuffle["data_seed"]:
            raise ValueError(f"vision.data_seed {settings['data_seed']}: models.{name} is pretrained on the digits split of "
                             f"layershuffle.data_seed {layershuffle['data_seed']}; give it the same seed, or its test images "
                             "would include its training images")


def check_glue_config(config: Mapping) -> None:
    from painters.glue.tasks import task_table

    glue, demo_glue = config["glue"], f"{config['results']}/demo/glue"
    table = task_table(glue["custom_tasks"])
    unknown = [task for task in glue["tasks"] if task not in table]
    if unknown:
        raise ValueError(f"glue.tasks: unknown task(s) {', '.join(unknown)} (valid: {', '.join(table)}; "
                         "tasks of your own go under glue.custom_tasks)")
    data_dir = glue["data_dir"]
    if data_dir and data_dir != demo_glue and not os.path.isdir(data_dir):
        raise ValueError(f"glue.data_dir {data_dir!r}: no such folder (DATA_DIR/TASK/SPLIT.jsonl|csv|tsv|parquet, "
                         "docs/offline-data.md), or null for nyu-mll/glue from the local Hugging Face cache")
    if glue["custom_tasks"] and not data_dir:
        raise ValueError(f"glue.custom_tasks {', '.join(glue['custom_tasks'])} read local files: set glue.data_dir")
    if data_dir == demo_glue and not config["demo"]["enabled"]:
        raise ValueError(f"glue.data_dir is the demo's tasks {demo_glue}, but demo.enabled is false")


def check_layershuffle_config(layershuffle: Mapping) -> None:
    """The data set and the base models fit together: digits for the tiny ViT, the others through a
    pretrained model's image processor; an image folder is given and there."""
    data, data_dir = layershuffle["data"], layershuffle["data_dir"]
    for name, spec in layershuffle["base_models"].items():
        if (spec["model"] == "tiny") != (data == "digits"):
            raise ValueError(f"layershuffle.base_models.{name}: model {spec['model']} and data {data} do not go together "
                             "(the tiny ViT trains on digits; the other data sets are read through a pretrained ViT/DeiT's "
                             "image processor)")
    if data == "imagefolder" and (data_dir is None or not os.path.isdir(data_dir)):
        raise ValueError(f"layershuffle.data_dir {data_dir!r}: no such folder (data imagefolder reads DATA_DIR/train/CLASS/*.jpg|png "
                         "and DATA_DIR/val/CLASS/...)")
    if data != "imagefolder" and data_dir is not None:
        raise ValueError(f"layershuffle.data_dir is for data imagefolder, not {data}: remove it")


# ---- the pieces


def score_file(results_dir: str, model: str, plan: str, benchmark: str, train_seed: int | None = None) -> str:
    """Where a score lives (painters.results layout), as the string the rules match."""
    seed = "" if train_seed is None else f".seed{train_seed}"
    return f"{results_dir}/scores/{model}/{plan}/{benchmark}{seed}.parquet"


def rerun_note(results_dir: str, score: str, scored: str) -> str:
    """RESULTS/reruns/MODEL/PLAN/BENCHMARK.SCORED.why for a stale score made at SCORED."""
    stamp = re.sub(r"\D", "", scored)[:14]  # 2026-11-23 10:15:02... -> 20261123101502
    relative = Path(score).relative_to(Path(results_dir, "scores")).with_suffix("")
    return f"{results_dir}/reruns/{relative}.{stamp or 'unknown'}.why"


def benchmark_check_file(config: Mapping) -> str:
    """Every benchmark is checked once, before any evaluation job (one line naming an unknown one),
    by lm-eval's own task index: too slow for every planning, so a job, remembered per setting."""
    checked = json.dumps([config["benchmarks"], config["include_paths"], config.get("data_dir")])
    return f"{config['results']}/checks/benchmarks.{hashlib.sha256(checked.encode()).hexdigest()[:12]}.ok"


def slurm_setting(block: Mapping, config: Mapping, key: str, env: str) -> str:
    """Partition/account: the `resources` block, then the config's `slurm` block, then the environment."""
    return block.get(f"slurm_{key}") or config["slurm"].get(key) or os.environ.get(env, "")


def glue_training_settings(config: Mapping):
    """How GLUE scores are fine-tuned (painters.glue.finetune.TrainingSettings, as scores record it)."""
    from painters.glue.finetune import TrainingSettings

    keys = TrainingSettings.__dataclass_fields__
    return TrainingSettings(**{key: config["glue"][key] for key in keys if key in config["glue"]})


def trained_wanted_settings(dtype, training, trained_from=None) -> dict:
    """What a score of a model trained by the workflow (GLUE fine-tuning, LayerShuffle training,
    merging) must have been made with: no lm-eval settings, the training settings (a dict), and for
    a LayerShuffle model what it was trained from (base model, data)."""
    return {"fewshot_seed": None, "limit": None, "bootstrap_iters": None, "dtype": dtype, "max_gen_toks": None,
            "training": training, "trained_from": trained_from}


def wanted_settings(config: Mapping, model: Mapping, kind: str, glue_training=None) -> dict:
    """The settings a finished score of a model must have been made with (results.stale_reason)."""
    if kind == "encoder":
        return trained_wanted_settings(model["dtype"], (glue_training or glue_training_settings(config)).recorded())
    if kind == "vision":
        return vision_wanted_settings(config, model)
    evaluation = config["evaluation"]
    return {
        "fewshot_seed": evaluation["fewshot_seed"],
        "limit": config.get("limit"),
        "bootstrap_iters": evaluation["bootstrap_iters"],
        "dtype": model["dtype"],
        "max_gen_toks": evaluation.get("max_gen_toks"),
        "kv_cache": evaluation["kv_cache"],
    }


def vision_wanted_settings(config: Mapping, model: Mapping) -> dict:
    """What a vision model's score must have been made with: the dtype, vision.limit and, for a model
    `painters train-vision` trained (the workflow's pretrained base model, or a folder with its
    training.json), how and from what it was trained."""
    wanted = {**trained_wanted_settings(model["dtype"], None), "limit": config["vision"]["limit"]}
    base = sweep.pretrained_vision_paths(config).get(model["path"])
    if base is not None:
        layershuffle = config["layershuffle"]
        return wanted | {"training": vision_pretraining(layershuffle, base).recorded(),
                         "trained_from": vision_trained_from(layershuffle, base, pretrained=False)}
    facts = sweep.trained_facts(model["path"]) if os.path.isdir(os.path.expanduser(model["path"])) else None
    if facts is not None:
        wanted |= {"training": facts["settings"], "trained_from": facts.get("trained_from")}
    return wanted


def vision_trained_from(layershuffle: Mapping, base: str, pretrained: bool = True) -> dict:
    """What `base`'s trained models are trained from (painters.layershuffle.study.trained_from), as
    train-vision records it: with the settings of its pretraining where it has one (`pretrained`
    False: what the pretraining itself is trained from)."""
    spec, data_dir = layershuffle["base_models"][base], layershuffle["data_dir"]
    tiny = spec["model"] == "tiny"
    pretraining = vision_pretraining(layershuffle, base) if pretrained and spec["pretrain_steps"] else None
    return layershuffle_study.trained_from(spec["model"], layershuffle["data"], layershuffle["data_seed"],
                                           str(Path(data_dir).resolve()) if data_dir is not None else None,
                                           sweep.vision_depth(layershuffle, base) if tiny else None, spec["hidden"] if tiny else None,
                                           pretraining.recorded() if pretraining is not None else None)


def vision_pretraining(layershuffle: Mapping, base: str):
    """How `base` is pretrained once (`pretrain_steps`): sequentially, from `pretrain_seed`, with the
    study's other training settings (painters.layershuffle.training.TrainSettings)."""
    spec = layershuffle["base_models"][base]
    return vision_training(layershuffle, TrainedModel(base, "sequential", spec["pretrain_seed"]),
                           steps=spec["pretrain_steps"])


def vision_training(layershuffle: Mapping, trained: TrainedModel, **overrides):
    """The settings a trained model is trained with (painters.layershuffle.training.TrainSettings)."""
    from painters.layershuffle.training import TrainSettings

    keys = [key for key in TrainSettings.__dataclass_fields__ if key in layershuffle]
    return TrainSettings(**({"variant": trained.variant, "seed": trained.seed} | {key: layershuffle[key] for key in keys} | overrides))


def combined_training(layershuffle: Mapping, combined: CombinedModel, assignments: dict) -> dict:
    """What a merged model's or an ensemble's scores record as its training (painters.layershuffle.merging);
    `assignments` remembers the merges drawn per (base, variant)."""
    from painters.layershuffle import merging

    sources = [vision_training(layershuffle, m).recorded()
               for m in layershuffle_study.merge_sources(layershuffle, combined.base, combined.variant)]
    if combined.merge is None:
        return merging.ensemble_training(sources)
    key = (combined.base, combined.variant)
    if key not in assignments:
        settings = layershuffle["merging"]
        try:
            assignments[key] = merging.merge_assignments(len(settings["seeds"]), sweep.vision_depth(layershuffle, combined.base),
                                                         settings["merges"], settings["seed"])
        except ValueError as error:
            raise ValueError(f"layershuffle.merging.merges: {error}") from None
    return merging.merged_training(sources, assignments[key][combined.merge])


def figures_of(config: Mapping, jobs: Sequence[sweep.Job], model: str, kind: str = "decoder") -> list[str]:
    """The figures a model's configured plans can fill (Fig 3 compares hidden states of texts: not a vision model's)."""
    variant_figures = painters_figures.VARIANT_FIGURES
    variants = {job.plan.split("-")[0] for job in jobs if job.model == model}
    figures = []
    if {"skip_layer", "switch"} & variants:
        figures.append("fig02_skip_switch")
    if config["similarity"]["texts"] and kind != "vision":
        figures.append("fig03_similarity")
    figures += [figure for figure, variant in variant_figures.items() if variant in variants]
    looped_K = {painters_plan.parse(j.plan).K for j in jobs if j.model == model and j.plan.startswith("looped_parallel")}
    if len(looped_K) >= 2:
        figures.append("fig10_heatmap")
    if variants & set(variant_figures.values()):
        figures.append("fig11_all_variants")
    if variants & set(painters_plan.STACK_VARIANTS):
        figures.append("whole_stack")
    return figures


def model_figures(config: Mapping, models: Mapping, kinds: Mapping, jobs: Sequence[sweep.Job],
                  trained: Mapping[str, TrainedModel], umap_models: Sequence[TrainedModel]) -> dict[str, list[str]]:
    """{model: its figures}, with "all" for the figures across models and each LayerShuffle base model's."""
    figures = {model: figures_of(config, jobs, model, kinds[model]) for model in models}
    # skip against the fraction of layers skipped, across models (model sizes of a family)
    skip_models = [m for m in models if "fig04_skip" in figures[m] and kinds[m] == "decoder"]
    if len(skip_models) >= 2:
        figures["all"] = ["skip_fraction"]
    # decoders and encoders side by side (the paper's Llama 2 | BERT panels)
    if {kinds[m] for m in models if "fig11_all_variants" in figures[m]} >= {"decoder", "encoder"}:
        figures.setdefault("all", []).append("decoder_encoder")
    layershuffle = config["layershuffle"]
    for base in dict.fromkeys(m.base for m in trained.values()):  # LayerShuffle: a base model's trained models together
        figures[base] = ["layershuffle_order", "layershuffle_pruning"]
        if layershuffle["merging"]["variants"]:
            figures[base].append("layershuffle_merging")
        if any(painters_plan.parse(key).variant in ("skip_layer", "switch") for key in layershuffle["evaluation"]["plans"]):
            figures[base].append("layershuffle_layers")
        if any(m.base == base for m in umap_models):
            figures[base].append("layershuffle_umap")
    return figures


# ---- what the pending evaluation jobs cost (`painters sweep --cost`, the report's cost table)


def cost_rows(plan: WorkflowPlan) -> list[dict]:
    """Per model and benchmark: the pending evaluation jobs, their plans, estimated GPU-hours on the
    `cost.device` profile (the job's estimate times its GPUs), the longest job and the most memory one holds."""
    rows: dict[tuple[str, str], dict] = {}
    for batch in plan.batches:
        if batch.seconds is None:
            continue
        row = rows.setdefault((batch.model, batch.benchmark), {
            "model": batch.model, "benchmark": batch.benchmark, "jobs": 0, "plans": 0, "gpu_hours": 0.0,
            "longest_hours": 0.0, "peak_gib": 0.0, "runtime_minutes": 0, "over_runtime": 0})
        row["jobs"] += 1
        row["plans"] += len(batch.plans)
        row["gpu_hours"] += batch.seconds / 3600 * max(1, batch.resources.gpu)
        row["longest_hours"] = max(row["longest_hours"], batch.seconds / 3600)
        row["peak_gib"] = max(row["peak_gib"], (batch.peak_bytes or 0) / 2**30)
        row["runtime_minutes"] = max(row["runtime_minutes"], batch.resources.runtime)
        # a job whose estimate does not fit the most runtime its model allows (resources.runtime)
        row["over_runtime"] += batch.seconds / 60 > batch.resources.runtime
    return [rows[key] for key in sorted(rows)]


def cost_table(plan: WorkflowPlan, config: Mapping) -> str:
    """`painters sweep --cost`: the cost rows as text, ending with the total line."""
    device = cost.device_profile(config["cost"]["device"])
    rows = cost_rows(plan)
    lines = [f"{'model':<16} {'benchmark':<18} {'jobs':>5} {'plans':>6} {'GPU-hours':>10} {'longest job':>11} "
             f"{'peak memory':>11} {'runtime':>8}"]
    for row in rows:
        warning = f"  ({row['over_runtime']} over resources.runtime)" if row["over_runtime"] else ""
        lines.append(f"{row['model']:<16} {row['benchmark']:<18} {row['jobs']:>5} {row['plans']:>6} {row['gpu_hours']:>10.2f} "
                     f"{row['longest_hours']:>9.2f} h {row['peak_gib']:>7.1f} GiB {row['runtime_minutes']:>4} min{warning}")
    models = sorted({row["model"] for row in rows})
    for model in models:
        hours = sum(row["gpu_hours"] for row in rows if row["model"] == model)
        lines.append(f"{model}: {hours:.1f} GPU-hours ({sum(row['jobs'] for row in rows if row['model'] == model)} jobs)")
    jobs = sum(row["jobs"] for row in rows)
    lines.append(f"total: {sum(row['gpu_hours'] for row in rows):.1f} GPU-hours on {device.name} ({jobs} jobs)")
    return "\n".join(lines)

