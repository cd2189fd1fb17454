# The study's figures, one job per (model, figure). Figures read only the summary
# table (and the similarity matrix), so re-plotting never touches a score.

# Figs 9 and 11 draw looped parallel at one K, the same in both (Fig 10 shows every K).
LINE_K_FIGURES = ("fig09_looped_parallel", "fig11_all_variants")


def line_K(model):
    """That K: the first K of the first sweep that runs looped parallel on `model` (None if none does)."""
    for grid in config["sweeps"]:
        if "looped_parallel" in grid["variants"] and model in grid.get("models", list(config["models"])):
            return grid.get("K", [3])[0]
    return None


def line_K_arg(wildcards):
    K = line_K(wildcards.model) if wildcards.figure in LINE_K_FIGURES else None
    return f"--k {K}" if K is not None else ""


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
            # the table the figure plots: tests read it, and the caption's facts come from it
            table=f"{RESULTS}/figures/{{model}}/{{figure}}.csv",
        log:
            f"{RESULTS}/logs/figures/{{model}}/{{figure}}.log",
        wildcard_constraints:
            figure=figure_name,
            model=r"[A-Za-z0-9][A-Za-z0-9._-]*",
        localrule: True
        conda:
            "../../envs/painters.yaml"
        params:
            similarity=lambda w, input: (
                f"--similarity {shlex.quote(input.similarity)}" if "similarity" in input.keys() else ""
            ),
            umap=lambda w, input: f"--umap {shlex.join(input.umap)}" if "umap" in input.keys() else "",
            line_K=line_K_arg,
            # plot-only settings: changing them re-runs the figures and nothing else
            style=shlex.join(f"--{key.replace('_', '-')}={value}" for key, value in config["figures"].items()),
            # shown in the caption: the benchmarks, seeds and K the figure plotted, read from its
            # table when the report is made (an object, so the rerun trigger leaves it out)
            plotted=lambda w, output: painters_figures.PlottedFacts(output.table),
            # lm-eval's limit; an encoder's GLUE scores have none (glue.max_eval_samples is a training
            # setting); a vision model's is vision.limit
            limit=lambda w: {"encoder": None, "vision": config["vision"]["limit"]}.get(
                KINDS.get(w.model), config.get("limit")
            ),
            # generation's cache mode (README, "Reproducible scores"); encoders and vision models generate nothing
            kv_cache=lambda w: (
                None if KINDS.get(w.model) in ("encoder", "vision") else config["evaluation"]["kv_cache"]
            ),
        shell:
            "painters figures --summary {input.summary:q} {params.similarity} {params.umap} --model {wildcards.model:q}"
            " --figure {wildcards.figure} {params.line_K} --out {output.png:q} {params.style} > {log:q} 2>&1"
