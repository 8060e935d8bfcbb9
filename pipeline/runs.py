"""The experiment grid: which training runs the pipeline config asks for, and each run's config.

The pipeline config (``config/config.yaml``, loaded by ``pipeline.config``) names a grid of (model
size x batch size in clips x learning rate), a conventional cell, noise-floor seeds and a held-out
stage. This module turns it into ``RunSpec``s with stable ids, groups them into training jobs, and
turns a ``RunSpec`` into the training config that ``dit.train`` reads. The Snakefile imports it to
list the jobs; the rules call ``python -m dit.launch`` with the configs it builds, so no logic lives
in the rules.

Runs that differ only in learning rate and seed train together as one job, an ensemble
(``training.ensemble: auto``; ``off`` gives every run a job of its own). Job ids (the job folders
under ``{workdir}/jobs/``, holding the ensemble's checkpoint)::

    grid/{size}/b{batch_clips}             every grid, conventional and noise run of that size and batch
    heldout/{size}/b{batch_clips}          the held-out runs of that size and batch
    compute_optimal/{size}/b{batch_clips}

Run ids (also the run folders under ``{workdir}/runs/``)::

    grid/{size}/b{batch_clips}_lr{learning_rate}_s{seed}
    noise/{size}/b{batch_clips}_lr{learning_rate}_s{seed}
    heldout/{size}/b{batch_clips}_lr{learning_rate}_s{seed}
    compute_optimal/{size}/b{batch_clips}_lr{learning_rate}_s{seed}
    conventional/{size}/b..._lr..._s...    (only when the conventional cell lies outside the grid)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from dit.flops import paper_flops_per_token
from dit.sizes import get_size
from pipeline.formats import read_proposal


@dataclass(frozen=True)
class RunSpec:
    """One training run: a size, a global batch in clips, a learning rate, a seed and its milestones."""

    series: str
    size: str
    batch_clips: int
    learning_rate: float
    seed: int
    milestones_tokens: tuple[int, ...]

    @property
    def run_id(self) -> str:
        return f"{self.series}/{self.size}/b{self.batch_clips}_lr{format_learning_rate(self.learning_rate)}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["milestones_tokens"] = list(self.milestones_tokens)
        record["run_id"] = self.run_id
        return record


#: Series -> the job family its runs train in (runs of one family and shape share a job).
JOB_FAMILY = {"grid": "grid", "conventional": "grid", "noise": "grid", "heldout": "heldout",
              "compute_optimal": "compute_optimal"}


@dataclass(frozen=True)
class JobSpec:
    """One training job: the runs it trains together (one run when ensembles are off)."""

    job_id: str
    runs: tuple[RunSpec, ...]


def training_jobs(runs: Iterable[RunSpec], ensemble: str = "auto") -> list[JobSpec]:
    """Group runs into jobs: with ``ensemble="auto"`` one job per (family, size, batch, milestones), in order."""
    runs = list(runs)
    if ensemble == "off":
        return [JobSpec(run.run_id, (run,)) for run in runs]
    groups: dict[tuple, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault((JOB_FAMILY[run.series], run.size, run.batch_clips, run.milestones_tokens), []).append(run)
    names = [f"{family}/{size}/b{batch}" for family, size, batch, _ in groups]
    jobs = []
    for name, members in zip(names, groups.values()):
        if names.count(name) > 1:  # the same shape with other milestones: a job of its own
            name = f"{name}_t{members[0].milestones_tokens[-1]}"
        jobs.append(JobSpec(name, tuple(members)))
    return jobs


#: A training job's seconds per optimizer step (interpreter and kernel overhead, whatever the size) and the rate
#: [FLOPs per second] at which its runs' training FLOPs (the paper's C per token times tokens) add to that, for
#: ``job_cost`` only: fitted by least squares to the seconds of the default's 15 grid jobs (156 to 360 s each) on
#: a 2-core AVX-512 CPU, one thread per job, at a90589a.
STEP_SECONDS = 0.0081
TRAINING_FLOPS_PER_S = 2.0e10


def job_cost(job: JobSpec, tokens_per_clip: int) -> float:
    """A rough estimate of ``job``'s seconds on one CPU thread: its optimizer steps times ``STEP_SECONDS``, plus its
    runs' training FLOPs (``dit.flops.paper_flops_per_token`` x tokens) at ``TRAINING_FLOPS_PER_S``.

    The workflow starts jobs in this order, the costliest first (Snakemake's ``priority``), so that a stage of many
    jobs does not end on one long job while the other cores wait.
    """
    run = job.runs[0]
    size = get_size(run.size)
    step_tokens = run.batch_clips * tokens_per_clip
    steps = -(-max(run.milestones_tokens) // step_tokens)
    per_token = paper_flops_per_token(size.non_embedding_parameters, tokens_per_clip, size.width)
    return steps * STEP_SECONDS + len(job.runs) * per_token * steps * step_tokens / TRAINING_FLOPS_PER_S


def job_of(jobs: Iterable[JobSpec], run_id: str) -> JobSpec:
    """The job that trains ``run_id``."""
    for job in jobs:
        if any(run.run_id == run_id for run in job.runs):
            return job
    raise KeyError(f"no job trains run {run_id!r}")


def format_learning_rate(learning_rate: float) -> str:
    """Short, exact-enough text for a learning rate in a run id: 0.003 -> '0.003', 1.5e-4 -> '0.00015'."""
    text = f"{learning_rate:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def milestones_of(config: Mapping[str, Any], size: str) -> tuple[int, ...]:
    """The token budgets [tokens] of ``size``'s grid runs: ``grid.milestones_tokens``, or its entry for ``size``."""
    milestones = config["grid"]["milestones_tokens"]
    if isinstance(milestones, Mapping):
        if size not in milestones:
            raise KeyError(f"grid.milestones_tokens has no budgets for size {size!r}")
        milestones = milestones[size]
    return tuple(int(m) for m in milestones)


def learning_rates_of(config: Mapping[str, Any], size: str) -> tuple[float, ...]:
    """The learning rates of ``size``'s grid: ``grid.learning_rates``, then its ``grid.extra_learning_rates`` entries."""
    extra = [lr for entry in config["grid"].get("extra_learning_rates") or [] if entry["size"] == size for lr in entry["learning_rates"]]
    return tuple(float(lr) for lr in config["grid"]["learning_rates"]) + tuple(float(lr) for lr in extra)


#: Seed distance between the replicates of one grid cell: replicate j trains with ``training.seed + j * SEED_STRIDE``.
SEED_STRIDE = 1000


def grid_seeds(config: Mapping[str, Any]) -> list[int]:
    """The seeds of every grid cell: ``grid.seeds_per_cell`` replicates from ``training.seed`` on, ``SEED_STRIDE`` apart.

    A cell's loss is the mean of its replicates' losses (``analysis.selection``); they differ in
    initialisation, data order and every per-step draw, and train in the cell's ensemble job.
    """
    return replicate_seeds(config, int(config["grid"].get("seeds_per_cell", 1)))


def heldout_seeds(config: Mapping[str, Any]) -> list[int]:
    """The seeds of every held-out cell and of the compute-optimal run: ``heldout.seeds_per_cell`` replicates from
    ``training.seed`` on, as the grid's (``grid_seeds``); their mean loss is what the held-out check compares."""
    return replicate_seeds(config, int(config["heldout"].get("seeds_per_cell", 1)))


def replicate_seeds(config: Mapping[str, Any], count: int) -> list[int]:
    """``count`` seeds from ``training.seed`` on, ``SEED_STRIDE`` apart."""
    seed = int(config["training"]["seed"])
    return [seed + j * SEED_STRIDE for j in range(count)]


def grid_runs(config: Mapping[str, Any]) -> list[RunSpec]:
    """Every run trained before the held-out stage: grid and conventional (if off-grid) replicates, noise seeds."""
    grid = config["grid"]
    seeds = grid_seeds(config)
    runs = [
        RunSpec("grid", size, int(batch), float(lr), seed, milestones_of(config, size))
        for size in grid["sizes"]
        for batch in grid["batch_clips"]
        for lr in learning_rates_of(config, size)
        for seed in seeds
    ]
    conventional = config["conventional"]
    on_grid = int(conventional["batch_clips"]) in [int(b) for b in grid["batch_clips"]] and any(
        same_rate(float(conventional["learning_rate"]), float(lr)) for lr in grid["learning_rates"]
    )
    if not on_grid:
        runs += [
            RunSpec("conventional", size, int(conventional["batch_clips"]), float(conventional["learning_rate"]),
                    seed, milestones_of(config, size))
            for size in grid["sizes"]
            for seed in seeds
        ]
    for cell in config["noise"]["cells"]:
        for extra_seed in config["noise"]["seeds"]:
            runs.append(
                RunSpec("noise", cell["size"], int(cell["batch_clips"]), float(cell["learning_rate"]),
                        int(extra_seed), milestones_of(config, cell["size"]))
            )
    ids = [run.run_id for run in runs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"the pipeline config lists the same run twice: {duplicates[:3]}")
    return runs


def proposed_runs(proposal_path: str | Path) -> list[RunSpec]:
    """Held-out and compute-optimal runs of a proposal (``pipeline.formats``) written by ``python -m analysis.propose``."""
    proposal = read_proposal(proposal_path)
    return [
        RunSpec(record["series"], record["size"], int(record["batch_clips"]), float(record["learning_rate"]),
                int(record["seed"]), tuple(int(m) for m in record["milestones_tokens"]))
        for record in proposal["runs"]
    ]


def training_config(
    config: Mapping[str, Any], run: RunSpec, data_root: str, codec_path: str | None = None
) -> dict[str, Any]:
    """The ``dit.train`` config of one run; ``codec_path`` when ``data.latent`` is set.

    ``pipeline.config`` validates the config of every run once, when it loads the pipeline config.
    """
    training = config["training"]
    model = config["model"]
    record = {
        "run": {"id": run.run_id, "series": run.series},
        "seed": run.seed,
        "device": training["device"],
        "precision": training["precision"],
        "threads": training["threads"],
        "model": {
            "size": run.size,
            "patch": list(model["patch"]),
            "attention": model["attention"],
            "text_width": model["text_width"],
            "caption_table": model["caption_table"],
            "caption_dropout": model["caption_dropout"],
        },
        "data": {
            "root": str(data_root),
            "frames": model["frames"],
            "latent": str(codec_path) if config["data"]["latent"] else None,
        },
        "diffusion": dict(training["diffusion"]),
        "validation": dict(training["validation"]),
        "optimizer": {**training["optimizer"], "lr": run.learning_rate},
        "batch": {"global_clips": run.batch_clips, "micro_clips": training["micro_clips"]},
        "schedule": {"milestones_tokens": list(run.milestones_tokens)},
        "checkpoint": {"every_steps": training["checkpoint_every_steps"]},
        "divergence": {"max_loss": training["divergence_max_loss"]},
    }
    if "ema" in training:
        record["ema"] = dict(training["ema"])
    if "progress_interval_seconds" in training:  # else dit.config's default
        record["progress"] = {"interval_seconds": training["progress_interval_seconds"]}
    return record


def ensemble_config(config: Mapping[str, Any], job: JobSpec, runs_folder: str, data_root: str,
                    codec_path: str | None = None) -> dict[str, Any]:
    """The ``dit.train --ensemble`` file of one job: each run's folder (``runs_folder/run_id``) and config."""
    return {"members": [{"out": f"{runs_folder}/{run.run_id}", "config": training_config(config, run, data_root, codec_path)}
                        for run in job.runs]}


def find_job(jobs: Iterable[JobSpec], job_id: str) -> JobSpec:
    for job in jobs:
        if job.job_id == job_id:
            return job
    raise KeyError(f"no training job {job_id!r} in the pipeline config")


def find_run(runs: Iterable[RunSpec], run_id: str) -> RunSpec:
    for run in runs:
        if run.run_id == run_id:
            return run
    raise KeyError(f"no run {run_id!r} in the pipeline config")


def same_rate(a: float, b: float) -> bool:
    """Two learning rates are the same grid level (equal to 1e-9 relative)."""
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def predicted_heldout_run(proposal_path: str | Path) -> RunSpec:
    """The held-out run at the cell nearest to what the laws predict for the largest held-out size (its first seed's)."""
    proposal = read_proposal(proposal_path)
    groups = [g for g in proposal["groups"] if g["kind"] == "hyperparameters"]
    if not groups:
        raise ValueError(f"{proposal_path}: no held-out hyperparameter group")
    group = max(groups, key=lambda g: float(g["N"]))
    cell = group["nearest_cell"]
    for run in proposed_runs(proposal_path):
        if (
            run.series == "heldout"
            and run.size == group["size"]
            and run.batch_clips == int(cell["batch_clips"])
            and same_rate(run.learning_rate, float(cell["learning_rate"]))
        ):
            return run
    raise ValueError(f"{proposal_path}: the predicted cell {cell} of {group['size']} is not among the runs")


def compute_optimal_run(proposal_path: str | Path) -> RunSpec | None:
    """The compute-optimal held-out run (``heldout.compute_optimal_size``; with several seeds, the first seed's), or
    None when the proposal has none."""
    runs = [run for run in proposed_runs(proposal_path) if run.series == "compute_optimal"]
    return min(runs, key=lambda run: run.seed) if runs else None


#: The trained models the evaluations (validation-protocol spread, caption conditioning, caption match) read:
#: the largest held-out size at the laws' predicted cell (also the one the samples show), and the
#: compute-optimal held-out run, the one trained on the most tokens per parameter.
EVALUATED_MODELS = ("largest", "compute_optimal")


def evaluated_run(proposal_path: str | Path, model: str) -> RunSpec | None:
    """The run behind ``model`` (one of ``EVALUATED_MODELS``); None for "compute_optimal" when there is none."""
    if model == "largest":
        return predicted_heldout_run(proposal_path)
    if model == "compute_optimal":
        return compute_optimal_run(proposal_path)
    raise ValueError(f"unknown evaluated model {model!r}; choose one of {', '.join(EVALUATED_MODELS)}")
