# Training stage: one job per group of runs that differ only in learning rate and seed (an ensemble,
# dit.engine; training.ensemble: off gives every run a job of its own): the grid cells with the
# conventional-cell and noise-floor seeds, and, after the fit, the held-out runs the fitted laws
# propose (fit.smk's checkpoint). Each job folder keeps checkpoints/latest.pt, so a killed or
# preempted job resumes when rerun; each run still gets its own folder under runs/. A job's output
# is its job.json, written when all its runs have finished. Jobs start in the order of their estimated cost
# (pipeline.runs.job_cost, as the priority), the longest first, so that a stage ends with its short jobs.

TRAIN_RESOURCES = dict(
    mem_mb=3000,
    runtime=120,
    processes=TRAINING["processes"],
    nodes=TRAINING["nodes"],
)


rule train_grid:
    input:
        training_inputs,
    output:
        f"{WORK}/jobs/{{grid_job}}/job.json",
    log:
        f"{LOGS}/train/{{grid_job}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{grid_job}}.tsv"
    params:
        ensemble=lambda wildcards: launch_ensemble(find_job(GRID_JOBS, wildcards.grid_job)),
        job_dir=lambda wildcards: job_dir(wildcards.grid_job),
    priority: lambda wildcards: job_priority(find_job(GRID_JOBS, wildcards.grid_job))
    threads: TRAINING["threads"] or 1
    resources:
        **TRAIN_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.launch --ensemble-json {params.ensemble:q} --out {params.job_dir}"
        " --processes {resources.processes} --nodes {resources.nodes} > {log} 2>&1"


rule train_heldout:
    input:
        data=heldout_training_inputs,
    output:
        f"{WORK}/jobs/{{heldout_job}}/job.json",
    log:
        f"{LOGS}/train/{{heldout_job}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{heldout_job}}.tsv"
    params:
        ensemble=lambda wildcards: launch_ensemble(find_job(heldout_jobs(), wildcards.heldout_job)),
        job_dir=lambda wildcards: job_dir(wildcards.heldout_job),
    priority: lambda wildcards: job_priority(find_job(heldout_jobs(), wildcards.heldout_job))
    threads: TRAINING["threads"] or 1
    resources:
        **TRAIN_RESOURCES,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.launch --ensemble-json {params.ensemble:q} --out {params.job_dir}"
        " --processes {resources.processes} --nodes {resources.nodes} > {log} 2>&1"


rule grid_performance:
    input:
        jobs=job_records(GRID_JOBS),  # each records the matmul rate measured at its end (dit.matmul_rate)
    output:
        f"{RESULTS}/performance.json",
    log:
        f"{LOGS}/grid_performance.log",
    params:
        # written by Snakemake when each job finished (benchmark files are not rule outputs)
        benchmarks=[f"{BENCHMARKS}/train/{job.job_id}.tsv" for job in GRID_JOBS],
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.performance grid --jobs {input.jobs} --benchmarks {params.benchmarks}"
        " --out {output} > {log} 2>&1"
