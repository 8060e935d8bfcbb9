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
size, batch_clips [clips], learning_rate, seed, milestones_tokens [tokens]. ``read_proposal`` reads one for the workflow
and ``analysis.heldout`` alike, refusing a file that is not of this format with ``ProposalFileError``.

**Snakemake benchmark files** (``work/benchmarks/STAGE.tsv``, written by Snakemake when a job ends): tab-separated,
one row per repeat, columns ``s`` [seconds], ``max_rss`` [MB], ...; read by ``benchmark_rows``.
"""

from __future__ import annotations

import csv
import json
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


class ProposalFileError(ValueError):
    """A proposal file cannot be read or is not one ``analysis.propose`` writes; the message names it and the key."""


#: The keys of each proposal group that the evaluation reads.
GROUP_KEYS = ("kind", "size", "tokens", "predicted")


def read_json(path: str | Path, what: str, error: type[Exception] = ValueError):
    """The JSON document at ``path``; ``error("cannot read WHAT: ...")`` or ``error("WHAT is not valid JSON: ...")``
    when it cannot be read or parsed (``what`` names the file as the caller's message should, e.g. ``laws file X``)."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as problem:
        raise error(f"cannot read {what}: {problem.strerror or problem}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{what} is not valid JSON: {problem}") from None


def read_proposal(path: str | Path) -> dict:
    """The proposal at ``path``; ``ProposalFileError`` naming the file and the key when it cannot be read, is not of
    ``PROPOSAL_SCHEMA``, or lacks ``groups`` (each with ``GROUP_KEYS``) or ``runs`` (each a proposed run)."""
    proposal = read_json(path, f"proposal {path}", ProposalFileError)
    if not isinstance(proposal, dict) or proposal.get("schema") != PROPOSAL_SCHEMA:
        found = proposal.get("schema") if isinstance(proposal, dict) else type(proposal).__name__
        raise ProposalFileError(f"{path} is not a proposal of schema {PROPOSAL_SCHEMA} (found {found!r}); "
                                "write one with python -m analysis.propose")
    for key in ("groups", "runs"):
        if key not in proposal:
            raise ProposalFileError(f"proposal {path} lacks the key {key!r}")
        if not isinstance(proposal[key], list):
            raise ProposalFileError(f"proposal {path}: {key!r} is a {type(proposal[key]).__name__}, expected a list")
    for index, group in enumerate(proposal["groups"]):
        missing = [key for key in GROUP_KEYS if not isinstance(group, dict) or key not in group]
        if missing:
            raise ProposalFileError(f"proposal {path}: groups[{index}] lacks {', '.join(map(repr, missing))}")
    for index, run in enumerate(proposal["runs"]):
        try:
            check_proposed_run(run, f"proposal {path}: runs[{index}]")
        except ValueError as error:
            raise ProposalFileError(str(error)) from None
    return proposal


def benchmark_rows(benchmark_file: str | Path) -> list[dict]:
    """The rows of one Snakemake benchmark file, one per repeat (columns ``s``, ``max_rss``, ...)."""
    with open(benchmark_file) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
