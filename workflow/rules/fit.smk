# Fit stage: the tidy runs table, the laws fitted on the fitting sizes, the held-out proposal
# (a checkpoint: which runs to train depends on the fitted laws), and the final laws with the
# held-out runs in the table.

HELDOUT = config["heldout"]


rule fit_config:
    output:
        f"{WORK}/analysis/fit.yaml",
    log:
        f"{LOGS}/fit_config.log",
    params:
        fit=json.dumps(fit_config(config), sort_keys=True),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.config fit-config --fit-json {params.fit:q} --out {output} > {log} 2>&1"


rule collect_grid_runs:
    input:
        job_records(GRID_JOBS),
    output:
        table=f"{WORK}/analysis/grid_runs.csv",
        provenance=f"{WORK}/analysis/grid_runs.provenance.json",
    log:
        f"{LOGS}/collect_grid_runs.log",
    params:
        run_dirs=[run_dir(run.run_id) for run in GRID_RUNS],
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.collect --out {output.table} {params.run_dirs} > {log} 2>&1"


rule fit_grid:
    input:
        runs=f"{WORK}/analysis/grid_runs.csv",
        config=f"{WORK}/analysis/fit.yaml",
    output:
        f"{WORK}/analysis/laws_grid.json",
    log:
        f"{LOGS}/fit_grid.log",
    benchmark:
        f"{BENCHMARKS}/fit_grid.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.fit --runs {input.runs} --config {input.config} --out {output} > {log} 2>&1"


checkpoint propose_heldout:
    input:
        laws=f"{WORK}/analysis/laws_grid.json",
    output:
        proposal=f"{WORK}/analysis/proposal.json",
    log:
        f"{LOGS}/propose_heldout.log",
    params:
        sizes=" ".join(f"--size {size}" for size in HELDOUT["sizes"]),
        tokens=HELDOUT["tokens"],
        batch_clips=config["grid"]["batch_clips"],
        learning_rates=config["grid"]["learning_rates"],
        neighbours=HELDOUT["neighbours"],
        seeds=" ".join(str(seed) for seed in heldout_seeds(config)),
        compute=(
            f"--compute-size {HELDOUT['compute_optimal_size']}"
            if HELDOUT["compute_optimal_size"]
            else "--no-compute-optimal"
        )
        + (f" --max-compute-tokens {HELDOUT['max_compute_tokens']}" if HELDOUT.get("max_compute_tokens") else ""),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.propose --laws {input.laws} {params.sizes} --tokens {params.tokens}"
        " --batch-clips {params.batch_clips}"
        " --learning-rates {params.learning_rates} --neighbours {params.neighbours} --seed {params.seeds}"
        " {params.compute} --out {output.proposal} > {log} 2>&1"


rule collect_runs:
    input:
        grid=job_records(GRID_JOBS),
        heldout=lambda wildcards: job_records(heldout_jobs()),
    output:
        table=f"{RESULTS}/runs.csv",
        provenance=f"{RESULTS}/runs.provenance.json",
    log:
        f"{LOGS}/collect_runs.log",
    params:
        run_dirs=lambda wildcards: [run_dir(r.run_id) for r in GRID_RUNS] + [run_dir(r) for r in heldout_run_ids()],
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m pipeline.collect --out {output.table} {params.run_dirs} > {log} 2>&1"


rule fit_laws:
    input:
        runs=f"{RESULTS}/runs.csv",
        config=f"{WORK}/analysis/fit.yaml",
    output:
        f"{RESULTS}/laws.json",
    log:
        f"{LOGS}/fit_laws.log",
    benchmark:
        f"{BENCHMARKS}/fit_laws.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.fit --runs {input.runs} --config {input.config} --out {output} > {log} 2>&1"


# Batch-axis reading (`snakemake --cores all batch_axis`, also part of `all`): at each size and budget of the grid,
# every batch size's best cell against the smallest batch's (python -m analysis.batch_axis). With
# config/batch-axis.yaml laid over the default, the grid it reads is tiny-9k trained 4x further.
rule batch_axis:
    input:
        runs=rules.collect_grid_runs.output.table,
        config=f"{WORK}/analysis/fit.yaml",
    output:
        f"{RESULTS}/batch_axis.json",
    log:
        f"{LOGS}/batch_axis.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.batch_axis --runs {input.runs} --config {input.config} --out {output} > {log} 2>&1"
