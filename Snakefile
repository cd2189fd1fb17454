# painters: layer-execution studies of pretrained transformers, scored with lm-eval.
#   snakemake --cores all                                       the embedded demo (config/config.yaml)
#   snakemake --profile slurm --configfile config/paper.yaml    the study on a GPU cluster
# Stages live in workflow/rules/*.smk; the work is done by the `painters` CLI.

# The default config is the embedded demo; a --configfile given on the command line
# replaces it (several are merged in order), and --config KEY=VALUE amends either.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/glue.smk"
include: "workflow/rules/layershuffle.smk"
include: "workflow/rules/vision.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        PLAN.summary,
        PLAN.figure_files,
        COST_TABLE,
