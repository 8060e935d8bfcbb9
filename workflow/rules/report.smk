# Report stage: tables, the findings on the paper's open questions, and the summary that puts the
# paper's numbers beside ours. `snakemake --report results/report.html` then bundles them.


rule tables:
    input:
        laws=f"{RESULTS}/laws.json",
    output:
        report(
            directory(f"{RESULTS}/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/tables.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.tables --laws {input.laws} --out {output} > {log} 2>&1"


rule findings:
    input:
        laws=f"{RESULTS}/laws.json",
    output:
        report(f"{RESULTS}/paper/FINDINGS.md", caption="../report/findings.rst", category="Paper"),
    log:
        f"{LOGS}/findings.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.findings --laws {input.laws} --out {output} > {log} 2>&1"


rule summary:
    input:
        laws=f"{RESULTS}/laws.json",
        heldout=f"{RESULTS}/heldout.json",
        spread=f"{RESULTS}/evaluation/validation_protocol_spread.json",
        captions=f"{RESULTS}/evaluation/caption_conditioning.json",
        runs=f"{RESULTS}/runs.csv",
        performance=f"{RESULTS}/performance.json",
        prepared=PREPARED,
    output:
        report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        f"{LOGS}/summary.log",
    params:
        benchmarks=BENCHMARKS,
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.summary --runs {input.runs} --laws {input.laws} --heldout {input.heldout}"
        " --protocol-spread {input.spread} --caption-conditioning {input.captions}"
        " --benchmarks {params.benchmarks} --performance {input.performance}"
        " --manifest {input.prepared}/manifest.json --out {output} > {log} 2>&1"
