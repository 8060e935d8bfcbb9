"""The pipeline config's checks (pipeline.config), in this process: the schema and every cross-check
a schema cannot express, each error naming its key, and ``python -m pipeline.config check``.

The Snakefile runs the same checks before it builds any job (tests/test_workflow.py runs one invalid
config through Snakemake to show that).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    PipelineConfigError,
    caption_contrast_arguments,
    caption_contrasts,
    main,
    sample_caption_arguments,
    validate_pipeline_config,
)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def changed(**sections) -> dict:
    """The smoke config with ``section={key: value}`` merged in (one level deep)."""
    config = copy.deepcopy(SMOKE)
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


@pytest.mark.parametrize("source", ["config", "smoke", "paper"])
def test_the_shipped_configs_are_valid(source, tmp_path):
    config = yaml.safe_load((ROOT / "config" / f"{source}.yaml").read_text())
    if config["data"]["source"] is not None:
        (tmp_path / "videos").mkdir()
        config["data"]["source"] = str(tmp_path / "videos")
    validate_pipeline_config(config)


@pytest.mark.parametrize("overlay", ["seed-1", "ensemble-off", "batch-axis", "isoflop"])
def test_the_shipped_overlays_are_valid_over_the_default(overlay):
    """An overlay merged into the default as ``snakemake --configfile config/config.yaml OVERLAY`` merges it
    (mappings key by key, everything else replaced); ``ensemble-off`` cuts the grid to one size, one run a job."""
    from snakemake.utils import update_config

    from pipeline.runs import grid_runs, training_jobs

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / f"{overlay}.yaml").read_text()))
    validate_pipeline_config(config)
    if overlay == "ensemble-off":
        runs = grid_runs(config)
        assert {run.size for run in runs} == {"tiny-147k"} and {run.series for run in runs} == {"grid"}
        jobs = training_jobs(runs, config["training"]["ensemble"])
        assert len(jobs) == len(runs) == 45 and all(len(job.runs) == 1 for job in jobs)
    if overlay == "batch-axis":  # tiny-9k at 1, 2 and 4 clips to 8.4M tokens: one ensemble job per batch
        runs = grid_runs(config)
        assert {run.size for run in runs} == {"tiny-9k"} and len(runs) == 3 * 4 * 3
        assert [len(job.runs) for job in training_jobs(runs, config["training"]["ensemble"])] == [12, 12, 12]
        assert config["grid"]["milestones_tokens"]["tiny-9k"][-1] == 2**23 and config["workdir"] != "work"
    if overlay == "isoflop":  # four sizes at one clip, each trained past the default's budgets
        runs = grid_runs(config)
        assert {run.batch_clips for run in runs} == {1} and len(runs) == 4 * 4 * 3
        default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["grid"]["milestones_tokens"]
        assert all(config["grid"]["milestones_tokens"][size][-1] >= 4 * default[size][-1] for size in config["grid"]["sizes"])
        assert config["workdir"] != "work"


@pytest.mark.parametrize(
    "config, message",
    [
        (changed(grid={"milestones_tokens": {"tiny-18k": [8192, 16384, 32768], "tiny-9000k": [8192]}}),
         "grid.milestones_tokens.tiny-9000k: unknown model size 'tiny-9000k'"),
        (changed(grid={"learning_rates": [5.0e-3, -1.0e-2]}),
         "grid.learning_rates[1]: -0.01 is less than or equal to the minimum of 0"),
        (changed(grid={"sizes": ["tiny-18k", "tiny-9000k"]}), "grid.sizes[1]: unknown model size 'tiny-9000k'"),
        (changed(training={**SMOKE["training"], "learning_rate": 1.0e-3}),
         "training: Additional properties are not allowed ('learning_rate' was unexpected)"),
        (changed(gird={"sizes": ["tiny-18k"]}), "config: Additional properties are not allowed ('gird' was unexpected)"),
        (changed(heldout={"sizes": ["tiny-18k"]}), "heldout.sizes[0]: tiny-18k is also a fitting size in grid.sizes"),
        (changed(noise={"cells": SMOKE["noise"]["cells"], "seeds": [1, SMOKE["training"]["seed"]]}),
         "noise.seeds: seed 0 is a grid seed (training.seed + j x 1000 for j < grid.seeds_per_cell)"),
        (changed(grid={"seeds_per_cell": 2}, noise={"cells": SMOKE["noise"]["cells"], "seeds": [1, SMOKE["training"]["seed"] + 1000]}),
         "noise.seeds: seed 1000 is a grid seed"),
        (changed(grid={"milestones_tokens": [8192, 32768, 16384]}),
         "grid.milestones_tokens: token budgets must increase, got [8192, 32768, 16384]"),
        (changed(grid={"milestones_tokens": [8192, 8192, 16384]}), "grid.milestones_tokens: [8192, 8192, 16384] has non-unique"),
        (changed(heldout={"tokens": 65536}), "heldout.tokens: 65536 lies beyond the grid's last milestone 32768"),
        (changed(model={"patch": [1, 3, 1]}), "model.patch: does not tile the latent grid (4x4x4)"),
        (changed(data={"latent": {**SMOKE["data"]["latent"], "patch": [2, 4, 3]}}),
         "data.latent.patch: does not tile the prepared clips (8x16x16)"),
        (changed(data={"latent": None}, model={"patch": [3, 4, 4]}), "model.patch: does not tile the prepared clips (8x16x16)"),
        (changed(data={"captions": "captions.csv"}),
         "data.captions: a captions CSV needs data.source (the embedded set writes its own captions)"),
        (changed(training={**SMOKE["training"], "processes": 3}),
         "run grid/tiny-18k/b8_lr0.005_s0 cannot be split over training.processes=3: batch.global_clips: 8 clips"),
        (changed(training={**SMOKE["training"], "processes": 2, "nodes": 3}),  # 2 processes on each of 3 nodes
         "run grid/tiny-18k/b8_lr0.005_s0 cannot be split over training.processes=6"),
        (changed(grid={"extra_learning_rates": [{"size": "tiny-4k", "learning_rates": [4.0e-2]}]}),
         "grid.extra_learning_rates[0].size: tiny-4k is not one of grid.sizes"),
        (changed(grid={"extra_learning_rates": [{"size": "tiny-18k", "learning_rates": [1.0e-2]}]}),
         "grid.extra_learning_rates[0].learning_rates: 0.01 is already in grid.learning_rates"),
        (changed(heldout={**SMOKE["heldout"], "sizes": ["tiny-8k"]}),
         "heldout.sizes: tiny-8k has width 16, which does not exceed the 16 values each token carries"),
        (changed(data={"latent": {**SMOKE["data"]["latent"], "channels": 24}}),
         "grid.sizes: tiny-18k has width 24, which does not exceed the 24 values each token carries"),
        (changed(analysis={**SMOKE["analysis"], "inference": {**SMOKE["analysis"]["inference"], "patch_dim": 96}}),
         "analysis.inference.patch_dim: 96 differs from the 16 the models' inputs have"),
        (changed(evaluation={"caption_contrasts": {"swap": [["left", "moves right"]]}}),
         "evaluation.caption_contrasts: 'moves right' is not one caption word"),
        (changed(evaluation={"caption_contrasts": {"swap": [["left", "right"], ["up", "Left"]]}}),
         "evaluation.caption_contrasts.swap: each word may appear in one pair only"),
        (changed(evaluation={"caption_contrasts": {"exchange": ["red", ","]}}),
         "evaluation.caption_contrasts: ',' separates the words"),
        (changed(evaluation={"caption_contrasts": {"exchange": ["red"]}}),
         "evaluation.caption_contrasts.exchange: needs two or more words"),
        (changed(evaluation={"caption_contrasts": "embedded"}), "evaluation.caption_contrasts: 'auto' was expected"),
        (changed(workdir="work/my run"), "workdir: 'work/my run' contains whitespace"),
        (changed(data={"source": "/videos/my\tclips"}), "data.source: '/videos/my\\tclips' contains whitespace"),
    ],
    ids=["milestones-of-an-unknown-size", "negative-learning-rate", "unknown-size", "unknown-nested-key", "unknown-top-level-key", "heldout-in-grid",
         "noise-seed-is-the-training-seed", "noise-seed-is-a-replicate-seed", "milestones-not-increasing", "milestones-repeated", "heldout-tokens-beyond",
         "model-patch", "latent-patch", "pixel-patch", "captions-without-source", "batch-over-processes",
         "batch-over-nodes", "extra-rates-of-another-size", "extra-rate-already-in-the-grid", "heldout-size-too-narrow",
         "grid-size-too-narrow", "inference-patch-values", "contrast-of-two-words", "contrast-word-in-two-pairs",
         "exchange-of-a-comma", "exchange-of-one-word", "contrasts-neither-auto-nor-words", "workdir-with-a-space",
         "source-with-a-tab"],
)
def test_an_invalid_config_is_refused_naming_the_key(config, message):
    with pytest.raises(PipelineConfigError) as error:
        validate_pipeline_config(config)
    assert message in str(error.value)


def test_caption_contrasts_are_the_embedded_sets_words_or_the_configs():
    """auto: the generator's opposite directions and colours with the embedded set, nothing with a source folder;
    given words pass through, quoted for the shell."""
    config = changed()
    validate_pipeline_config(config)
    assert caption_contrast_arguments(config) == (
        "--swap down:up --swap left:right --exchange red,green,blue,yellow,cyan,magenta,white,orange")
    config = changed(data={"source": "videos"})
    assert caption_contrasts(config) == {"swap": [], "exchange": []} and caption_contrast_arguments(config) == ""
    config = changed(evaluation={"caption_contrasts": {"swap": [["day", "night"]], "exchange": ["&", "dog"]}})
    validate_pipeline_config(config)
    assert caption_contrast_arguments(config) == "--swap day:night --exchange '&,dog'"


def test_sample_captions_reach_dit_sample_as_written():
    """Quotes, dollars and backslashes in ``samples.captions`` are the caption's own characters, not the shell's."""
    import shlex
    import subprocess

    captions = ["it's a \"big\" red 7 for $HOME", "back\\slash `tick` ;&|"]
    arguments = sample_caption_arguments(changed(samples={**SMOKE["samples"], "captions": captions}))
    echoed = subprocess.run(["bash", "-c", f"printf '%s\\n' {arguments}"], capture_output=True, text=True, check=True)
    assert echoed.stdout.splitlines() == ["--caption", captions[0], "--caption", captions[1]]
    assert shlex.split(arguments) == ["--caption", captions[0], "--caption", captions[1]]
    assert sample_caption_arguments(changed(samples={**SMOKE["samples"], "captions": None})) == ""


def test_a_batch_the_processes_can_split_is_accepted():
    validate_pipeline_config(changed(training={**SMOKE["training"], "processes": 2}))  # 8 and 16 clips over 2


def test_the_check_command(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(SMOKE))
    assert main(["check", "--config", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: valid"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed(heldout={"tokens": 65536})))
    assert main(["check", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        "pipeline.config: invalid pipeline config: heldout.tokens: 65536 lies beyond the grid's last milestone 32768"
    )
    assert main(["check", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert f"cannot read pipeline config {tmp_path / 'missing.yaml'}" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["check", "--config", str(tmp_path / "list.yaml")]) == 2
    assert "must hold a mapping of sections" in capsys.readouterr().err


def test_every_grid_cell_gets_its_replicate_seeds_in_the_cells_ensemble_job():
    from pipeline.runs import grid_runs, training_jobs

    config = changed(grid={"seeds_per_cell": 3})
    validate_pipeline_config(config)
    runs = [run for run in grid_runs(config) if run.series == "grid"]
    cells = {(run.size, run.batch_clips, run.learning_rate) for run in runs}
    seed = SMOKE["training"]["seed"]
    assert len(runs) == 3 * len(cells)
    for cell in cells:
        assert sorted(run.seed for run in runs if (run.size, run.batch_clips, run.learning_rate) == cell) == [seed, seed + 1000, seed + 2000]
    for job in training_jobs(grid_runs(config)):
        shapes = {(run.size, run.batch_clips) for run in job.runs}
        assert len(shapes) == 1
        in_job = [run for run in runs if (run.size, run.batch_clips) in shapes]
        assert set(in_job) <= set(job.runs)


def test_held_out_seeds_follow_the_master_seed_and_the_replicate_count():
    """The held-out runs' seeds come from training.seed (a second master seed reaches them too) and
    heldout.seeds_per_cell, SEED_STRIDE apart as the grid's replicates; the schema's default is one seed."""
    from pipeline.runs import SEED_STRIDE, heldout_seeds

    validated = changed()
    del validated["heldout"]["seeds_per_cell"]  # the tests' config sets two
    validate_pipeline_config(validated)
    assert validated["heldout"]["seeds_per_cell"] == 1 and heldout_seeds(validated) == [SMOKE["training"]["seed"]]
    config = changed(training={"seed": 7}, heldout={"seeds_per_cell": 3})
    validate_pipeline_config(config)
    assert heldout_seeds(config) == [7, 7 + SEED_STRIDE, 7 + 2 * SEED_STRIDE]
    with pytest.raises(PipelineConfigError, match="seeds_per_cell"):
        validate_pipeline_config(changed(heldout={"seeds_per_cell": 0}))


def test_a_sizes_extra_learning_rates_join_its_grid_and_its_ensemble_jobs_only():
    from pipeline.runs import grid_runs, training_jobs

    config = changed(grid={"extra_learning_rates": [{"size": "tiny-33k", "learning_rates": [4.0e-2, 2.5e-3]}]})
    validate_pipeline_config(config)
    runs = [run for run in grid_runs(config) if run.series == "grid"]
    batches, rates = SMOKE["grid"]["batch_clips"], SMOKE["grid"]["learning_rates"]
    for size in SMOKE["grid"]["sizes"]:
        expected = {(b, float(lr)) for b in batches for lr in rates + ([4.0e-2, 2.5e-3] if size == "tiny-33k" else [])}
        assert {(run.batch_clips, run.learning_rate) for run in runs if run.size == size} == expected
    for job in training_jobs(grid_runs(config)):
        if job.runs[0].series == "grid":
            assert {run.learning_rate for run in job.runs} >= set(map(float, rates))
            assert (4.0e-2 in {run.learning_rate for run in job.runs}) == (job.runs[0].size == "tiny-33k")


def test_a_jobs_cost_is_its_steps_and_its_runs_training_flops():
    """``job_cost`` (the priority the workflow gives a training job) against a hand count for the default's jobs."""
    from pipeline.config import model_tokens_per_clip
    from pipeline.runs import STEP_SECONDS, TRAINING_FLOPS_PER_S, grid_runs, job_cost, training_jobs

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_pipeline_config(config)
    # 8x16x16 clips -> 2x4x4 latent tubelets -> a 4x4x4 grid of 1x1x1 DiT patches
    assert model_tokens_per_clip(config) == 64
    pixels = copy.deepcopy(config)
    pixels["data"]["latent"], pixels["model"]["patch"] = None, [2, 4, 4]
    assert model_tokens_per_clip(pixels) == 64
    shorter = copy.deepcopy(config)
    shorter["model"]["frames"] = 4
    assert model_tokens_per_clip(shorter) == 32
    jobs = {job.job_id: job for job in training_jobs(grid_runs(config))}
    # tiny-9k at 1 clip: 2,097,152 tokens in 32,768 steps of 64 tokens, 18 runs of N = 9,216 at width 24
    flops = 18 * 0.75 * 9216 * (7 + 64 / 24) * 2_097_152
    assert job_cost(jobs["grid/tiny-9k/b1"], 64) == pytest.approx(32768 * STEP_SECONDS + flops / TRAINING_FLOPS_PER_S)
    # tiny-262k at 4 clips: 262,144 tokens in 1,024 steps of 256 tokens, 15 runs of N = 262,144 at width 64
    flops = 15 * 0.75 * 262144 * (7 + 64 / 64) * 262_144
    assert job_cost(jobs["grid/tiny-262k/b4"], 64) == pytest.approx(1024 * STEP_SECONDS + flops / TRAINING_FLOPS_PER_S)
    # a budget that is not a whole number of steps takes one more step
    longer = copy.deepcopy(config)
    longer["grid"]["milestones_tokens"]["tiny-9k"][-1] += 1
    job = next(j for j in training_jobs(grid_runs(longer)) if j.job_id == "grid/tiny-9k/b1")
    flops = 18 * 0.75 * 9216 * (7 + 64 / 24) * 32769 * 64
    assert job_cost(job, 64) == pytest.approx(32769 * STEP_SECONDS + flops / TRAINING_FLOPS_PER_S)


