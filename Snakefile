# Regenerates the whole reproduction of "Towards Precise Scaling Laws for Video Diffusion
# Transformers" (arXiv 2411.17470): data, the training grid, the fitted laws, held-out checks,
# figures, tables, samples and the summary. `snakemake --cores all` runs the embedded default
# (config/config.yaml); see README.md for the paper config on a SLURM cluster.
# Every rule only calls a command-line entry point of the dit or analysis packages.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/noise.smk"


rule all:
    input:
        f"{RESULTS}/runs.csv",
        f"{RESULTS}/laws.json",
        f"{RESULTS}/tables",
        f"{RESULTS}/figures",
        f"{RESULTS}/paper/FINDINGS.md",
        f"{RESULTS}/heldout.json",
        expand(f"{RESULTS}/evaluation/largest/{{file}}", file=EVALUATION_FILES.values()),
        lambda wildcards: list(compute_optimal_evaluations().values()),
        f"{RESULTS}/samples/index.json",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/scorecard.json",
        f"{RESULTS}/batch_axis.json",
    default_target: True
