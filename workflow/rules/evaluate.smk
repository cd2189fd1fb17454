# One job per (model, plan, benchmark): the finest cache, so that adding an N, a seed,
# a K or a benchmark schedules exactly the new scores. With evaluation.worker the job
# is a thin client of a resident per-model worker (painters.worker): locally this keeps
# hundreds of small jobs cheap; on Slurm the worker lives inside one allocation only.


def evaluate_run_args(wildcards):
    model = MODELS[wildcards.model]
    args = ["--batch-size", model["batch_size"]]
    for flag, key in (("--device", "device"), ("--device-map", "device_map"), ("--max-length", "max_length")):
        if model.get(key):
            args += [flag, model[key]]
    if config["evaluation"]["worker"]:
        args += ["--worker", "--worker-idle", config["evaluation"]["worker_idle"]]
    return NoRerun(args)


def evaluate_result_args(wildcards):
    """Settings that change the scores: a change re-runs the affected jobs (Snakemake's params trigger)."""
    model, evaluation = MODELS[wildcards.model], config["evaluation"]
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


rule evaluate:
    input:
        unpack(lambda w: demo_inputs(w.model)),
    output:
        f"{RESULTS}/scores/{{model}}/{{plan}}/{{benchmark}}.parquet",
    log:
        f"{RESULTS}/logs/evaluate/{{model}}/{{plan}}/{{benchmark}}.log",
    params:
        model_path=lambda w: MODELS[w.model]["path"],
        results=RESULTS,
        result_args=evaluate_result_args,
        run_args=evaluate_run_args,
    resources:
        gpu=lambda w: MODELS[w.model]["resources"]["gpu"],
        mem_mb=lambda w, attempt: MODELS[w.model]["resources"]["mem_mb"] * attempt,
        runtime=lambda w: MODELS[w.model]["resources"]["runtime"],
        cpus_per_task=lambda w: MODELS[w.model]["resources"]["cpus_per_task"],
        slurm_partition=lambda w: slurm_setting(w.model, "partition", "PAINTERS_SLURM_PARTITION"),
        slurm_account=lambda w: slurm_setting(w.model, "account", "PAINTERS_SLURM_ACCOUNT"),
    conda:
        "../../envs/painters.yaml"
    shell:
        "painters evaluate --model {params.model_path:q} --name {wildcards.model:q} --plans {wildcards.plan:q}"
        " --benchmarks {wildcards.benchmark:q} --out {params.results:q} {params.result_args} {params.run_args}"
        " > {log:q} 2>&1"
