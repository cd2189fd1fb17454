# Fig 3: layer x layer cosine similarity of the baseline's hidden states.


rule similarity:
    input:
        unpack(similarity_inputs),
    output:
        f"{RESULTS}/similarity/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/similarity/{{model}}.log",
    conda:
        "../../envs/painters.yaml"
    resources:
        gpu=lambda w: PLAN.resources[w.model].gpu,
        mem_mb=lambda w, attempt: PLAN.resources[w.model].mem_mb * attempt,
        runtime=lambda w: PLAN.resources[w.model].runtime,
        slurm_partition=lambda w: PLAN.resources[w.model].slurm_partition,
        slurm_account=lambda w: PLAN.resources[w.model].slurm_account,
    params:
        model_path=lambda w, input: input.get("demo_model", MODELS[w.model]["path"]),
        texts=config["similarity"]["texts"],
        dtype=lambda w: MODELS[w.model]["dtype"],
        max_length=config["similarity"]["max_length"],
        device=lambda w: NoRerun(["--device", MODELS[w.model]["device"]] if MODELS[w.model].get("device") else []),
    shell:
        "painters similarity --model {params.model_path:q} --name {wildcards.model:q} --texts {params.texts:q}"
        " --out {output:q} --dtype {params.dtype} --max-length {params.max_length} {params.device} > {log:q} 2>&1"
