"""The files that pass between the pipeline's stages, defined once: the runs table and the held-out proposal.

This module imports nothing of the project: ``analysis`` reads these formats and the pipeline writes them.

**Runs table** (``results/runs.csv``, written by ``python -m pipeline.collect``): one row per (run, token
milestone reached). Columns, units in brackets: ``RUN_COLUMNS`` describe the run and repeat on each of its
rows: run_id, series (``SERIES``), status, status_reason, size, non_embedding_parameters [parameters],
width, depth, heads, tokens_per_clip [tokens], batch_clips [clips], batch_tokens [tokens], learning_rate,
seed, validation_weights (which weights "the loss" is of: ema or raw); ``MILESTONE_COLUMNS`` per milestone: step, milestone_tokens [tokens], tokens [tokens seen], flops
[paper C_token x tokens, FLOPs], flops_6n [FLOPs], train_loss, validation_loss, wall_time_s [seconds].
A run that reached no milestone has one row with empty losses.

**Held-out proposal** (``python -m analysis.propose``): JSON with ``schema`` = ``PROPOSAL_SCHEMA``,
``groups`` (what the laws predict for each held-out check) and ``runs``: one record per run to train
with exactly ``PROPOSED_RUN_KEYS``: group (index into groups), series (heldout | compute_optimal),
size, batch_clips [clips], learning_rate, seed, milestones_tokens [tokens].

**Snakemake benchmark files** (``work/benchmarks/STAGE.tsv``, written by Snakemake when a job ends): tab-separated,
one row per repeat, columns ``s`` [seconds], ``max_rss`` [MB], ...; read by ``benchmark_rows``.
"""

from __future__ import annotations

import csv
from pathlib import Path

#: Series of runs: the grid's cells, the conventional cell off the grid, extra seeds for run-to-run
#: noise, the held-out sizes, and the compute-optimal check.
SERIES = ("grid", "conventional", "noise", "heldout", "compute_optimal")

RUN_COLUMNS = (
    "run_id", "series", "status", "status_reason", "size", "non_embedding_parameters", "width", "depth", "heads",
    "tokens_per_clip", "batch_clips", "batch_tokens", "learning_rate", "seed", "validation_weights",
)
MILESTONE_COLUMNS = ("step", "milestone_tokens", "tokens", "flops", "flops_6n", "train_loss", "validation_loss",
                     "wall_time_s")
RUNS_TABLE_COLUMNS = RUN_COLUMNS + MILESTONE_COLUMNS

PROPOSAL_SCHEMA = "analysis.proposal/1"
PROPOSED_RUN_KEYS = ("group", "series", "size", "batch_clips", "learning_rate", "seed", "milestones_tokens")
PROPOSED_SERIES = ("heldout", "compute_optimal")


def check_proposed_run(record: dict, where: str) -> dict:
    """``record`` if it is a proposed run of this format; ``ValueError`` naming ``where`` and the problem otherwise."""
    if not isinstance(record, dict) or set(record) != set(PROPOSED_RUN_KEYS):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{where}: a proposed run needs exactly the keys {', '.join(PROPOSED_RUN_KEYS)}; got {keys}")
    if record["series"] not in PROPOSED_SERIES:
        raise ValueError(f"{where}: run series {record['series']!r} is not one of {', '.join(PROPOSED_SERIES)}")
    return record


def benchmark_rows(benchmark_file: str | Path) -> list[dict]:
    """The rows of one Snakemake benchmark file, one per repeat (columns ``s``, ``max_rss``, ...)."""
    with open(benchmark_file) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
