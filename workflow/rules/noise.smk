# Noise-sources stage (not part of `all`): `snakemake --cores all noise_sources` trains, at each noise
# cell, k initialisation seeds x k data seeds of that cell as one ensemble (python -m dit.noise_sources,
# `noise.sources`) and writes how much of the run-to-run noise each source carries, and how many seeds
# per cell a target noise needs.


rule noise_sources:
    input:
        expand(f"{RESULTS}/noise_sources/{{cell}}.json", cell=sorted(NOISE_CELLS)),


rule noise_sources_cell:
    input:
        training_inputs,
    output:
        f"{RESULTS}/noise_sources/{{cell}}.json",
    log:
        f"{LOGS}/noise_sources/{{cell}}.log",
    benchmark:
        f"{BENCHMARKS}/noise_sources/{{cell}}.tsv"
    params:
        config=lambda wildcards: noise_cell_config(wildcards.cell),
        seeds=config["noise"]["sources"]["seeds"],
        first_seed=config["noise"]["sources"]["first_seed"],
        work=lambda wildcards: f"{WORK}/noise_sources/{wildcards.cell}",
    threads: TRAINING["threads"] or 1
    resources:
        mem_mb=3000,
        runtime=120,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.noise_sources --config-json {params.config:q} --seeds {params.seeds}"
        " --first-seed {params.first_seed} --work {params.work} --out {output} > {log} 2>&1"