@pytest.mark.parametrize("name, patch_dim, text_tokens", [
    ("config", 16 * 1 * 1 * 1, 24),   # 16 latent channels, 1x1x1 DiT patches; 24 caption tokens
    ("paper", 16 * 1 * 2 * 2, 120),   # 16 latent channels, the paper's 1x2x2 patches; 120 caption tokens
])
def test_the_inference_cost_takes_token_values_and_caption_tokens_from_the_models_inputs(name, patch_dim, text_tokens):
    from pipeline.config import fit_config, load_pipeline_config

    config = load_pipeline_config(ROOT / "config" / f"{name}.yaml")
    assert "patch_dim" not in config["analysis"]["inference"] and "text_tokens" not in config["analysis"]["inference"]
    inference = fit_config(config)["inference"]
    assert (inference["patch_dim"], inference["text_tokens"]) == (patch_dim, text_tokens)
    assert inference["sampling_steps"] == config["analysis"]["inference"]["sampling_steps"]


def test_the_schema_offers_the_timestep_samplings_dit_config_knows():
    from dit.config import TIMESTEP_SAMPLING

    schema = yaml.safe_load(Path("workflow/schemas/config.schema.yaml").read_text())
    diffusion = schema["properties"]["training"]["properties"]["diffusion"]["properties"]
    assert tuple(diffusion["timestep_sampling"]["enum"]) == TIMESTEP_SAMPLING
    with pytest.raises(PipelineConfigError, match="training.diffusion.timestep_sampling"):
        validate_pipeline_config(changed(training={**SMOKE["training"],
                                                   "diffusion": {**SMOKE["training"]["diffusion"],
                                                                 "timestep_sampling": "sobol"}}))
