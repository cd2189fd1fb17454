# The study's figures, one job per (model, figure). Figures read only the summary
# table (and the similarity matrix), so re-plotting never touches a score.

FIGURE_VARIANTS = {
    "fig04_skip": "skip",
    "fig05_middle_repeat": "middle_repeat",
    "fig06_reverse": "reverse",
    "fig07_random": "random",
    "fig08_parallel": "parallel",
    "fig09_looped_parallel": "looped_parallel",
}


def figures_of(model):
    """The figures a model's configured plans can fill."""
    variants = {job.plan.split("-")[0] for job in JOBS if job.model == model}
    figures = []
    if {"skip_layer", "switch"} & variants:
        figures.append("fig02_skip_switch")
    if config["similarity"]["texts"]:
        figures.append("fig03_similarity")
    figures += [figure for figure, variant in FIGURE_VARIANTS.items() if variant in variants]
    looped_K = {painters_plan.parse(j.plan).K for j in JOBS if j.model == model and j.plan.startswith("looped_parallel")}
    if len(looped_K) >= 2:
        figures.append("fig10_heatmap")
    if variants & set(FIGURE_VARIANTS.values()):
        figures.append("fig11_all_variants")
    return figures


FIGURES = {model: figures_of(model) for model in MODELS}
# skip against the fraction of layers skipped, across models (model sizes of a family)
SKIP_MODELS = [m for m in MODELS if "fig04_skip" in FIGURES[m]]
if len(SKIP_MODELS) >= 2:
    FIGURES["all"] = ["skip_fraction"]
FIGURE_FILES = [
    f"{RESULTS}/figures/{model}/{figure}.{ext}" for model, figures in FIGURES.items() for figure in figures for ext in ("png", "svg")
]


def figure_inputs(wildcards):
    inputs = {"summary": SUMMARY}
    if wildcards.figure == "fig03_similarity":
        inputs["similarity"] = f"{RESULTS}/similarity/{wildcards.model}.parquet"
    return inputs


def figure_benchmarks(wildcards):
    models = MODELS if wildcards.model == "all" else [wildcards.model]
    return sorted({job.benchmark for job in JOBS if job.model in models})


ALL_FIGURES = ["fig02_skip_switch", "fig03_similarity", *FIGURE_VARIANTS, "fig10_heatmap", "fig11_all_variants", "skip_fraction"]

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
