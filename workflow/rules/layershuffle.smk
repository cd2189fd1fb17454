# The LayerShuffle study: vision transformers trained as each training variant (one job per
# BASE.VARIANT.sSEED, checkpointed and resumable), then scored under the evaluation grid of plans
# (one job per trained model, writing its pending score files, as the evaluation jobs do), and
# merged and ensembled (one job per merged variant); the layer outputs of some embedded by UMAP.


def train_vision_args(base_name, settings, depth):
    """How a model of `base_name` is trained (painters.layershuffle.training.TrainSettings): a change
    re-trains it (Snakemake's params trigger)."""
    base = LAYERSHUFFLE["base_models"][base_name]
    args = ["--data", LAYERSHUFFLE["data"], "--data-seed", LAYERSHUFFLE["data_seed"], "--model", base["model"]]
    if LAYERSHUFFLE["data_dir"] is not None:
        args += ["--data-dir", LAYERSHUFFLE["data_dir"]]
    if base["model"] == "tiny":
        args += ["--layers", depth, "--hidden", base["hidden"]]
    elif base["layers"] is not None:
        args += ["--layers", base["layers"]]  # checked against the model
    args += [
        "--variant",
        settings.variant,
        "--seed",
        settings.seed,
        "--steps",
        settings.steps,
        "--batch-size",
        settings.batch_size,
        "--learning-rate",
        settings.learning_rate,
        "--weight-decay",
        settings.weight_decay,
        "--warmup-steps",
        settings.warmup_steps,
        "--layerdrop",
        settings.layerdrop,
        "--position-loss-weight",
        settings.position_loss_weight,
        "--checkpoint-every",
        settings.checkpoint_every,
        "--precision",
        settings.precision,
        "--threads",
        LAYERSHUFFLE["resources"]["cpus_per_task"],
    ]
    return shlex.join(str(a) for a in args)


def vision_runtime_args():
    """Where a LayerShuffle job runs (data workers, device): the same numbers either way, so a change
    re-runs nothing (NoRerun). A job given no GPU runs on the CPU even where one is visible."""
    args = ["--workers", LAYERSHUFFLE["workers"]]
    return NoRerun(args + (["--device", "cpu"] if LAYERSHUFFLE["resources"]["gpu"] == 0 else []))


# A base model pretrained once (pretrain_steps), sequentially: its trained models fine-tune from it,
# and a vision model of the Painters sweeps may be it (FOLDER/model). A change to its settings
# re-trains it, and so everything trained from it (their scores record its settings).
for base_name, pretraining in PLAN.pretrainings.items():

    rule:
        name:
            f"pretrain_vision_{rule_suffix(base_name)}"
        output:
            directory(pretraining.folder),
        log:
            f"{RESULTS}/logs/layershuffle/pretrain/{base_name}.log",
        conda:
            "../../envs/painters.yaml"
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        resources:
            **job_resources(PLAN.vision_resources),
        params:
            args=train_vision_args(base_name, pretraining.settings, pretraining.depth),
            runtime=vision_runtime_args(),
        shell:
            "painters train-vision {params.args} {params.runtime} --out {output:q} > {log:q} 2>&1"


