# Training stage: one constant-LR run per grid cell (plus conventional-cell and noise-floor seeds),
# and, after the fit, the held-out runs the fitted laws propose (fit.smk's checkpoint).
# Each run folder keeps checkpoints/latest.pt: a killed or preempted run resumes when rerun.
# Outputs are the run's summary.json and metrics.csv, written atomically at the end.

TRAIN_RESOURCES = dict(
    mem_mb=3000,
    runtime=120,
    processes=TRAINING["processes"],
    nodes=TRAINING.get("nodes", 1),
)


rule train_grid:
    input:
        training_inputs,
    output:
        summary=f"{WORK}/runs/{{grid_run}}/summary.json",
        metrics=f"{WORK}/runs/{{grid_run}}/metrics.csv",
    log:
        f"{LOGS}/train/{{grid_run}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{grid_run}}.tsv"
    params:
        config=lambda wildcards: launch_config(find_run(GRID_RUNS, wildcards.grid_run)),
        run_dir=lambda wildcards: run_dir(wildcards.grid_run),
    threads: TRAINING["threads"] or 1
    resources:
        **TRAIN_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.launch --config-json {params.config:q} --out {params.run_dir}"
        " --processes {resources.processes} --nodes {resources.nodes} > {log} 2>&1"


rule train_heldout:
    input:
        data=training_inputs,
        proposal=f"{WORK}/analysis/proposal.json",
    output:
        summary=f"{WORK}/runs/{{heldout_run}}/summary.json",
        metrics=f"{WORK}/runs/{{heldout_run}}/metrics.csv",
    log:
        f"{LOGS}/train/{{heldout_run}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{heldout_run}}.tsv"
    params:
        config=lambda wildcards: launch_config(heldout_run(wildcards)),
        run_dir=lambda wildcards: run_dir(wildcards.heldout_run),
    threads: TRAINING["threads"] or 1
    resources:
        **TRAIN_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.launch --config-json {params.config:q} --out {params.run_dir}"
        " --processes {resources.processes} --nodes {resources.nodes} > {log} 2>&1"
