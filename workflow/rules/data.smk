# Data stage: the embedded captioned video set (when no source folder is given) and its
# preparation into memory-mappable shards, through the same command a user's folder goes through.

if config["data"]["source"] is None:

    rule generate_data:
        output:
            directory(SOURCE),
        log:
            f"{LOGS}/generate_data.log",
        benchmark:
            f"{BENCHMARKS}/generate_data.tsv"
        params:
            settings=config["data"]["generate"],
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            CONDA_ENV
        shell:
            "python -m dit.data generate --out {output} --clips {params.settings[clips]}"
            " --seed {params.settings[seed]} --frames {params.settings[frames]}"
            " --size {params.settings[size]} --fps {params.settings[fps]} > {log} 2>&1"


rule prepare_data:
    input:
        source=SOURCE,
        captions=config["data"]["captions"] or [],  # an edited captions CSV prepares the folder again
    output:
        directory(PREPARED),
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCHMARKS}/prepare_data.tsv"
    params:
        settings=config["data"]["prepare"],
        captions=f"--captions {config['data']['captions']}" if config["data"]["captions"] else "",
        # your own folder's files (paths, sizes, times): a video added, replaced or edited below it prepares it again
        source_files=source_fingerprint(config["data"]["source"]) if config["data"]["source"] else "",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    shell:
        "python -m dit.data prepare --source {input.source} --out {output} {params.captions}"
        " --frames {params.settings[frames]} --stride {params.settings[stride]}"
        " --start {params.settings[start]} --height {params.settings[height]}"
        " --width {params.settings[width]} --seed {params.settings[seed]}"
        " --validation-fraction {params.settings[validation_fraction]}"
        " --max-skipped-fraction {params.settings[max_skipped_fraction]}"
        " --vocab-size {params.settings[vocab_size]} --caption-length {params.settings[caption_length]}"
        " --workers {threads} > {log} 2>&1"


if config["data"]["latent"]:

    rule fit_latent_codec:
        input:
            PREPARED,
        output:
            CODEC,
        log:
            f"{LOGS}/fit_latent_codec.log",
        benchmark:
            f"{BENCHMARKS}/fit_latent_codec.tsv"
        params:
            settings=config["data"]["latent"],
            patch=" ".join(str(p) for p in config["data"]["latent"]["patch"]),
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            CONDA_ENV
        shell:
            "python -m dit.latent fit --data {input} --out {output} --patch {params.patch}"
            " --channels {params.settings[channels]} --max-clips {params.settings[max_clips]}"
            " --seed {params.settings[seed]} > {log} 2>&1"
