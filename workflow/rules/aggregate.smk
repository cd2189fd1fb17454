# One tidy table of every score: raw values, normalized scores, the normalized median.


rule aggregate:
    input:
        PLAN.score_files,
    output:
        parquet=SUMMARY,
        csv=f"{RESULTS}/summary.csv",
    log:
        f"{RESULTS}/logs/aggregate.log",
    params:
        scores=lambda w, output: os.path.join(os.path.dirname(output.parquet), "scores"),
    localrule: True
    conda:
        "../../envs/painters.yaml"
    shell:
        "painters aggregate --scores {params.scores:q} --out {output.parquet:q} --csv {output.csv:q} > {log:q} 2>&1"
