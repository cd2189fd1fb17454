# Evaluation jobs: one per batch of pending scores of one model on one benchmark
# (PLAN.batches, painters.workflow_plan; README "Job granularity"). A job loads the model once, builds the
# benchmark once and scores its plans in one shared pass (painters.engine), writing one
# parquet per (plan, benchmark) as each is done. A finished score is no rule's output, so
# a later run never redoes or deletes it; a failed job keeps the scores it finished
# (keep-incomplete in the profiles: every score file is written atomically).
#
# One rule per batch: every setting is a constant of its rule, so planning calls no
# per-job functions (the paper's dry-run stays fast).
for batch in PLAN.batches:
    model = MODELS[batch.model]

    rule:
        name:
            batch_rule_name("evaluate", batch)
        input:
            **batch.inputs,
        output:
            batch.scores,
        log:
            f"{RESULTS}/logs/evaluate/{batch.model}/{batch.benchmark}/{batch.name}.log",
        conda:
            "../../envs/painters.yaml"
        threads: model["resources"]["cpus_per_task"]
        resources:
            **job_resources(batch.resources),
        params:
            # the demo model is an input (made by the demo rules); a function, so lint sees no hard-coded path
            model_path=lambda w, input, path=model["path"]: input.get("demo_model", path),
            model_name=batch.model,
            benchmark=batch.benchmark,
            results=lambda w, output: results_folder(output[0]),
            plans=shlex.join(batch.plans),
            args=evaluate_args(model),
        shell:
            "painters evaluate --model {params.model_path:q} --name {params.model_name:q} --plans {params.plans}"
            " --benchmarks {params.benchmark:q} --out {params.results:q} {params.args} > {log:q} 2>&1"


# Why a finished score is recomputed (see PLAN.stale); the note makes its evaluation job run.
# Named by the stale score's timestamp: a later staleness of the same score gets a new note.
rule rerun_note:
    output:
        f"{RESULTS}/reruns/{{model}}/{{plan}}/{{benchmark}}.{{scored}}.why",
    log:
        f"{RESULTS}/logs/reruns/{{model}}/{{plan}}/{{benchmark}}.{{scored}}.log",
    localrule: True
    conda:
        "../../envs/painters.yaml"
    params:
        reason=lambda w: rerun_reason(score_file(w.model, w.plan, w.benchmark)),
    shell:
        "echo {params.reason:q} > {output:q} 2> {log:q}"


# Runs once per set of benchmarks, include paths and data folder, before the first evaluation job.
rule check_benchmarks:
    input:
        # the demo's task YAMLs are made by the demo rules
        demo=DEMO_DATA if DEMO["enabled"] else [],
    output:
        PLAN.benchmark_check,
    log:
        f"{RESULTS}/logs/check_benchmarks.log",
    localrule: True
    conda:
        "../../envs/painters.yaml"
    params:
        args=shlex.join(
            ["--benchmarks", *config["benchmarks"]]
            + [a for path in config["include_paths"] for a in ("--include-path", path)]
            + (["--data-dir", config["data_dir"]] if config.get("data_dir") else [])
        ),
    shell:
        "painters check-benchmarks {params.args} --out {output:q} > {log:q} 2>&1"
