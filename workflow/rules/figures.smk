# The study's figures, one job per (model, figure). Figures read only the summary
# table (and the similarity matrix), so re-plotting never touches a score.

# One rule per figure, so that each gets its own caption (a caption path cannot hold a wildcard).
for figure_name in ALL_FIGURES:

    rule:
        name:
            f"figure_{figure_name}"
        input:
            unpack(figure_inputs),
        output:
            png=report(
                f"{RESULTS}/figures/{{model}}/{{figure}}.png",
                caption=f"../report/{figure_name}.rst",
                category="{model}",
                subcategory="{figure}",
                labels={"model": "{model}", "figure": "{figure}"},
            ),
            svg=f"{RESULTS}/figures/{{model}}/{{figure}}.svg",
        log:
            f"{RESULTS}/logs/figures/{{model}}/{{figure}}.log",
        wildcard_constraints:
            figure=figure_name,
            model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
        params:
            similarity=lambda w, input: f"--similarity {shlex.quote(input.similarity)}" if "similarity" in input.keys() else "",
            # plot-only settings: changing them re-runs the figures and nothing else
            style=shlex.join(f"--{key.replace('_', '-')}={value}" for key, value in config["figures"].items()),
            # shown in the caption
            benchmarks=figure_benchmarks,
            limit=config.get("limit"),
            seeds=sorted({s for grid in config["sweeps"] for s in grid.get("seeds", [])}),
        localrule: True
        conda:
            "../../envs/painters.yaml"
        shell:
            "painters figures --summary {input.summary:q} {params.similarity} --model {wildcards.model:q}"
            " --figure {wildcards.figure} --out {output.png:q} {params.style} > {log:q} 2>&1"
