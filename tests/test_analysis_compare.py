"""analysis.compare: two results folders, run by run, law by law and verdict by verdict."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

import numpy as np

from analysis.compare import compare_folders, compare_laws, main

REPOSITORY = Path(__file__).resolve().parent.parent
NOISE = 0.02  # recorded run-to-run relative std written into both folders' laws.json below
SEEDS_PER_CELL = 3  # the recorded cell noise is NOISE / sqrt(3), which the run-by-run comparison must not use


def _folder(path: Path, runs: pd.DataFrame, laws: dict, verdicts: dict | None = None) -> Path:
    path.mkdir()
    runs.to_csv(path / "runs.csv", index=False)
    (path / "laws.json").write_text(json.dumps(laws))
    if verdicts is not None:
        (path / "scorecard.json").write_text(json.dumps({"verdicts": verdicts}))
    return path


@pytest.fixture
def pair(tmp_path):
    """The committed runs table and laws twice: A as committed, B with known changes."""
    runs = pd.read_csv(REPOSITORY / "results" / "runs.csv", dtype={"train_loss": str, "validation_loss": str},
                       keep_default_na=False)
    laws = json.loads((REPOSITORY / "results" / "laws.json").read_text())
    laws["setup"]["noise"].update(relative_std=NOISE / math.sqrt(SEEDS_PER_CELL), run_relative_std=NOISE,
                                  seeds_per_cell=SEEDS_PER_CELL)
    laws["config"]["confidence_level"] = 0.9
    run_ids = sorted(set(runs["run_id"]))
    small, large, dropped = run_ids[0], run_ids[1], run_ids[2]
    changed = runs[runs["run_id"] != dropped].copy()
    tolerance = float(stats.norm.ppf(0.95)) * math.sqrt(2) * NOISE  # two-sided 90%: z = 1.645
    for run_id, factor in ((small, 1 + 0.5 * tolerance), (large, 1 + 2 * tolerance)):
        rows = changed["run_id"] == run_id
        changed.loc[rows, "validation_loss"] = [repr(float(v) * factor) for v in changed.loc[rows, "validation_loss"]]
    changed_laws = json.loads(json.dumps(laws))
    law = changed_laws["laws"]["learning_rate"]
    shift = law["intervals"]["b"][1] + 1.0 - law["parameters"]["b"]
    law["parameters"]["b"] += shift  # outside A's interval, and B's interval moves with it
    law["intervals"]["b"] = [edge + shift for edge in law["intervals"]["b"]]
    a = _folder(tmp_path / "a", runs, laws, {"claim_1": "supported", "claim_2": "inconclusive"})
    b = _folder(tmp_path / "b", changed, changed_laws, {"claim_1": "supported", "claim_2": "supported"})
    return a, b, {"small": small, "large": large, "dropped": dropped, "tolerance": tolerance, "runs": run_ids}


def test_runs_are_classified_against_the_recorded_noise(pair):
    a, b, known = pair
    comparison = compare_folders(a, b)
    assert comparison.tolerance_relative == pytest.approx(known["tolerance"])
    by_run = {run.run_id: run for run in comparison.runs}
    assert by_run[known["small"]].status == "within noise"
    assert by_run[known["large"]].status == "beyond noise"
    assert by_run[known["large"]].max_relative_validation_difference == pytest.approx(
        2 * known["tolerance"] / (1 + 2 * known["tolerance"]))  # |A - B| / B with B = A (1 + 2 tolerance)
    assert by_run[known["dropped"]].status == "only in A"
    others = set(known["runs"]) - {known["small"], known["large"], known["dropped"]}
    assert {by_run[run_id].status for run_id in others} == {"identical"}
    assert comparison.counts()["identical"] == len(others)


def test_a_bare_runs_table_is_compared_run_by_run_with_the_other_sides_noise(pair, capsys):
    """A part of a grid (one size, a runs table alone) against the whole folder: runs only; ``--common`` leaves
    out the runs the part lacks, and a table whose runs are equal to the bit agrees."""
    a, b, known = pair
    runs = pd.read_csv(a / "runs.csv", dtype=str, keep_default_na=False)
    part = runs[runs["run_id"].isin(known["runs"][3:6])]
    table = b / "part.csv"
    part.to_csv(table, index=False)
    whole = compare_folders(a, table)
    assert whole.tolerance_relative == pytest.approx(known["tolerance"])  # A's recorded noise
    assert whole.counts() == {"identical": 3, "only in A": len(known["runs"]) - 3}
    assert whole.parameters == [] and whole.verdicts == {} and whole.identical_files == {"runs.csv": False}
    common = compare_folders(table, a, common=True)
    assert common.counts() == {"identical": 3} and common.agrees and common.identical_files == {}
    assert main([str(table), str(a), "--common"]) == 0
    report = capsys.readouterr().out
    assert "runs: 3 identical" in report and "laws and verdicts: not compared" in report
    shifted = part.copy()
    shifted["validation_loss"] = [repr(float(v) * (1 + 4 * known["tolerance"])) for v in shifted["validation_loss"]]
    shifted.to_csv(table, index=False)
    assert compare_folders(a, table, common=True).counts() == {"beyond noise": 3}


def test_law_parameters_and_verdicts_are_compared(pair):
    a, b, _ = pair
    comparison = compare_folders(a, b)
    moved = [p for p in comparison.parameters if not p.identical]
    assert [(p.law, p.parameter) for p in moved] == [("learning_rate", "b")]
    assert moved[0].b_inside_a_interval is False and moved[0].a_inside_b_interval is False
    assert moved[0].consistent is False and moved[0].difference_z < 0  # moved 1.0 above A's upper edge
    tests = comparison.interval_tests()
    assert tests["b_outside_a_interval"] == tests["a_outside_b_interval"] == tests["inconsistent"] == 1
    tested = [p for p in comparison.parameters if p.difference_z is not None]
    assert tests["parameters"] == len(tested) > 1
    assert tests["a_outside_b_interval_expected"] == pytest.approx(sum(p.chance_a_outside_b for p in tested))
    assert tests["inconsistent_expected"] == pytest.approx(0.1 * len(tested))  # the pair's laws say 90%
    assert comparison.changed_verdicts == ["claim_2"]
    assert not comparison.agrees


def test_files_identical_apart_from_clock_readings(pair, tmp_path):
    a, b, _ = pair
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    runs = pd.read_csv(copy / "runs.csv", dtype=str, keep_default_na=False)
    runs["wall_time_s"] = "1.5"  # a clock reading: allowed to differ
    runs.to_csv(copy / "runs.csv", index=False)
    laws = json.loads((copy / "laws.json").read_text())
    laws["provenance"]["created_utc"] = "2030-01-01T00:00:00+00:00"
    (copy / "laws.json").write_text(json.dumps(laws))
    assert compare_folders(a, copy).identical_files == {"runs.csv": True, "laws.json": True}
    assert compare_folders(a, b).identical_files == {"runs.csv": False, "laws.json": False}


def test_a_json_path_that_cannot_be_written_is_a_clear_error(pair, tmp_path, capsys):
    a, b, _ = pair
    (tmp_path / "a-file").write_text("not a folder")
    assert main([str(a), str(b), "--json", str(tmp_path / "a-file" / "comparison.json")]) == 2
    assert f"cannot write --json {tmp_path / 'a-file' / 'comparison.json'}" in capsys.readouterr().err


def test_command_line_exit_status_and_json(pair, tmp_path, capsys):
    a, b, known = pair
    assert main([str(a), str(a)]) == 0
    assert "agree within noise: yes" in capsys.readouterr().out
    assert main([str(a), str(b), "--json", str(tmp_path / "comparison.json")]) == 1
    record = json.loads((tmp_path / "comparison.json").read_text())
    assert record["agrees"] is False and record["counts"]["beyond noise"] == 1
    runs = (b / "runs.csv").read_text().splitlines()
    column = runs[0].split(",").index("validation_loss")
    cells = runs[1].split(",")
    cells[column] = "nan?"
    (b / "runs.csv").write_text("\n".join([runs[0], ",".join(cells), *runs[2:]]))
    assert main([str(a), str(b)]) == 2
    assert "row 2, column validation_loss: 'nan?' is not a number" in capsys.readouterr().err
    shutil.rmtree(b)
    assert main([str(a), str(b)]) == 2
    assert "laws.json: missing" in capsys.readouterr().err


def _laws(parameters: dict, intervals: dict, confidence: float = 0.95) -> dict:
    return {"config": {"confidence_level": confidence},
            "laws": {"law": {"parameters": parameters, "intervals": intervals}}}


def test_joint_standard_error_and_chance_of_a_miss_against_a_simulation():
    """Two normal estimates of one value with standard errors 0.1 and 0.05 and symmetric 95% intervals: the
    difference in joint standard errors is computed by hand; the chance that one falls outside the other's
    interval is counted over simulated pairs."""
    z = float(stats.norm.ppf(0.975))
    s_a, s_b = 0.1, 0.05
    a, b = 1.0, 1.12
    comparison = compare_laws(
        _laws({"x": a}, {"x": [a - z * s_a, a + z * s_a]}),
        _laws({"x": b}, {"x": [b - z * s_b, b + z * s_b]}),
    )
    (parameter,) = comparison
    assert parameter.difference_z == pytest.approx((a - b) / math.sqrt(s_a**2 + s_b**2))
    assert parameter.consistent is True  # -1.07 joint standard errors
    assert parameter.a_inside_b_interval is False  # 0.12 > 1.96 x 0.05
    rng = np.random.default_rng(0)
    draws_a, draws_b = rng.normal(0.0, s_a, 200_000), rng.normal(0.0, s_b, 200_000)
    a_outside_b = np.mean(np.abs(draws_a - draws_b) > z * s_b)
    b_outside_a = np.mean(np.abs(draws_b - draws_a) > z * s_a)
    assert parameter.chance_a_outside_b == pytest.approx(a_outside_b, abs=0.005)
    assert parameter.chance_b_outside_a == pytest.approx(b_outside_a, abs=0.005)
    # equal widths: a calibrated 95% interval misses the other estimate about one time in six
    (equal,) = compare_laws(_laws({"x": 0.0}, {"x": [-z, z]}), _laws({"x": 0.5}, {"x": [0.5 - z, 0.5 + z]}))
    assert equal.chance_a_outside_b == pytest.approx(np.mean(np.abs(rng.normal(0, 1, 200_000) - rng.normal(0, 1, 200_000)) > z),
                                                     abs=0.005)


def test_joint_standard_error_reads_the_interval_side_that_faces_the_other_value():
    z = float(stats.norm.ppf(0.975))
    # A's interval is wide above and narrow below; B lies above A, so A's upper side counts, and B's lower side
    (above,) = compare_laws(_laws({"x": 1.0}, {"x": [0.9, 1.0 + 4 * z]}), _laws({"x": 2.0}, {"x": [2.0 - 3 * z, 2.1]}))
    assert above.difference_z == pytest.approx(-1.0 / 5.0)
    (below,) = compare_laws(_laws({"x": 1.0}, {"x": [1.0 - 0.3 * z, 9.0]}), _laws({"x": 0.0}, {"x": [-5.0, 0.4 * z]}))
    assert below.difference_z == pytest.approx(1.0 / 0.5)
    assert below.consistent is False


def test_parameters_without_an_interval_in_either_folder_are_not_tested():
    (parameter,) = compare_laws(_laws({"x": 1.0}, {"x": [0.5, 1.5]}), _laws({"x": 1.2}, {}))
    assert parameter.difference_z is None and parameter.consistent is None and parameter.chance_a_outside_b is None
    (outside_own,) = compare_laws(_laws({"x": 1.0}, {"x": [1.1, 1.5]}), _laws({"x": 1.2}, {"x": [1.0, 1.4]}))
    assert outside_own.difference_z is None and outside_own.b_inside_a_interval is True
