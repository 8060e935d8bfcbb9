# Benchmark stage (not part of `all`): `snakemake --cores all bench` times the kernels underneath
# (attention backends, training-step FLOP/s against this machine's matmul FLOP/s, solo against
# ensemble member-steps/s, 2 training processes against 1, data loading, fitting) with
# pytest-benchmark and keeps the JSON results with machine metadata.

BENCH_SUITES = ["attention", "model_flops", "ensemble", "distributed", "data", "analysis"]


rule bench:
    input:
        expand(f"{RESULTS}/bench/{{suite}}.json", suite=BENCH_SUITES),


rule bench_suite:
    output:
        f"{RESULTS}/bench/{{suite}}.json",
    log:
        f"{LOGS}/bench/{{suite}}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m pytest benchmarks/bench_{wildcards.suite}.py --benchmark-only -q -p no:cacheprovider"
        " --benchmark-json {output} > {log} 2>&1"
