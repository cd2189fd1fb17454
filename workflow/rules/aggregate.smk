# One tidy table of every score: raw values, normalized scores, the normalized median.


rule aggregate:
    input:
        PLAN.score_files,
    output:
        parquet=SUMMARY,
        csv=f"{RESULTS}/summary.csv",
    log:
        f"{RESULTS}/logs/aggregate.log",
    localrule: True
    conda:
        "../../envs/painters.yaml"
    params:
        scores=lambda w, output: os.path.join(os.path.dirname(output.parquet), "scores"),
    shell:
        "painters aggregate --scores {params.scores:q} --out {output.parquet:q} --csv {output.csv:q} > {log:q} 2>&1"


# The cost model's estimate of every lm-eval score beside what the finished ones took (README "Job granularity").
rule cost_table:
    input:
        summary=SUMMARY,
    output:
        report(
            f"{RESULTS}/cost.csv",
            caption="../report/cost.rst",
            category="Cost",
            labels={"table": "estimated and measured GPU-hours"},
        ),
    log:
        f"{RESULTS}/logs/cost_table.log",
    localrule: True
    conda:
        "../../envs/painters.yaml"
    params:
        # the estimates follow job sizing, which re-runs no score: left out of the params trigger (the
        # table is made again whenever the summary changes)
        estimates=NoRerun(
            [
                "--estimates",
                json.dumps(PLAN.cost_estimates),
                "--device",
                painters_cost.device_profile(config["cost"]["device"]).name,
            ]
        ),
    shell:
        "painters cost-table --summary {input.summary:q} {params.estimates}" " --out {output:q} > {log:q} 2>&1"
