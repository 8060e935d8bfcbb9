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

**Keys of a JSON document**: ``key_problem`` checks the keys a reader of one of these files uses, and their kinds
(dotted, through lists and objects), and ``conditional_key_problem`` those that depend on a record's own values
(its ``status``, its ``kind``); the laws file's and the facts' inputs' checks are written with them.

**Snakemake benchmark files** (``work/benchmarks/STAGE.tsv``, written by Snakemake when a job ends): tab-separated,
one row per repeat, columns ``s`` [seconds], ``max_rss`` [MB], ...; read by ``benchmark_rows``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Mapping

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


# ------------------------------------------------------------------------------------------ keys of a JSON document
_ABSENT = object()
#: The parts of a ``key_problem`` key: names, ``[]`` and ``{}``.
KEY_PARTS = re.compile(r"\[\]|\{\}|[^.\[\]{}]+")
TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", float: "a number", bool: "true or false", None: "null"}


def key_problem(document, required: Mapping[str, object], optional: Mapping[str, object] = {},
                where: str = "") -> str | None:
    """The first problem of parsed JSON ``document`` with the keys it must have (``required``) or may have
    (``optional``), each mapped to its kinds (``type_mismatch``): ``"lacks the key 'a.b'"`` or ``"'a.b' is a string,
    expected a number"`` (``where`` before each key: the document's own place in a larger one); ``None`` when there is
    none.

    A key is dotted (``setup.flop_model``); ``name[]`` stands for every element of the list ``name``, and ``name{}``
    for every value of the object ``name`` (``groups[].tokens``: the ``tokens`` of each group). A key is looked for
    only where its parents are there and objects or lists as its path says (list the parents too, with their kinds,
    to require them): ``a.b`` required under an optional ``a`` is required of every ``a`` there is.
    """
    for key, kinds in {**optional, **required}.items():
        for place, value in _values(document, KEY_PARTS.findall(key), where):
            if value is _ABSENT:
                if key in required:
                    return f"lacks the key {place!r}"
                continue
            mismatch = type_mismatch(value, kinds)
            if mismatch:
                return f"{place!r} {mismatch}"
    return None


def _values(value, parts: list[str], where: str):
    """``(dotted place, value)`` of each place ``parts`` (a ``key_problem`` key split by ``KEY_PARTS``) names below
    ``value``, ``_ABSENT`` for a last key that is not there; nothing below a parent that is absent or of another kind."""
    part, rest = parts[0], parts[1:]
    if part == "[]":
        children = [(f"{where}[{i}]", child) for i, child in enumerate(value)] if isinstance(value, list) else []
    elif part == "{}":
        children = [(f"{where}.{key}", child) for key, child in value.items()] if isinstance(value, dict) else []
    elif not isinstance(value, dict):
        children = []
    elif part not in value:
        children = []
        if not rest:
            yield (f"{where}.{part}" if where else part), _ABSENT
    else:
        children = [(f"{where}.{part}" if where else part, value[part])]
    for place, child in children:
        if rest:
            yield from _values(child, rest, place)
        else:
            yield place, child


def has_type(value, kind) -> bool:
    """Whether ``value`` (parsed JSON) is of ``kind``: ``str``, ``dict``, ``list``, ``float`` (any number), ``bool`` or
    ``None``."""
    if kind is None:
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def type_mismatch(value, kinds) -> str | None:
    """``"is a list, expected an object or null"`` when ``value`` (parsed JSON) is of none of ``kinds`` (one kind of
    ``has_type`` or a tuple of them); ``None`` when it is of one."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if any(has_type(value, kind) for kind in kinds):
        return None
    return f"is {describe_value(value)}, expected {' or '.join(TYPE_NAMES[kind] for kind in kinds)}"


def describe_value(value) -> str:
    """What ``value`` (parsed JSON) is, for a message: null, a string, an object, ..."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return next((name for kind, name in TYPE_NAMES.items() if kind is not None and has_type(value, kind)), type(value).__name__)


def conditional_key_problem(document, conditional: Mapping[str, list]) -> str | None:
    """The first problem (``key_problem``) of the records of ``document`` whose keys depend on their own values:
    ``conditional`` maps a place (a ``key_problem`` key: ``groups[]``, ``comparison``) to ``(when, keys)`` pairs, and
    a record there that is an object whose values match every item of ``when`` must have ``keys``."""
    for place, rules in conditional.items():
        for where, record in _values(document, KEY_PARTS.findall(place), ""):
            if not isinstance(record, dict):
                continue
            for when, keys in rules:
                if all(record.get(key) == value for key, value in when.items()):
                    problem = key_problem(record, keys, {}, where=where)
                    if problem:
                        return problem
    return None
