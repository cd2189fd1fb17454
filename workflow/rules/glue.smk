# Fine-tuning jobs of the encoder models: one per batch of pending GLUE scores of one model,
# task and seed (PLAN.glue_batches). A job loads the model once and fine-tunes a fresh
# copy of it under each of its plans (painters.glue.finetune), writing one parquet per
# (plan, task, seed) as each is done; like the evaluation jobs, a finished score is no rule's
# output and a failed job keeps the scores it finished.
for batch in PLAN.glue_batches:
    model = MODELS[batch.model]

    rule:
        name:
            batch_rule_name("finetune", batch)
        input:
            **batch.inputs,
        output:
            batch.scores,
        log:
            f"{RESULTS}/logs/finetune/{batch.model}/{batch.benchmark}.seed{batch.train_seed}/{batch.name}.log",
        conda:
            "../../envs/painters.yaml"
        threads: model["resources"]["cpus_per_task"]
        resources:
            **job_resources(batch.resources),
        params:
            model_path=model["path"],
            model_name=batch.model,
            task=batch.benchmark,
            seed=batch.train_seed,
            results=lambda w, output: results_folder(output[0]),
            plans=shlex.join(batch.plans),
            args=finetune_args(model),
        shell:
            "painters finetune --model {params.model_path:q} --name {params.model_name:q} --task {params.task:q}"
            " --seed {params.seed} --plans {params.plans} --out {params.results:q} {params.args} > {log:q} 2>&1"


# The demo's two GLUE-style tasks for its encoder.
rule demo_glue:
    output:
        directory(DEMO_GLUE),
    log:
        f"{RESULTS}/logs/demo_glue.log",
    conda:
        "../../envs/painters.yaml"
    params:
        seed=DEMO["seed"],
    shell:
        "painters demo-glue --out {output:q} --seed {params.seed} > {log:q} 2>&1"
