"""How two result folders differ: ``python -m analysis.compare RESULTS_A RESULTS_B``.

A reviewer who regenerates the reproduction compares their folder with the committed one (or two
reruns with each other). Three things are compared, each against what noise allows:

* **Runs** (``runs.csv``): every (run, token milestone) row present in both, run by run. A run is
  ``identical`` when its training and validation losses are equal as written (bit for bit),
  ``within noise`` when every validation loss differs by less than ``z * sqrt(2) * sigma``
  relative, and ``beyond noise`` otherwise. ``sigma`` is the larger of the two folders' recorded
  run-to-run relative standard deviation (``laws.json`` ``setup.noise.relative_std``); ``sqrt(2)``
  because both losses carry that noise; ``z`` the normal quantile of the confidence level (the
  fit's ``config.confidence_level``, 0.95 if absent). Runs found in one folder only are listed.
* **Laws** (``laws.json``): every fitted parameter of every law, its value in each folder and
  whether each value lies inside the other folder's interval. That test is strict for two
  estimates that both carry noise: with calibrated intervals of the same width, one value falls
  outside the other's 95% interval about one time in six. So each parameter also gets the
  difference in units of its standard error, ``(A - B) / sqrt(s_A**2 + s_B**2)``, each ``s`` read
  from its folder's interval on the side facing the other value (half-width over ``z``), and the
  chance that A's value would fall outside B's interval were both normal estimates of one value,
  ``2 (1 - Phi(z s_B / sqrt(s_A**2 + s_B**2)))``; their sum is the count of such misses to expect.
* **Verdicts** (``scorecard.json`` ``verdicts``, where present): one per claim, equal or changed.

Either side may also be a bare runs table (a ``.csv`` file, say a cut grid's ``work/analysis/grid_runs.csv``):
then only runs are compared, with the noise the other side records. ``--common`` leaves out the runs that one
side lacks (a part of a grid against the whole), and then no file is compared whole.

Finally, whether ``runs.csv`` and ``laws.json`` are identical apart from clock readings (the same cells
as written, the same JSON content): what a rerun of the same command on the same machine must give.
Clock readings (``dit.provenance.VOLATILE_KEYS``) are never compared. Exit status 0 when nothing
differs beyond noise and no verdict changed, 1 otherwise, 2 for unreadable input: a runs table that cannot be read,
a ``laws.json`` that is not a laws document (``analysis.law_set.check_laws_document``), or a ``--json`` that is a
folder, lies below a file or is one of the inputs (refused before any work).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.provenance import table_without_clocks, without_volatile

from analysis.law_set import LawsFileError, check_laws_document
from analysis.runs import run_relative_std

DEFAULT_CONFIDENCE = 0.95
LOSS_COLUMNS = ("train_loss", "validation_loss")


class CompareError(ValueError):
    """A results folder lacks a file the comparison needs, or holds an unreadable one; the message names it."""


@dataclass
class RunDifference:
    """How one run differs between the folders (relative differences are ``|a - b| / b``, fractions)."""

    run_id: str
    status: str  # identical | within noise | beyond noise | status differs | only in A | only in B
    milestones: int = 0
    max_relative_validation_difference: float = 0.0
    max_relative_train_difference: float = 0.0


@dataclass
class ParameterDifference:
    law: str
    parameter: str
    value_a: float | None
    value_b: float | None
    identical: bool
    a_inside_b_interval: bool | None
    b_inside_a_interval: bool | None
    #: (A - B) / sqrt(s_A**2 + s_B**2), standard errors from the intervals (module docstring); None without both intervals
    difference_z: float | None = None
    #: |difference_z| <= z at the confidence level: the two values agree within their joint uncertainty
    consistent: bool | None = None
    #: the chance that A would fall outside B's interval (and B outside A's) if both estimated one value
    chance_a_outside_b: float | None = None
    chance_b_outside_a: float | None = None


@dataclass
class Comparison:
    folder_a: str
    folder_b: str
    noise_relative_std: float | None
    confidence_level: float
    tolerance_relative: float | None
    runs: list[RunDifference] = field(default_factory=list)
    parameters: list[ParameterDifference] = field(default_factory=list)
    verdicts: dict[str, list[str | None]] = field(default_factory=dict)
    #: file -> whether the two folders' copies are identical apart from clock readings
    identical_files: dict[str, bool] = field(default_factory=dict)
    #: False when a side is a bare runs table: laws and verdicts were not compared
    laws_compared: bool = True

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    def interval_tests(self) -> dict[str, float | int]:
        """Over the parameters with a value and an interval in both folders: how many values fall outside the
        other folder's interval, how many such misses calibrated intervals would give (the sum of the chances),
        and how many differences exceed z joint standard errors."""
        tested = [p for p in self.parameters if p.difference_z is not None]
        return {
            "parameters": len(tested),
            "a_outside_b_interval": sum(p.a_inside_b_interval is False for p in tested),
            "a_outside_b_interval_expected": sum(p.chance_a_outside_b for p in tested),
            "b_outside_a_interval": sum(p.b_inside_a_interval is False for p in tested),
            "b_outside_a_interval_expected": sum(p.chance_b_outside_a for p in tested),
            "inconsistent": sum(not p.consistent for p in tested),
            "inconsistent_expected": (1.0 - self.confidence_level) * len(tested),
        }

    @property
    def changed_verdicts(self) -> list[str]:
        return [claim for claim, (a, b) in self.verdicts.items() if a != b]

    @property
    def agrees(self) -> bool:
        """True when every run is identical or within noise and no verdict changed."""
        return all(run.status in ("identical", "within noise") for run in self.runs) and not self.changed_verdicts

    def to_dict(self) -> dict:
        record = asdict(self)
        record["counts"] = self.counts()
        record["changed_verdicts"] = self.changed_verdicts
        record["interval_tests"] = self.interval_tests()
        record["agrees"] = self.agrees
        return record


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareError(f"{path}: missing (is {path.parent} a results folder?)") from None
    except (OSError, ValueError) as error:
        raise CompareError(f"{path}: cannot be read as JSON ({error})") from None


def _read_laws(path: Path) -> dict:
    """A results folder's laws file, refused (``CompareError``) as ``analysis.law_set.check_laws_document`` refuses it."""
    try:
        return check_laws_document(_read_json(path), path)
    except LawsFileError as error:
        raise CompareError(str(error)) from None


