# The LayerShuffle study: vision transformers trained as each training variant (one job per
# BASE.VARIANT.sSEED, checkpointed and resumable), then scored under the evaluation grid of plans
# (one job per trained model, writing its pending score files, as the evaluation jobs do), and
# merged and ensembled (one job per merged variant); the layer outputs of some embedded by UMAP.


def train_vision_args(trained):
    """How a model is trained: a change re-trains it (Snakemake's params trigger)."""
    settings = vision_training(trained)
    base = LAYERSHUFFLE["base_models"][trained.base]
    args = ["--data", LAYERSHUFFLE["data"], "--data-seed", LAYERSHUFFLE["data_seed"], "--model", base["model"]]
    if LAYERSHUFFLE["data_dir"] is not None:
        args += ["--data-dir", LAYERSHUFFLE["data_dir"]]
    if base["model"] == "tiny":
        args += ["--layers", vision_depth(trained.base), "--hidden", base["hidden"]]
    elif base["layers"] is not None:
        args += ["--layers", base["layers"]]  # checked against the model
    args += ["--variant", settings.variant, "--seed", settings.seed,
             "--steps", settings.steps, "--batch-size", settings.batch_size, "--learning-rate", settings.learning_rate,
             "--weight-decay", settings.weight_decay, "--warmup-steps", settings.warmup_steps,
             "--layerdrop", settings.layerdrop, "--position-loss-weight", settings.position_loss_weight,
             "--checkpoint-every", settings.checkpoint_every, "--precision", settings.precision,
             "--threads", LAYERSHUFFLE["resources"]["cpus_per_task"]]
    return shlex.join(str(a) for a in args)


def vision_runtime_args():
    """Where a LayerShuffle job runs (data workers, device): the same numbers either way, so a change
    re-runs nothing (NoRerun). A job given no GPU runs on the CPU even where one is visible."""
    args = ["--workers", LAYERSHUFFLE["workers"]]
    return NoRerun(args + (["--device", "cpu"] if LAYERSHUFFLE["resources"]["gpu"] == 0 else []))


# A trained model is published whole at the end (painters.demo.files.building); its checkpoint
# sits beside it (.NAME.checkpoint.pt, not an output), so a killed job resumes from it.
for trained_name, trained_model in TRAINED.items():

    rule:
        name:
            f"train_vision_{rule_suffix(trained_name)}"
        output:
            directory(f"{RESULTS}/layershuffle/models/{trained_name}"),
        log:
            f"{RESULTS}/logs/layershuffle/train/{trained_name}.log",
        params:
            args=train_vision_args(trained_model),
            runtime=vision_runtime_args(),
        resources:
            **job_resources(LAYERSHUFFLE["resources"]),
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        conda:
            "../../envs/painters.yaml"
        shell:
            "painters train-vision {params.args} {params.runtime} --out {output:q} > {log:q} 2>&1"

    if VISION_PENDING[trained_name]:

        rule:
            name:
                f"evaluate_vision_{rule_suffix(trained_name)}"
            input:
                trained=f"{RESULTS}/layershuffle/models/{trained_name}",
                rerun_notes=[rerun_note(f) for f in VISION_PENDING[trained_name] if f in STALE_SCORES],
            output:
                VISION_PENDING[trained_name],
            log:
                f"{RESULTS}/logs/layershuffle/evaluate/{trained_name}.log",
            params:
                name=trained_name,
                results=lambda w, output: results_folder(output[0]),
                plans=shlex.join(Path(f).parent.name for f in VISION_PENDING[trained_name]),
                threads=LAYERSHUFFLE["resources"]["cpus_per_task"],
                runtime=vision_runtime_args(),
            resources:
                **job_resources(LAYERSHUFFLE["resources"]),
            threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
            conda:
                "../../envs/painters.yaml"
            shell:
                "painters evaluate-vision --trained {input.trained:q} --name {params.name:q} --plans {params.plans}"
                " --out {params.results:q} --threads {params.threads} {params.runtime} > {log:q} 2>&1"


# Merged models and the ensemble of one variant's separately trained models: one job per
# (base model, variant), writing the pending scores of its merges and its ensemble.
for (base_name, merged_variant), merge_pending in MERGE_PENDING.items():
    if not merge_pending:
        continue

    rule:
        name:
            f"merge_vision_{rule_suffix(base_name)}_{merged_variant}"
        input:
            trained=[f"{RESULTS}/layershuffle/models/{m.name}"
                     for m in layershuffle_study.merge_sources(LAYERSHUFFLE, base_name, merged_variant)],
            rerun_notes=[rerun_note(f) for f in merge_pending if f in STALE_SCORES],
        output:
            merge_pending,
        log:
            f"{RESULTS}/logs/layershuffle/merge/{base_name}.{merged_variant}.log",
        params:
            name=f"{base_name}.{merged_variant}",
            merges=LAYERSHUFFLE["merging"]["merges"],
            merge_seed=LAYERSHUFFLE["merging"]["seed"],
            results=lambda w, output: results_folder(output[0]),
            plans=shlex.join(layershuffle_study.merge_plans(LAYERSHUFFLE)),
            threads=LAYERSHUFFLE["resources"]["cpus_per_task"],
            runtime=vision_runtime_args(),
        resources:
            **job_resources(LAYERSHUFFLE["resources"]),
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        conda:
            "../../envs/painters.yaml"
        shell:
            "painters merge-vision --trained {input.trained:q} --name {params.name:q} --merges {params.merges}"
            " --merge-seed {params.merge_seed} --plans {params.plans} --out {params.results:q}"
            " --threads {params.threads} {params.runtime} > {log:q} 2>&1"


# UMAP of a trained model's layer outputs in random orders (figure layershuffle_umap): one job per
# model of umap.seeds. Its settings are params: a change re-runs it.
if UMAP_MODELS:

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
            name="|".join(re.escape(m.name) for m in UMAP_MODELS),
        params:
            plans=shlex.join(layershuffle_study.umap_plans(LAYERSHUFFLE)),
            images=LAYERSHUFFLE["umap"]["images"],
            n_neighbors=LAYERSHUFFLE["umap"]["n_neighbors"],
            n_epochs=LAYERSHUFFLE["umap"]["n_epochs"],
            threads=LAYERSHUFFLE["resources"]["cpus_per_task"],
            device=NoRerun(["--device", "cpu"] if LAYERSHUFFLE["resources"]["gpu"] == 0 else []),
        resources:
            **job_resources(LAYERSHUFFLE["resources"]),
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        conda:
            "../../envs/painters.yaml"
        shell:
            "painters umap-vision --trained {input:q} --name {wildcards.name:q} --plans {params.plans}"
            " --images {params.images} --n-neighbors {params.n_neighbors} --n-epochs {params.n_epochs}"
            " --out {output:q} --threads {params.threads} {params.device} > {log:q} 2>&1"
