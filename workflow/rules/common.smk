# Shared by every stage: the validated config, the run list and the paths.

import json
import os
import sys

from dit.grid import find_run, grid_runs, predicted_heldout_run, proposed_runs, training_config
from dit.workflow_config import PipelineConfigError, fit_config, validate_pipeline_config

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
GRID_RUNS = grid_runs(config)
TRAINING = config["training"]
# Rules name the conda recipe, so `snakemake --sdm conda` builds the environment itself.
CONDA_ENV = "../../environment.yml"


def run_dir(run_id):
    return f"{WORK}/runs/{run_id}"


def summaries(run_ids):
    return [f"{run_dir(run_id)}/summary.json" for run_id in run_ids]


def launch_config(run):
    """The run's dit.train config as JSON (a param, so a changed value reruns only that run)."""
    return json.dumps(training_config(config, run, PREPARED, CODEC), sort_keys=True)


def training_inputs(wildcards=None):
    """What every training run reads: the prepared clips, and the latent codec when there is one."""
    return [PREPARED, CODEC] if config["data"]["latent"] else [PREPARED]


def proposal_file():
    """The held-out proposal (fit.smk's checkpoint); calling this makes the caller wait for it."""
    return checkpoints.propose_heldout.get().output.proposal


def heldout_run(wildcards):
    return find_run(proposed_runs(proposal_file(), seed=TRAINING["seed"]), wildcards.heldout_run)


def heldout_run_ids(wildcards=None):
    return [run.run_id for run in proposed_runs(proposal_file(), seed=TRAINING["seed"])]


def largest_run_dir(wildcards=None):
    return run_dir(predicted_heldout_run(proposal_file(), seed=TRAINING["seed"]).run_id)


wildcard_constraints:
    grid_run=r"(grid|conventional|noise)/[^/]+/[^/]+",
    heldout_run=r"(heldout|compute_optimal)/[^/]+/[^/]+",
