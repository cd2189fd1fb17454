# Evaluation jobs of the vision models (image classifiers): one per model and image benchmark
# with all its pending plans (PLAN.vision_batches), the model scored as it is in one shared pass
# over the test images (painters evaluate-images), one parquet per (plan, benchmark) as in the
# evaluation jobs. A model the workflow pretrains (LayerShuffle's base model) is an input.


def evaluate_images_args(model):
    """`painters evaluate-images` settings of a model's jobs; those that change scores (dtype, limit,
    the digits split) are recorded in each score file and checked there (PLAN.stale)."""
    vision = config["vision"]
    batch_size = model["batch_size"] if isinstance(model["batch_size"], int) else 256
    args = ["--batch-size", batch_size, "--dtype", model["dtype"], "--data-seed", vision["data_seed"]]
    if vision["limit"] is not None:
        args += ["--limit", vision["limit"]]
    if vision["data_dir"] is not None:
        args += ["--data-dir", vision["data_dir"]]
    if model.get("trust_remote_code"):
        args += ["--trust-remote-code"]
    return shlex.join(str(a) for a in args)


def evaluate_images_runtime(model):
    """Where a job runs (device, data workers, threads): the same scores either way, so a change re-runs nothing."""
    args = ["--workers", config["vision"]["workers"], "--threads", model["resources"]["cpus_per_task"]]
    if model.get("device"):
        args += ["--device", model["device"]]
    return NoRerun(args)


for batch in PLAN.vision_batches:
    model = MODELS[batch.model]

    rule:
        name:
            batch_rule_name("evaluate_images", batch)
        input:
            **batch.inputs,
        output:
            batch.scores,
        log:
            f"{RESULTS}/logs/evaluate_images/{batch.model}/{batch.benchmark}/{batch.name}.log",
        conda:
            "../../envs/painters.yaml"
        threads: model["resources"]["cpus_per_task"]
        resources:
            **job_resources(batch.resources),
        params:
            model_path=model["path"],
            model_name=batch.model,
            benchmark=batch.benchmark,
            results=lambda w, output: results_folder(output[0]),
            plans=shlex.join(batch.plans),
            args=evaluate_images_args(model),
            runtime=evaluate_images_runtime(model),
        shell:
            "painters evaluate-images --model {params.model_path:q} --name {params.model_name:q} --benchmark {params.benchmark:q}"
            " --plans {params.plans} --out {params.results:q} {params.args} {params.runtime} > {log:q} 2>&1"
