"""Collect finished run folders into the tidy runs table that ``analysis`` reads.

``python -m pipeline.collect --out results/runs.csv RUN_DIR [RUN_DIR ...]`` reads each run's
``summary.json`` and ``metrics.csv`` (written by ``dit.train``; ``dit.run_folder`` says what a run
folder holds) and writes one row per (run, token milestone), with the columns of
``pipeline.formats.RUNS_TABLE_COLUMNS``. A diverged or failed run keeps the milestones it reached; a
run that reached none appears once with empty losses, so no run is silently dropped.

Beside the table, ``provenance_path(out)`` (``runs.provenance.json`` for ``runs.csv``) records the
collection's provenance (``dit.provenance``: code version, packages, the run folders) and each run's own:
the code version and config hash its ``summary.json`` records.
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

from dit.atomic import atomic_write_json, atomic_write_text
from dit.provenance import provenance
from dit.run_folder import read_summary
from pipeline.formats import MILESTONE_COLUMNS, RUN_COLUMNS, RUNS_TABLE_COLUMNS


class RunFolderError(ValueError):
    """A run folder lacks its summary or holds unreadable records; the message names the file."""


def read_run(run_dir: Path) -> list[dict]:
    """Rows of one run folder (one per milestone reached, at least one)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{summary_path}: missing (the run has not finished)") from None
    except ValueError as error:
        raise RunFolderError(f"{summary_path}: not valid JSON ({error})") from None
    missing = [key for key in RUN_COLUMNS if key not in summary]
    if missing:
        raise RunFolderError(f"{summary_path}: missing keys {missing}")
    base = {key: summary[key] for key in RUN_COLUMNS}
    metrics_path = run_dir / "metrics.csv"
    milestones: list[dict] = []
    if metrics_path.exists():
        with open(metrics_path, newline="") as handle:
            milestones = list(csv.DictReader(handle))
    if summary["status"] == "completed" and not milestones:
        raise RunFolderError(f"{metrics_path}: a completed run must have milestone rows")
    if not milestones:
        return [{**base, **{key: math.nan for key in MILESTONE_COLUMNS}, "step": 0, "tokens": 0}]
    rows = []
    for record in milestones:
        try:
            row = {**base, **{key: float(record[key]) for key in MILESTONE_COLUMNS}}
        except (KeyError, ValueError) as error:
            raise RunFolderError(f"{metrics_path}: bad or missing column ({error})") from None
        for key in ("step", "milestone_tokens", "tokens"):
            row[key] = int(row[key])
        rows.append(row)
    return rows


def collect(run_dirs: Iterable[Path]) -> list[dict]:
    """Rows of all run folders, in the order given."""
    rows: list[dict] = []
    for run_dir in run_dirs:
        rows.extend(read_run(Path(run_dir)))
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
        recorded = summary.get("provenance") or {}
        runs[str(summary.get("run_id") or Path(run_dir).name)] = {
            "code_version": recorded.get("code_version"), "config_hash": recorded.get("config_hash")}
    return {"provenance": provenance({"run_dirs": [str(path) for path in run_dirs]}), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="CSV to write (e.g. results/runs.csv)")
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders holding summary.json")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.run_dirs)
    except RunFolderError as error:
        print(f"pipeline.collect: {error}", file=sys.stderr)
        return 1
    write_runs_table(args.out, rows)
    atomic_write_json(provenance_path(args.out), table_provenance(args.run_dirs))
    statuses: dict[str, int] = {}
    for run_dir in args.run_dirs:
        status = read_summary(run_dir)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    print(f"{args.out}: {len(rows)} rows from {len(args.run_dirs)} runs ({statuses})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
