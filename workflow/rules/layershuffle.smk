# The LayerShuffle study: vision transformers trained as each training variant (one job per
# BASE.VARIANT.sSEED, checkpointed and resumable), then scored under the evaluation grid of plans
# (one job per trained model, writing its pending score files, as the evaluation jobs do).


def train_vision_args(trained):
    settings = vision_training(trained)
    base = LAYERSHUFFLE["base_models"][trained.base]
    args = ["--data", LAYERSHUFFLE["data"], "--data-seed", LAYERSHUFFLE["data_seed"], "--model", base["model"],
            "--layers", base["layers"], "--hidden", base["hidden"], "--variant", settings.variant, "--seed", settings.seed,
            "--steps", settings.steps, "--batch-size", settings.batch_size, "--learning-rate", settings.learning_rate,
            "--weight-decay", settings.weight_decay, "--warmup-steps", settings.warmup_steps,
            "--layerdrop", settings.layerdrop, "--position-loss-weight", settings.position_loss_weight,
            "--checkpoint-every", settings.checkpoint_every,
            "--threads", LAYERSHUFFLE["resources"]["cpus_per_task"]]
    return shlex.join(str(a) for a in args)


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
        resources:
            **job_resources(LAYERSHUFFLE["resources"]),
        threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
        conda:
            "../../envs/painters.yaml"
        shell:
            "painters train-vision {params.args} --out {output:q} > {log:q} 2>&1"

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
            resources:
                **job_resources(LAYERSHUFFLE["resources"]),
            threads: LAYERSHUFFLE["resources"]["cpus_per_task"]
            conda:
                "../../envs/painters.yaml"
            shell:
                "painters evaluate-vision --trained {input.trained:q} --name {params.name:q} --plans {params.plans}"
                " --out {params.results:q} --threads {params.threads} > {log:q} 2>&1"
