"""The runs table (``python -m pipeline.collect``): one row per run and milestone, read back against the
run folders' own files; diverged and failed runs kept; unreadable folders refused naming the file."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from pipeline.collect import RunFolderError, main, read_run
from pipeline.formats import RUNS_TABLE_COLUMNS as COLUMNS


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


def set_summary(run: Path, **changes) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    summary.update(changes)
    (run / "summary.json").write_text(json.dumps(summary))
    return summary


def test_a_completed_run_gives_one_row_per_milestone_with_its_summary(tiny_run, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["--out", str(out), str(tiny_run)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 4 rows from 1 runs ({{'completed': 1}})"
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == list(COLUMNS)
    rows = read_table(out)
    summary = json.loads((tiny_run / "summary.json").read_text())
    metrics = read_table(tiny_run / "metrics.csv")
    assert len(rows) == len(metrics) == 4
    for row, milestone in zip(rows, metrics, strict=True):
        for key in ("run_id", "series", "status", "size", "non_embedding_parameters", "batch_clips", "learning_rate", "seed"):
            assert row[key] == str(summary[key]), key
        assert row["status_reason"] == ""
        for key in ("step", "milestone_tokens", "tokens"):
            assert int(row[key]) == int(milestone[key]), key
        for key in ("flops", "flops_6n", "train_loss", "validation_loss", "wall_time_s"):
            assert float(row[key]) == float(milestone[key]), key  # the values themselves, not rounded
    assert int(rows[-1]["tokens"]) == summary["tokens"] == int(rows[-1]["step"]) * summary["batch_tokens"]
    # beside the table: the collection's provenance and each run's own code version and config hash
    recorded = json.loads((tmp_path / "runs.provenance.json").read_text())
    assert recorded["provenance"]["packages"]["pandas"] and recorded["provenance"]["code_version"]["commit"]
    assert recorded["provenance"]["config"]["run_dirs"] == [str(tiny_run)]
    assert recorded["runs"] == {summary["run_id"]: {"code_version": summary["provenance"]["code_version"],
                                                    "config_hash": summary["provenance"]["config_hash"]}}


def test_a_diverged_run_keeps_the_milestones_it_reached_and_one_that_reached_none_appears_once(tiny_run, tmp_path):
    diverged = copy_run(tiny_run, tmp_path / "diverged")
    reason = "training loss 63.4 at step 9 (above divergence.max_loss=10.0)"
    set_summary(diverged, status="diverged", status_reason=reason, milestones_reached=2)  # as dit.run_folder counts
    metrics = read_table(diverged / "metrics.csv")[:2]
    with open(diverged / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(metrics[0]))
        writer.writeheader()
        writer.writerows(metrics)

    early = copy_run(tiny_run, tmp_path / "early")
    set_summary(early, status="diverged", status_reason="training loss 896.9 at step 2 (above divergence.max_loss=10.0)",
                run_id="grid/tiny-8k/b8_lr0.3_s0", milestones_reached=0)
    (early / "metrics.csv").write_text(",".join(metrics[0]) + "\n")  # header only: no milestone reached

    failed = copy_run(tiny_run, tmp_path / "failed")
    set_summary(failed, status="failed", status_reason="RuntimeError: out of memory", run_id="grid/tiny-8k/b8_lr0.02_s0",
                milestones_reached=0)
    (failed / "metrics.csv").unlink()

    out = tmp_path / "runs.csv"
    assert main(["--out", str(out), str(diverged), str(early), str(failed)]) == 0
    rows = read_table(out)
    assert [row["status"] for row in rows] == ["diverged", "diverged", "diverged", "failed"]
    assert rows[0]["status_reason"] == rows[1]["status_reason"] == reason
    assert [int(row["milestone_tokens"]) for row in rows[:2]] == [int(m["milestone_tokens"]) for m in metrics]
    for row in rows[2:]:
        assert row["step"] == row["tokens"] == "0"
        assert row["milestone_tokens"] == row["train_loss"] == row["validation_loss"] == row["flops"] == ""
    assert rows[3]["status_reason"] == "RuntimeError: out of memory"
    assert all(math.isnan(r["validation_loss"]) for r in read_run(early))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: (run / "summary.json").unlink(), "summary.json: missing (the run has not finished)"),
        (lambda run: (run / "summary.json").write_text("{not json"), "summary.json: not valid JSON"),
        (lambda run: _drop_key(run, "learning_rate"), "summary.json: missing keys ['learning_rate']"),
        (lambda run: (run / "metrics.csv").unlink(), "metrics.csv: a completed run must have milestone rows"),
        (lambda run: (run / "metrics.csv").write_text("milestone_tokens,step\n2048,4\n"), "metrics.csv: bad or missing column"),
    ],
    ids=["no-summary", "bad-json", "missing-key", "completed-without-metrics", "missing-column"],
)
def test_an_unreadable_run_folder_is_refused_naming_the_file(tiny_run, tmp_path, capsys, damage, message):
    run = copy_run(tiny_run, tmp_path / "run")
    damage(run)
    out = tmp_path / "runs.csv"
    assert main(["--out", str(out), str(tiny_run), str(run)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"pipeline.collect: {run}/") and message in error, error
    with pytest.raises(RunFolderError, match=re.escape(message)):
        read_run(run)
    assert not out.exists(), "no table is written when a run folder cannot be read"


def _drop_key(run: Path, key: str) -> None:
    summary = json.loads((run / "summary.json").read_text())
    del summary[key]
    (run / "summary.json").write_text(json.dumps(summary))
