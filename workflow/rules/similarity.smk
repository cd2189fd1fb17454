# Fig 3: layer x layer cosine similarity of the baseline's hidden states.


rule similarity:
    input:
        unpack(similarity_inputs),
    output:
        f"{RESULTS}/similarity/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/similarity/{{model}}.log",
    params:
        model_path=lambda w, input: input.get("demo_model", MODELS[w.model]["path"]),
        texts=config["similarity"]["texts"],
        dtype=lambda w: MODELS[w.model]["dtype"],
        max_length=config["similarity"]["max_length"],
        device=lambda w: NoRerun(["--device", MODELS[w.model]["device"]] if MODELS[w.model].get("device") else []),
    resources:
        gpu=lambda w: MODELS[w.model]["resources"]["gpu"],
        mem_mb=lambda w, attempt: MODELS[w.model]["resources"]["mem_mb"] * attempt,
        runtime=lambda w: MODELS[w.model]["resources"]["runtime"],
        slurm_partition=lambda w: slurm_setting(w.model, "partition", "PAINTERS_SLURM_PARTITION"),
        slurm_account=lambda w: slurm_setting(w.model, "account", "PAINTERS_SLURM_ACCOUNT"),
    conda:
        "../../envs/painters.yaml"
    shell:
        "painters similarity --model {params.model_path:q} --name {wildcards.model:q} --texts {params.texts:q}"
        " --out {output:q} --dtype {params.dtype} --max-length {params.max_length} {params.device} > {log:q} 2>&1"
