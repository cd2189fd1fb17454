# One job per (model, plan, benchmark): the finest cache, so that adding an N, a seed,
# a K or a benchmark schedules exactly the new scores. With evaluation.worker the job
# is a thin client of a resident per-model worker (painters.worker): locally this keeps
# hundreds of small jobs cheap; on Slurm the worker lives inside one allocation only.


# One rule per model: every setting is a constant of its rule, so planning thousands of
# jobs calls no per-job functions (the paper's dry-run stays fast).
for model_name, model in MODELS.items():

    rule:
        name:
            f"evaluate_{rule_suffix(model_name)}"
        input:
            unpack(evaluate_inputs(model_name)),
        output:
            score_file(model_name, "{plan}", "{benchmark}"),
        log:
            f"{RESULTS}/logs/evaluate/{model_name}/{{plan}}/{{benchmark}}.log",
        params:
            model_path=lambda w, input, path=model["path"]: input.get("demo_model", path),
            model_name=model_name,
            results=lambda w, output: results_folder(output[0]),
            result_args=evaluate_result_args(model),
            run_args=evaluate_run_args(model),
        resources:
            gpu=model["resources"]["gpu"],
            mem_mb=lambda wildcards, attempt, mem_mb=model["resources"]["mem_mb"]: mem_mb * attempt,
            runtime=model["resources"]["runtime"],
            cpus_per_task=model["resources"]["cpus_per_task"],
            slurm_partition=slurm_setting(model_name, "partition", "PAINTERS_SLURM_PARTITION"),
            slurm_account=slurm_setting(model_name, "account", "PAINTERS_SLURM_ACCOUNT"),
        conda:
            "../../envs/painters.yaml"
        shell:
            "painters evaluate --model {params.model_path:q} --name {params.model_name:q} --plans {wildcards.plan:q}"
            " --benchmarks {wildcards.benchmark:q} --out {params.results:q} {params.result_args} {params.run_args}"
            " > {log:q} 2>&1"


# Why a finished score is recomputed (see STALE_SCORES); the note makes its evaluation run again.
rule rerun_note:
    output:
        f"{RESULTS}/reruns/{{model}}/{{plan}}/{{benchmark}}.why",
    log:
        f"{RESULTS}/logs/reruns/{{model}}/{{plan}}/{{benchmark}}.log",
    params:
        reason=lambda w: rerun_reason(score_file(w.model, w.plan, w.benchmark)),
    localrule: True
    conda:
        "../../envs/painters.yaml"
    shell:
        "echo {params.reason:q} > {output:q} 2> {log:q}"
