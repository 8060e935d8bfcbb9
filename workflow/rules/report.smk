# Report stage: the facts document (every number, interval, flag and verdict the reports show, computed
# once by analysis.facts), then the tables, the findings on the paper's open questions and the summary,
# each rendered from it. `snakemake --report results/report.html` then bundles them.

rule facts:
    input:
        laws=f"{RESULTS}/laws.json",
        heldout=f"{RESULTS}/heldout.json",
        spread=f"{RESULTS}/evaluation/largest/validation_protocol_spread.json",
        captions=f"{RESULTS}/evaluation/largest/caption_conditioning.json",
        caption_match=f"{RESULTS}/evaluation/largest/caption_match.json",
        compute_optimal=lambda wildcards: list(compute_optimal_evaluations().values()),
        runs=f"{RESULTS}/runs.csv",
        performance=f"{RESULTS}/performance.json",
        batch_axis=f"{RESULTS}/batch_axis.json",
        prepared=PREPARED,
    output:
        facts=f"{RESULTS}/facts.json",
        scorecard=f"{RESULTS}/scorecard.json",
    log:
        f"{LOGS}/facts.log",
    params:
        benchmarks=BENCHMARKS,
        benchmark_files=facts_benchmarks,
        compute_optimal=lambda wildcards: " ".join(
            f"--compute-optimal-{name.replace('_', '-')} {path}" for name, path in compute_optimal_evaluations().items()
        ),
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.facts --laws {input.laws} --runs {input.runs} --heldout {input.heldout}"
        " --protocol-spread {input.spread} --caption-conditioning {input.captions} --caption-match {input.caption_match}"
        " {params.compute_optimal}"
        " --performance {input.performance} --batch-axis {input.batch_axis} --manifest {input.prepared}/manifest.json"
        " --benchmarks {params.benchmarks} --benchmark-files {params.benchmark_files}"
        " --out {output.facts} --scorecard {output.scorecard} > {log} 2>&1"


rule tables:
    input:
        facts=f"{RESULTS}/facts.json",
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
        "python -m analysis.tables --facts {input.facts} --out {output} > {log} 2>&1"


rule findings:
    input:
        facts=f"{RESULTS}/facts.json",
    output:
        report(f"{RESULTS}/paper/FINDINGS.md", caption="../report/findings.rst", category="Paper"),
    log:
        f"{LOGS}/findings.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.report --facts {input.facts} --findings {output} > {log} 2>&1"


rule summary:
    input:
        facts=f"{RESULTS}/facts.json",
    output:
        report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        f"{LOGS}/summary.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.report --facts {input.facts} --summary {output} > {log} 2>&1"
