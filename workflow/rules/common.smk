# Shared by every stage: the validated config, the run list and the paths.

import json
import math
import os
import sys

from pipeline.runs import (
    EVALUATED_MODELS,
    ensemble_config,
    evaluated_run,
    find_job,
    format_learning_rate,
    grid_runs,
    heldout_seeds,
    job_cost,
    job_of,
    proposed_runs,
    training_jobs,
)
from analysis.config import config_from_dict as fit_settings
from dit.data.sources import source_fingerprint
from pipeline.config import (
    PipelineConfigError,
    caption_contrast_arguments,
    fit_config,
    model_tokens_per_clip,
    sample_caption_arguments,
    validate_pipeline_config,
)

try:
    validate_pipeline_config(config)
except PipelineConfigError as error:
    sys.exit(f"invalid pipeline config: {error}")

WORK = config["workdir"]
RESULTS = config["results"]
LOGS = f"{WORK}/logs"
BENCHMARKS = f"{WORK}/benchmarks"
SOURCE = config["data"]["source"] or f"{WORK}/data/source"
PREPARED = f"{WORK}/data/prepared"
CODEC = f"{WORK}/data/latent_codec.npz"  # used when data.latent is set
FIT = fit_settings(fit_config(config))  # the analysis settings, with analysis.config's defaults
GRID_RUNS = grid_runs(config)
TRAINING = config["training"]
ENSEMBLE = TRAINING["ensemble"]
GRID_JOBS = training_jobs(GRID_RUNS, ENSEMBLE)
TOKENS_PER_CLIP = model_tokens_per_clip(config)
# Rules name the conda recipe, so `snakemake --sdm conda` builds the environment itself.
CONDA_ENV = "../../environment.yml"


def run_dir(run_id):
    return f"{WORK}/runs/{run_id}"


def job_dir(job_id):
    return f"{WORK}/jobs/{job_id}"


def job_records(jobs):
    """The record each training job writes when all its runs have finished (a job's output)."""
    return [f"{job_dir(job.job_id)}/job.json" for job in jobs]


def job_priority(job):
    """A training job's Snakemake priority: its estimated seconds (pipeline.runs.job_cost), so the longest start first."""
    return round(job_cost(job, TOKENS_PER_CLIP), 1)


def launch_ensemble(job):
    """The job's dit.train ensemble as JSON (a param, so a changed value reruns only that job)."""
    return json.dumps(ensemble_config(config, job, f"{WORK}/runs", PREPARED, CODEC), sort_keys=True)


def training_inputs(wildcards=None):
    """What every training run reads: the prepared clips, and the latent codec when there is one."""
    return [PREPARED, CODEC] if config["data"]["latent"] else [PREPARED]


def proposal_file():
    """The held-out proposal (fit.smk's checkpoint); calling this makes the caller wait for it."""
    return checkpoints.propose_heldout.get().output.proposal


def heldout_training_inputs(wildcards=None):
    """A held-out job's inputs: ``training_inputs``, once the proposal exists. The proposal file itself is not an
    input: a refit that proposes the same runs (a changed fit setting, a new bootstrap) rewrites it, and its runs'
    configs, the job's ``ensemble`` param, decide whether the job trains again."""
    proposal_file()  # waits for the checkpoint
    return training_inputs()


def heldout_jobs(wildcards=None):
    return training_jobs(proposed_runs(proposal_file()), ENSEMBLE)


def heldout_run_ids(wildcards=None):
    return [run.run_id for run in proposed_runs(proposal_file())]


def evaluated_run_dir(wildcards, model=None):
    """The run folder of the evaluated model ``model`` (default ``wildcards.model``)."""
    return run_dir(evaluated_run(proposal_file(), model or wildcards.model).run_id)


def evaluated_run_job(wildcards, model=None):
    """The record of the job that trains the evaluated model ``model`` (default ``wildcards.model``); its
    evaluations wait for it."""
    run_id = evaluated_run(proposal_file(), model or wildcards.model).run_id
    return job_records([job_of(heldout_jobs(), run_id)])[0]


#: What each evaluated model gets under results/evaluation/MODEL/ (evaluate.smk): analysis.facts input -> file.
EVALUATION_FILES = {"protocol_spread": "validation_protocol_spread.json", "caption_conditioning": "caption_conditioning.json",
                    "caption_match": "caption_match.json"}


def compute_optimal_evaluations():
    """analysis.facts input -> the compute-optimal run's evaluation file; empty when the proposal has no such run."""
    if evaluated_run(proposal_file(), "compute_optimal") is None:
        return {}
    return {name: f"{RESULTS}/evaluation/compute_optimal/{file}" for name, file in EVALUATION_FILES.items()}


def facts_benchmarks(wildcards=None):
    """The benchmark files of the jobs the facts depend on, in the workflow's order. Benchmark files are not
    outputs, so these are named, not found: files that earlier runs or other targets (figures, samples,
    noise_sources) left in the folder do not enter the summary's stage table."""
    data = ["generate_data"] * (config["data"]["source"] is None) + ["prepare_data"] + ["fit_latent_codec"] * bool(config["data"]["latent"])
    jobs = [f"train/{job.job_id}" for job in [*GRID_JOBS, *heldout_jobs()]]
    models = ["largest", *(["compute_optimal"] if compute_optimal_evaluations() else [])]
    evaluations = [f"{stage}/{model}" for stage in ("validation_protocol_spread", "caption_conditioning", "caption_match") for model in models]
    return [f"{BENCHMARKS}/{name}.tsv" for name in [*data, *jobs, "fit_grid", "fit_laws", *evaluations]]


def noise_cell_name(cell):
    return f"{cell['size']}_b{cell['batch_clips']}_lr{format_learning_rate(float(cell['learning_rate']))}"


NOISE_CELLS = {noise_cell_name(cell): cell for cell in config["noise"]["cells"]}


def noise_cell_config(name):
    """The training config of the cell's run as the grid trains it (JSON), the study's base."""
    cell = NOISE_CELLS[name]
    run = next(r for r in GRID_RUNS if r.size == cell["size"] and r.batch_clips == int(cell["batch_clips"])
               and math.isclose(r.learning_rate, float(cell["learning_rate"]), rel_tol=1e-9))
    members = ensemble_config(config, job_of(GRID_JOBS, run.run_id), f"{WORK}/runs", PREPARED, CODEC)["members"]
    return json.dumps(next(m["config"] for m in members if m["config"]["run"]["id"] == run.run_id), sort_keys=True)


wildcard_constraints:
    grid_job=r"(grid|conventional|noise)/[^/]+/[^/]+",
    heldout_job=r"(heldout|compute_optimal)/[^/]+/[^/]+",
    model="|".join(EVALUATED_MODELS),