def _is_table(source: Path) -> bool:
    """Whether ``source`` is a bare runs table (a ``.csv`` file) rather than a results folder."""
    return source.suffix == ".csv"


def _runs_path(source: Path) -> Path:
    """A results folder's runs table, or ``source`` itself when it is a table."""
    return source if _is_table(source) else source / "runs.csv"


def _read_runs(source: Path) -> pd.DataFrame:
    path = _runs_path(source)
    folder = path.parent
    try:
        # losses as the text written: "identical" means the same digits, so the same float64 bits
        frame = pd.read_csv(path, dtype={column: str for column in LOSS_COLUMNS}, keep_default_na=False)
    except FileNotFoundError:
        raise CompareError(f"{path}: missing (is {folder} a results folder?)") from None
    except (OSError, ValueError) as error:
        raise CompareError(f"{path}: cannot be read as a runs table ({error})") from None
    missing = [c for c in ("run_id", "status", "milestone_tokens", *LOSS_COLUMNS) if c not in frame.columns]
    if missing:
        raise CompareError(f"{path}: missing columns {', '.join(missing)}")
    for column in (*LOSS_COLUMNS, "milestone_tokens"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & (frame[column] != "")
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise CompareError(f"{path}: row {row + 2}, column {column}: {frame[column].iloc[row]!r} is not a number")
        if column == "milestone_tokens":
            # as numbers (a run that diverged before its first milestone has an empty cell, NaN here): in order,
            # and equal whether the table had such a cell (read as text) or not
            frame[column] = numbers.astype(float)
    return frame


def _noise(laws: dict) -> float | None:
    """One run's relative std: validation losses are compared run by run."""
    return run_relative_std(laws.get("setup", {}).get("noise"))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b| / |b|`` over the milestones where both are numbers (empty cells are NaN, skipped)."""
    differences = np.abs(a - b) / np.abs(b)
    differences = differences[~np.isnan(differences)]
    return float(differences.max()) if differences.size else 0.0


def _by_run(runs: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Each run's rows in milestone order: its milestones, statuses, and each loss column as text and as numbers.

    One pass over the table: a mask per run would scan the whole table once per run."""
    ordered = runs.sort_values(["run_id", "milestone_tokens"], kind="stable")
    columns = {"milestone_tokens": ordered["milestone_tokens"].to_numpy(), "status": ordered["status"].to_numpy()}
    for column in LOSS_COLUMNS:
        columns[column] = ordered[column].to_numpy()
        columns[f"{column} value"] = pd.to_numeric(ordered[column].replace("", None)).to_numpy(float)
    ids = ordered["run_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.empty(0, int)
    ends = np.r_[starts[1:], len(ids)]
    return {ids[i]: {name: values[i:j] for name, values in columns.items()} for i, j in zip(starts, ends)}


def compare_runs(runs_a: pd.DataFrame, runs_b: pd.DataFrame, tolerance: float | None,
                 common: bool = False) -> list[RunDifference]:
    """Run-by-run differences; ``tolerance`` is the relative validation-loss difference noise allows; ``common``:
    only the runs both tables hold."""
    result = []
    by_run_a, by_run_b = _by_run(runs_a), _by_run(runs_b)
    run_ids = by_run_a.keys() & by_run_b.keys() if common else by_run_a.keys() | by_run_b.keys()
    for run_id in sorted(run_ids):
        if run_id not in by_run_b or run_id not in by_run_a:
            result.append(RunDifference(run_id, "only in A" if run_id in by_run_a else "only in B"))
            continue
        a, b = by_run_a[run_id], by_run_b[run_id]
        if set(a["status"]) != set(b["status"]) or not np.array_equal(a["milestone_tokens"], b["milestone_tokens"], equal_nan=True):
            result.append(RunDifference(run_id, "status differs", len(a["status"])))
            continue
        validation = _relative(a["validation_loss value"], b["validation_loss value"])
        train = _relative(a["train_loss value"], b["train_loss value"])
        same = all(np.array_equal(a[c], b[c]) for c in LOSS_COLUMNS)
        if same:
            status = "identical"
        elif tolerance is not None and validation <= tolerance:
            status = "within noise"
        else:
            status = "beyond noise"
        result.append(RunDifference(run_id, status, len(a["status"]), validation, train))
    return result


def _inside(value: float | None, interval) -> bool | None:
    if value is None or not isinstance(interval, (list, tuple)) or len(interval) != 2 or None in interval:
        return None
    return bool(interval[0] <= value <= interval[1])


def _standard_error_toward(value: float, interval, other: float, z: float) -> float | None:
    """``value``'s standard error read from its ``interval`` on the side that faces ``other`` (half-width over ``z``);
    None without an interval, or when the value lies outside its own interval (no side to read)."""
    if not _inside(value, interval):
        return None
    edge = interval[1] if other >= value else interval[0]
    return abs(edge - value) / z


def _joint(value_a, value_b, interval_a, interval_b, z: float) -> tuple:
    """(difference_z, consistent, chance A outside B's interval, chance B outside A's) for one parameter."""
    if value_a is None or value_b is None:
        return None, None, None, None
    s_a = _standard_error_toward(value_a, interval_a, value_b, z)
    s_b = _standard_error_toward(value_b, interval_b, value_a, z)
    if s_a is None or s_b is None:
        return None, None, None, None
    joint = math.hypot(s_a, s_b)
    if joint == 0.0:
        same = value_a == value_b
        return (0.0 if same else math.copysign(math.inf, value_a - value_b)), same, 0.0, 0.0
    difference = (value_a - value_b) / joint
    outside_b = float(2.0 * stats.norm.sf(z * s_b / joint))
    outside_a = float(2.0 * stats.norm.sf(z * s_a / joint))
    return float(difference), bool(abs(difference) <= z), outside_b, outside_a


def compare_laws(laws_a: dict, laws_b: dict, confidence: float = DEFAULT_CONFIDENCE) -> list[ParameterDifference]:
    """Every fitted parameter of every law present in either folder; ``confidence``: the intervals' level."""
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    result = []
    fitted_a, fitted_b = laws_a.get("laws", {}), laws_b.get("laws", {})
    for law in sorted(set(fitted_a) | set(fitted_b)):
        law_a, law_b = fitted_a.get(law, {}), fitted_b.get(law, {})
        parameters_a, parameters_b = law_a.get("parameters") or {}, law_b.get("parameters") or {}
        for name in sorted(set(parameters_a) | set(parameters_b)):
            value_a, value_b = parameters_a.get(name), parameters_b.get(name)
            interval_a, interval_b = (law_a.get("intervals") or {}).get(name), (law_b.get("intervals") or {}).get(name)
            result.append(ParameterDifference(
                law, name, value_a, value_b, value_a == value_b,
                _inside(value_a, interval_b), _inside(value_b, interval_a),
                *_joint(value_a, value_b, interval_a, interval_b, z),
            ))
    return result


def compare_verdicts(folder_a: Path, folder_b: Path) -> dict[str, list[str | None]]:
    """Claim -> [verdict in A, verdict in B], from each folder's ``scorecard.json`` (empty if neither has one)."""
    verdicts = []
    for folder in (folder_a, folder_b):
        path = folder / "scorecard.json"
        verdicts.append(_read_json(path).get("verdicts", {}) if path.exists() else {})
    return {claim: [verdicts[0].get(claim), verdicts[1].get(claim)] for claim in sorted(set(verdicts[0]) | set(verdicts[1]))}


def compare_folders(folder_a: str | Path, folder_b: str | Path, common: bool = False) -> Comparison:
    """Compare two results folders (each with ``runs.csv`` and ``laws.json``), or runs tables (module docstring)."""
    folder_a, folder_b = Path(folder_a), Path(folder_b)
    laws_a, laws_b = (None if _is_table(f) else _read_laws(f / "laws.json") for f in (folder_a, folder_b))
    recorded = [laws for laws in (laws_a, laws_b) if laws is not None]
    noises = [n for n in map(_noise, recorded) if n is not None]
    noise = max(noises) if noises else None
    confidence = float((recorded[0] if recorded else {}).get("config", {}).get("confidence_level", DEFAULT_CONFIDENCE))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    tolerance = z * math.sqrt(2.0) * noise if noise is not None else None
    comparison = Comparison(str(folder_a), str(folder_b), noise, confidence, tolerance,
                            laws_compared=laws_a is not None and laws_b is not None)
    comparison.runs = compare_runs(_read_runs(folder_a), _read_runs(folder_b), tolerance, common)
    if not common:  # a part against the whole: no file is the other's
        comparison.identical_files["runs.csv"] = (table_without_clocks(_runs_path(folder_a))
                                                  == table_without_clocks(_runs_path(folder_b)))
    if comparison.laws_compared:
        comparison.parameters = compare_laws(laws_a, laws_b, confidence)
        comparison.verdicts = compare_verdicts(folder_a, folder_b)
        if not common:
            comparison.identical_files["laws.json"] = _canonical(laws_a) == _canonical(laws_b)
    return comparison


def _canonical(document: dict) -> str:
    """The JSON document without clock readings, with sorted keys: equal text means equal content."""
    return json.dumps(without_volatile(document), sort_keys=True)


def render(comparison: Comparison, limit: int = 20) -> str:
    """A plain-text report: counts, the runs that differ most, the laws' parameters, the verdicts."""
    c = comparison
    lines = [f"A: {c.folder_a}", f"B: {c.folder_b}"]
    if c.tolerance_relative is None:
        lines.append("run-to-run noise: not recorded in either laws.json, so no difference counts as within noise")
    else:
        lines.append(
            f"run-to-run noise: relative std {c.noise_relative_std:.4g}; a validation loss differs within noise "
            f"when |A - B| / B <= {c.tolerance_relative:.4g} (z = {c.tolerance_relative / math.sqrt(2) / c.noise_relative_std:.3g} "
            f"at confidence {c.confidence_level:g}, times sqrt 2)"
        )
    counts = c.counts()
    lines.append("runs: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    differing = sorted((r for r in c.runs if r.status != "identical"), key=lambda r: -r.max_relative_validation_difference)
    for run in differing[:limit]:
        lines.append(f"  {run.run_id}: {run.status}, validation loss differs by up to "
                     f"{run.max_relative_validation_difference:.3g} relative over {run.milestones} milestones")
    if len(differing) > limit:
        lines.append(f"  ... and {len(differing) - limit} more (--json has them all)")
    if not c.laws_compared:
        lines.append("laws and verdicts: not compared (a side is a bare runs table)")
    unequal = [p for p in c.parameters if not p.identical]
    if c.laws_compared:
        lines.append(f"law parameters: {len(c.parameters) - len(unequal)} of {len(c.parameters)} identical")
    for p in unequal:
        joint = "" if p.difference_z is None else (
            f"; (A - B) / joint standard error {p.difference_z:+.2f}, {'consistent' if p.consistent else 'inconsistent'}")
        lines.append(f"  {p.law}.{p.parameter}: A {p.value_a!r}, B {p.value_b!r}; A inside B's interval: "
                     f"{_yes_no(p.a_inside_b_interval)}, B inside A's: {_yes_no(p.b_inside_a_interval)}{joint}")
    tests = c.interval_tests()
    if tests["parameters"]:
        lines.append(
            f"interval tests over {tests['parameters']} parameters with intervals in both folders: "
            f"A outside B's interval {tests['a_outside_b_interval']} (calibrated intervals would give "
            f"{tests['a_outside_b_interval_expected']:.2f}), B outside A's {tests['b_outside_a_interval']} "
            f"({tests['b_outside_a_interval_expected']:.2f}); differences beyond z joint standard errors "
            f"{tests['inconsistent']} ({tests['inconsistent_expected']:.2f})"
        )
    if not c.verdicts and c.laws_compared:
        lines.append("verdicts: neither folder has scorecard.json")
    for claim, (a, b) in c.verdicts.items():
        lines.append(f"verdict {claim}: {a} -> {b}" if a != b else f"verdict {claim}: {a} (same)")
    for name, same in c.identical_files.items():
        lines.append(f"{name} identical apart from clock readings: {'yes' if same else 'no'}")
    lines.append("agree within noise: " + ("yes" if c.agrees else "no"))
    return "\n".join(lines)


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.compare",
        description="Report run by run, law by law and verdict by verdict how two results folders differ, "
        "and whether the differences are within the recorded run-to-run noise.",
    )
    parser.add_argument("results_a", type=Path, help="a results folder (runs.csv, laws.json), or a runs table (.csv)")
    parser.add_argument("results_b", type=Path, help="another results folder, or a runs table (.csv)")
    parser.add_argument("--common", action="store_true", help="compare only the runs both sides hold")
    parser.add_argument("--json", type=Path, default=None, help="also write the whole comparison here")
    parser.add_argument("--limit", type=int, default=20, help="differing runs listed in the text report")
    args = parser.parse_args(argv)
    inputs = [path for side in (args.results_a, args.results_b) for path in (
        [side] if _is_table(side) else [side / "runs.csv", side / "laws.json", side / "scorecard.json"])]
    try:
        check_output_files([args.json], inputs)
    except OutputPathError as error:
        print(f"analysis.compare: cannot write --json {args.json}: {error}", file=sys.stderr)
        return 2
    try:
        comparison = compare_folders(args.results_a, args.results_b, common=args.common)
    except CompareError as error:
        print(f"analysis.compare: {error}", file=sys.stderr)
        return 2
    print(render(comparison, limit=args.limit))
    if args.json is not None:
        try:
            atomic_write_json(args.json, comparison.to_dict())
        except OSError as error:
            print(f"analysis.compare: cannot write --json {args.json}: {error.strerror or error}", file=sys.stderr)
            return 2
    return 0 if comparison.agrees else 1


if __name__ == "__main__":
    sys.exit(main())
