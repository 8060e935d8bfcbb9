"""Collect finished run folders into the tidy runs table that ``analysis`` reads.

``python -m pipeline.collect --out results/runs.csv RUN_DIR [RUN_DIR ...]`` reads each run's
``summary.json`` and ``metrics.csv`` (written by ``dit.train``; ``dit.run_folder`` says what a run
folder holds) and writes one row per (run, token milestone), with the columns of
``pipeline.formats.RUNS_TABLE_COLUMNS``. A diverged or failed run keeps the milestones it reached; a
run that reached none appears once with empty losses, so no run is silently dropped.

Beside the table, ``provenance_path(out)`` (``runs.provenance.json`` for ``runs.csv``) records the
collection's provenance (``dit.provenance``: code version, packages, the run folders) and each run's own:
the code version and config hash its ``summary.json`` records.

Refused with exit status 2, before anything is written: an ``--out`` (or its provenance file) that is a folder, lies
below a file or is a run's file; a run folder that ``read_run`` cannot read, one named twice and two runs of one
``run_id`` (the message naming the file and the key).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Iterable

from dit.atomic import OutputPathError, atomic_write_json, atomic_write_text, check_output_files, repeated_path
from dit.provenance import provenance
from dit.run_folder import read_summary
from pipeline.formats import MILESTONE_COLUMNS, RUN_COLUMNS, RUNS_TABLE_COLUMNS, SERIES


class RunFolderError(ValueError):
    """A run folder lacks its summary or holds unreadable records; the message names the file."""


#: Statuses a run summary can have (``dit.run_folder``).
STATUSES = ("completed", "diverged", "preempted", "failed")
#: Summary keys that must be positive whole numbers.
POSITIVE_INTEGER_KEYS = ("non_embedding_parameters", "width", "depth", "heads", "tokens_per_clip", "batch_clips",
                         "batch_tokens")
#: Milestone columns that must be whole numbers (``read_run`` writes them as integers).
INTEGER_COLUMNS = ("step", "milestone_tokens", "tokens")


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_summary(summary_path: Path, summary) -> None:
    """``RunFolderError`` naming ``summary_path`` and the key when the summary cannot describe a run of the table."""
    if not isinstance(summary, dict):
        raise RunFolderError(f"{summary_path}: not a run summary (a JSON object), got {json.dumps(summary)[:40]}")
    missing = [key for key in RUN_COLUMNS if key not in summary]
    if missing:
        raise RunFolderError(f"{summary_path}: missing keys {missing}")

    def bad(key: str, expected: str) -> RunFolderError:
        return RunFolderError(f"{summary_path}: {key} must be {expected}, got {summary[key]!r}")

    for key in ("run_id", "size"):
        if not isinstance(summary[key], str) or not summary[key]:
            raise bad(key, "a non-empty string")
    if summary["series"] not in SERIES:
        raise bad("series", f"one of {', '.join(SERIES)}")
    if summary["status"] not in STATUSES:
        raise bad("status", f"one of {', '.join(STATUSES)}")
    if not isinstance(summary["status_reason"], str):
        raise bad("status_reason", "a string")
    for key in POSITIVE_INTEGER_KEYS:
        if not _is_integer(summary[key]) or summary[key] < 1:
            raise bad(key, "a positive whole number")
    rate = summary["learning_rate"]
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < math.inf):
        raise bad("learning_rate", "a positive finite number")
    if not _is_integer(summary["seed"]):
        raise bad("seed", "a whole number")
    if summary["validation_weights"] not in ("ema", "raw"):
        raise bad("validation_weights", "ema or raw")
    reached = summary.get("milestones_reached")
    if reached is not None and (not _is_integer(reached) or reached < 0):
        raise bad("milestones_reached", "a non-negative whole number")


def _milestone_row(metrics_path: Path, number: int, record: dict, base: dict) -> dict:
    """One table row of metrics row ``number`` (1 = the first after the header)."""
    row = dict(base)
    for key in MILESTONE_COLUMNS:
        if key not in record:
            raise RunFolderError(f"{metrics_path}: bad or missing column ({key!r})")
        try:
            row[key] = float(record[key])
        except (TypeError, ValueError):
            value = record[key]
            what = "no value (is the file truncated?)" if value in (None, "") else f"{value!r} is not a number"
            raise RunFolderError(f"{metrics_path}: row {number}: bad or missing column {key}: {what}") from None
    for key in INTEGER_COLUMNS:
        if not (math.isfinite(row[key]) and row[key] == int(row[key]) and row[key] >= 0):
            raise RunFolderError(f"{metrics_path}: row {number}: {key} must be a non-negative whole number, "
                                 f"got {record[key]!r}")
        row[key] = int(row[key])
    return row


def read_run(run_dir: Path) -> list[dict]:
    """Rows of one run folder (one per milestone reached, at least one).

    Refused (``RunFolderError`` naming the file and the key): a run folder that is not a folder, a missing or
    unreadable ``summary.json``, one that is not a JSON object, lacks a key of ``RUN_COLUMNS`` or holds a value of
    the wrong kind (a series not in ``SERIES``, a batch size that is not a positive whole number, ...); an unreadable
    ``metrics.csv``, one with a missing or non-numeric value or a fractional step or token count, and one with
    fewer or more rows than the ``milestones_reached`` its summary records (``dit.run_folder`` writes the summary
    after the rows, with their count, whatever the status); a completed run without rows.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder" + (" (it is a file)" if run_dir.exists() else " (missing)"))
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{summary_path}: missing (the run has not finished)") from None
    except OSError as error:
        raise RunFolderError(f"{summary_path}: cannot read ({error.strerror or error})") from None
    except ValueError as error:
        raise RunFolderError(f"{summary_path}: not valid JSON ({error})") from None
    _check_summary(summary_path, summary)
    base = {key: summary[key] for key in RUN_COLUMNS}
    metrics_path = run_dir / "metrics.csv"
    milestones: list[dict] = []
    if metrics_path.exists():
        try:
            with open(metrics_path, newline="") as handle:
                milestones = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise RunFolderError(f"{metrics_path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    if summary["status"] == "completed" and not milestones:
        raise RunFolderError(f"{metrics_path}: a completed run must have milestone rows")
    rows = [_milestone_row(metrics_path, number, record, base) for number, record in enumerate(milestones, start=1)]
    reached = summary.get("milestones_reached")
    if reached is not None and len(rows) != reached:
        raise RunFolderError(f"{metrics_path}: {len(rows)} milestone rows, but {summary_path.name} records "
                             f"milestones_reached={reached} (is the file truncated?)")
    return rows or [{**base, **{key: math.nan for key in MILESTONE_COLUMNS}, "step": 0, "tokens": 0}]


def collect(run_dirs: Iterable[Path]) -> list[dict]:
    """Rows of all run folders, in the order given; ``RunFolderError`` for one named twice or two of one run id."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    repeated = repeated_path(run_dirs)
    if repeated:
        raise RunFolderError(f"{repeated[0]}: run folder given twice (also as {repeated[1]})")
    rows: list[dict] = []
    run_ids: dict[str, Path] = {}
    for run_dir in run_dirs:
        run_rows = read_run(run_dir)
        run_id = run_rows[0]["run_id"]
        if run_id in run_ids:
            raise RunFolderError(f"{run_dir / 'summary.json'}: run_id {run_id!r} is also that of {run_ids[run_id]}")
        run_ids[run_id] = run_dir
        rows.extend(run_rows)
    return rows


def write_runs_table(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as CSV with the table's columns, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RUNS_TABLE_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if isinstance(v := row.get(key), float) and math.isnan(v) else v) for key in RUNS_TABLE_COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def provenance_path(out: Path) -> Path:
    """Where the provenance of the runs table ``out`` goes: ``NAME.provenance.json`` beside it."""
    return Path(out).with_suffix(".provenance.json")


def table_provenance(run_dirs: list[Path]) -> dict:
    """The runs table's provenance: this collection's, and per run the code version and config hash it was trained with."""
    runs = {}
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        recorded = summary.get("provenance") if isinstance(summary.get("provenance"), dict) else {}
        runs[str(summary.get("run_id") or Path(run_dir).name)] = {
            "code_version": recorded.get("code_version"), "config_hash": recorded.get("config_hash")}
    return {"provenance": provenance({"run_dirs": [str(path) for path in run_dirs]}), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="CSV to write (e.g. results/runs.csv)")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders holding summary.json")
    args = parser.parse_args(argv)
    try:
        run_files = [run_dir / name for run_dir in args.run_dirs for name in ("summary.json", "metrics.csv")]
        check_output_files([args.out, provenance_path(args.out)], run_files)
    except OutputPathError as error:
        print(f"pipeline.collect: {error}", file=sys.stderr)
        return 2
    try:
        rows = collect(args.run_dirs)
    except RunFolderError as error:
        print(f"pipeline.collect: {error}", file=sys.stderr)
        return 2
    record = table_provenance(args.run_dirs)  # built before either file is written: the two belong together
    write_runs_table(args.out, rows)
    atomic_write_json(provenance_path(args.out), record)
    statuses: dict[str, int] = {}
    for run_dir in args.run_dirs:
        status = read_summary(run_dir)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    print(f"{args.out}: {len(rows)} rows from {len(args.run_dirs)} runs ({statuses})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
