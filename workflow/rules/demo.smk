# The embedded demo: data and tasks generated from a seed, and a tiny Llama trained on them.


rule demo_data:
    output:
        directory(DEMO_DATA),
    log:
        f"{RESULTS}/logs/demo_data.log",
    conda:
        "../../envs/painters.yaml"
    params:
        seed=DEMO["seed"],
        n_test=DEMO["n_test"],
        n_train=DEMO["n_train"],
    shell:
        "painters demo-data --out {output:q} --seed {params.seed} --n-test {params.n_test} --n-train {params.n_train} > {log:q} 2>&1"


# One model per training variant of demo.variants: RESULTS/demo/model (sequential), RESULTS/demo/model-VARIANT.
rule demo_model:
    input:
        DEMO_DATA,
    output:
        directory(f"{RESULTS}/demo/{{folder}}"),
    log:
        f"{RESULTS}/logs/demo_{{folder}}.log",
    wildcard_constraints:
        folder="|".join(re.escape(Path(path).name) for path in DEMO_MODELS),
    conda:
        "../../envs/painters.yaml"
    threads: workflow.cores
    params:
        seed=DEMO["seed"],
        steps=f"--steps {DEMO['steps']}" if DEMO.get("steps") else "",
        layers=DEMO["layers"],
        # the folder names the variant, so no params trigger is needed: an object stays out of
        # its record, which then stays as it was before variants (no retraining of a sequential model)
        variant=lambda w: NoRerun(["--variant", DEMO_MODELS[f"{RESULTS}/demo/{w.folder}"]]),
    message:
        "Training the demo model {output}: about 2 minutes on 2 cores, silent here; progress in {log}"
    shell:
        "painters demo-model --data {input:q} --out {output:q} --seed {params.seed} --layers {params.layers}"
        " {params.variant} {params.steps} > {log:q} 2>&1"
