# Evaluation stage: held-out predictions against measurements, the validation protocol's own
# spread, what the captions contribute and whether samples follow them, each for two trained models
# (results/evaluation/{model}/, pipeline.runs.EVALUATED_MODELS): the largest held-out size at the
# laws' predicted cell, and the compute-optimal held-out run, trained on the most tokens per
# parameter; sample videos from the largest.

EVALUATION = config["evaluation"]
SAMPLES = config["samples"]


rule evaluate_heldout:
    input:
        runs=f"{RESULTS}/runs.csv",
        laws=f"{RESULTS}/laws.json",
        proposal=f"{WORK}/analysis/proposal.json",
    output:
        report(
            f"{RESULTS}/heldout.json",
            caption="../report/heldout.rst",
            category="Held-out validation",
        ),
    log:
        f"{LOGS}/evaluate_heldout.log",
    localrule: True
    conda:
        CONDA_ENV
    shell:
        "python -m analysis.heldout --runs {input.runs} --laws {input.laws} --proposal {input.proposal}"
        " --out {output} > {log} 2>&1"


rule validation_protocol_spread:
    input:
        evaluated_run_job,
    output:
        f"{RESULTS}/evaluation/{{model}}/validation_protocol_spread.json",
    log:
        f"{LOGS}/validation_protocol_spread/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/validation_protocol_spread/{{model}}.tsv"
    params:
        run=evaluated_run_dir,
        seeds=EVALUATION["protocol_spread_seeds"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.evaluate spread --run {params.run} --seeds {params.seeds} --out {output} > {log} 2>&1"


rule caption_conditioning:
    input:
        evaluated_run_job,
    output:
        f"{RESULTS}/evaluation/{{model}}/caption_conditioning.json",
    log:
        f"{LOGS}/caption_conditioning/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/caption_conditioning/{{model}}.tsv"
    params:
        run=evaluated_run_dir,
        contrasts=caption_contrast_arguments(config),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.evaluate captions --run {params.run} {params.contrasts} --out {output} > {log} 2>&1"


rule samples:
    input:
        lambda wildcards: evaluated_run_job(wildcards, "largest"),
    output:
        index=f"{RESULTS}/samples/index.json",
        sheet=report(
            f"{RESULTS}/samples/contact_sheet.png",
            caption="../report/samples.rst",
            category="Samples",
        ),
    log:
        f"{LOGS}/samples.log",
    benchmark:
        f"{BENCHMARKS}/samples.tsv"
    params:
        run=lambda wildcards: evaluated_run_dir(wildcards, "largest"),
        out=lambda wildcards, output: os.path.dirname(output.index),
        captions=sample_caption_arguments(config),
        steps=SAMPLES["steps"],
        guidance_scale=SAMPLES["guidance_scale"],
        seed=SAMPLES["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.sample --run {params.run} --out {params.out} {params.captions}"
        " --steps {params.steps} --guidance-scale {params.guidance_scale} --seed {params.seed}"
        " > {log} 2>&1"


rule caption_match:
    input:
        evaluated_run_job,
    output:
        f"{RESULTS}/evaluation/{{model}}/caption_match.json",
    log:
        f"{LOGS}/caption_match/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/caption_match/{{model}}.tsv"
    params:
        run=evaluated_run_dir,
        clips=EVALUATION["caption_match_clips"],
        steps=SAMPLES["steps"],
        guidance_scale=SAMPLES["guidance_scale"],
        seed=SAMPLES["seed"],
        confidence=FIT.confidence_level,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.caption_match --run {params.run} --out {output} --clips {params.clips} --steps {params.steps}"
        " --guidance-scale {params.guidance_scale} --seed {params.seed} --confidence {params.confidence} > {log} 2>&1"