# A trained model is published whole at the end (painters.demo.files.building); its checkpoint
# sits beside it (.NAME.checkpoint.pt, not an output), so a killed job resumes from it.
for trained_name, training in PLAN.trainings.items():

    rule:
        name:
            f"train_vision_{rule_suffix(trained_name)}"
        input:
            start=training.start or [],
        output:
            directory(training.folder),
        log:
            f"{RESULTS}/logs/layershuffle/train/{trained_name}.log",
        conda:
            "../../envs/painters.yaml"
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        resources:
            **job_resources(PLAN.vision_resources),
        params:
            args=train_vision_args(training.model.base, training.settings, training.depth),
            start=lambda w, input: shlex.join(["--start", input.start]) if input.start else "",
            runtime=vision_runtime_args(),
        shell:
            "painters train-vision {params.args} {params.start} {params.runtime} --out {output:q} > {log:q} 2>&1"

    if training.pending:

        rule:
            name:
                f"evaluate_vision_{rule_suffix(trained_name)}"
            input:
                trained=training.folder,
                rerun_notes=list(training.rerun_notes),
            output:
                training.pending,
            log:
                f"{RESULTS}/logs/layershuffle/evaluate/{trained_name}.log",
            conda:
                "../../envs/painters.yaml"
            threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
            resources:
                **job_resources(PLAN.vision_resources),
            params:
                name=trained_name,
                results=lambda w, output: results_folder(output[0]),
                plans=shlex.join(Path(f).parent.name for f in training.pending),
                threads=LAYERSHUFFLE["resources"]["cpus_per_task"],
                runtime=vision_runtime_args(),
            shell:
                "painters evaluate-vision --trained {input.trained:q} --name {params.name:q} --plans {params.plans}"
                " --out {params.results:q} --threads {params.threads} {params.runtime} > {log:q} 2>&1"


# Merged models and the ensemble of one variant's separately trained models: one job per
# (base model, variant), writing the pending scores of its merges and its ensemble.
for merge in PLAN.merges:
    if not merge.pending:
        continue

    rule:
        name:
            f"merge_vision_{rule_suffix(merge.base)}_{merge.variant}"
        input:
            trained=list(merge.sources),
            rerun_notes=list(merge.rerun_notes),
        output:
            merge.pending,
        log:
            f"{RESULTS}/logs/layershuffle/merge/{merge.base}.{merge.variant}.log",
        conda:
            "../../envs/painters.yaml"
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        resources:
            **job_resources(PLAN.vision_resources),
        params:
            name=f"{merge.base}.{merge.variant}",
            merges=LAYERSHUFFLE["merging"]["merges"],
            merge_seed=LAYERSHUFFLE["merging"]["seed"],
            results=lambda w, output: results_folder(output[0]),
            plans=shlex.join(merge.plans),
            threads=LAYERSHUFFLE["resources"]["cpus_per_task"],
            runtime=vision_runtime_args(),
        shell:
            "painters merge-vision --trained {input.trained:q} --name {params.name:q} --merges {params.merges}"
            " --merge-seed {params.merge_seed} --plans {params.plans} --out {params.results:q}"
            " --threads {params.threads} {params.runtime} > {log:q} 2>&1"


# UMAP of a trained model's layer outputs in random orders (figure layershuffle_umap): one job per
# model of umap.seeds. Its settings are params: a change re-runs it.
if PLAN.umap_models:

    rule:
        name:
            "umap_vision"
        input:
            f"{RESULTS}/layershuffle/models/{{name}}",
        output:
            f"{RESULTS}/layershuffle/umap/{{name}}.parquet",
        log:
            f"{RESULTS}/logs/layershuffle/umap/{{name}}.log",
        wildcard_constraints:
            name="|".join(re.escape(m.name) for m in PLAN.umap_models),
        conda:
            "../../envs/painters.yaml"
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        resources:
            **job_resources(PLAN.vision_resources),
        params:
            plans=shlex.join(layershuffle_study.umap_plans(LAYERSHUFFLE)),
            images=LAYERSHUFFLE["umap"]["images"],
            n_neighbors=LAYERSHUFFLE["umap"]["n_neighbors"],
            n_epochs=LAYERSHUFFLE["umap"]["n_epochs"],
            threads=LAYERSHUFFLE["resources"]["cpus_per_task"],
            device=NoRerun(["--device", "cpu"] if LAYERSHUFFLE["resources"]["gpu"] == 0 else []),
        shell:
            "painters umap-vision --trained {input:q} --name {wildcards.name:q} --plans {params.plans}"
            " --images {params.images} --n-neighbors {params.n_neighbors} --n-epochs {params.n_epochs}"
            " --out {output:q} --threads {params.threads} {params.device} > {log:q} 2>&1"
