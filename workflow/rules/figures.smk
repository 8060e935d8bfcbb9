# Figures stage: every figure for our runs and for the paper's published laws (analysis.figures), drawn from
# the facts document and the fitted laws.


rule figures:
    input:
        facts=f"{RESULTS}/facts.json",
        laws=f"{RESULTS}/laws.json",
    output:
        report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCHMARKS}/figures.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.figures --facts {input.facts} --laws {input.laws} --out {output} --which both > {log} 2>&1"
