# The embedded demo: data and tasks generated from a seed, and a tiny Llama trained on them.


rule demo_data:
    output:
        directory(DEMO_DATA),
    log:
        f"{RESULTS}/logs/demo_data.log",
    params:
        seed=DEMO["seed"],
        n_test=DEMO["n_test"],
        n_train=DEMO["n_train"],
    conda:
        "../../envs/painters.yaml"
    shell:
        "painters demo-data --out {output:q} --seed {params.seed} --n-test {params.n_test} --n-train {params.n_train} > {log:q} 2>&1"


rule demo_model:
    message:
        "Training the demo model: about 2 minutes on 2 cores, silent here; progress in {log}"
    input:
        DEMO_DATA,
    output:
        directory(DEMO_MODEL),
    log:
        f"{RESULTS}/logs/demo_model.log",
    params:
        seed=DEMO["seed"],
        steps=f"--steps {DEMO['steps']}" if DEMO.get("steps") else "",
        layers=DEMO["layers"],
    threads: workflow.cores
    conda:
        "../../envs/painters.yaml"
    shell:
        "painters demo-model --data {input:q} --out {output:q} --seed {params.seed} --layers {params.layers}"
        " {params.steps} > {log:q} 2>&1"
