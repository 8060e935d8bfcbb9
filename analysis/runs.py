"""The runs table: loading, validation, exclusions and losses at common token budgets.

One row per (run, token milestone); the columns are fixed by the project's contract (``COLUMNS``).
Validation names the bad column and row (0-based data row; for CSV also the file line). Runs that
diverged or failed stay in the table with their reason recorded (``RunsTable.exclusions``). A fitting grid
cell counts a replicate that diverged at the budgets it reached before (``analysis.selection``); every
other use takes completed runs only.

Token budgets: milestones are reached at whole optimizer steps, so runs with different batch sizes
reach a nominal budget at slightly different token counts. Each run's loss is interpolated to the
common budget T log-log (linear in ``log loss`` vs ``log tokens``) between its milestones; a budget
up to ``tolerance`` (relative) outside the run's first/last milestone is extrapolated along the
nearest segment; further out the loss is missing (NaN). The default budgets are the grid's
milestones, clustered within ``tolerance`` and represented by the smallest token count in each
cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.formats import RUN_COLUMNS as WRITTEN_RUN_COLUMNS
from pipeline.formats import RUNS_TABLE_COLUMNS as WRITTEN_COLUMNS
from pipeline.formats import SERIES

STATUSES = ("completed", "diverged", "failed")
#: Two learning rates are the same cell's when they agree to this relative tolerance (CSV and YAML keep 15+ digits;
#: a grid's learning rates differ by much larger factors).
LEARNING_RATE_RTOL = 1e-6

#: Column -> kind. ``text``: non-empty string; ``text?``: string, may be empty; ``int``/``float``: numbers.
COLUMNS: dict[str, str] = {
    "run_id": "text",
    "series": "text",
    "status": "text",
    "status_reason": "text?",
    "size": "text",
    "non_embedding_parameters": "int",
    "width": "int",
    "depth": "int",
    "heads": "int",
    "tokens_per_clip": "int",
    "batch_clips": "int",
    "batch_tokens": "int",
    "learning_rate": "float",
    "seed": "int",
    "validation_weights": "text",
    "step": "int",
    "tokens": "int",
    "flops": "float",
    "flops_6n": "float",
    "train_loss": "float",
    "validation_loss": "float",
}
assert set(COLUMNS) <= set(WRITTEN_COLUMNS), "analysis reads a column the runs table (pipeline.formats) does not have"

#: Columns that describe the run (identical on all of its rows), as ``pipeline.collect`` writes them.
RUN_COLUMNS = tuple(column for column in WRITTEN_RUN_COLUMNS if column != "run_id")

#: Numeric columns that must be positive on every row.
POSITIVE = ("non_embedding_parameters", "width", "depth", "heads", "tokens_per_clip", "batch_clips", "batch_tokens", "learning_rate")
#: Numeric columns of a milestone: may be NaN only on the placeholder row of a run that reached none.
MILESTONE = ("step", "tokens", "flops", "flops_6n", "train_loss", "validation_loss")
LOSS_COLUMNS = ("validation_loss", "train_loss")


class RunsTableError(ValueError):
    """The runs table is unreadable or violates the contract; the message names column and row."""


def _where(source: str, index: int, frame: pd.DataFrame, csv: bool) -> str:
    run_id = frame["run_id"].iloc[index] if "run_id" in frame.columns else "?"
    line = f", CSV line {index + 2}" if csv else ""
    return f"{source}: row {index}{line} (run_id {run_id!r})"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (by suffix) without validating it."""
    path = Path(path)
    if not path.exists():
        raise RunsTableError(f"runs table {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - reported with the file name
        raise RunsTableError(f"runs table {path} cannot be read: {error}") from None
    raise RunsTableError(f"runs table {path}: unknown format {suffix!r}; use .csv or .parquet")


def load_runs(path: str | Path) -> "RunsTable":
    """Read and validate a runs table (CSV or Parquet)."""
    path = Path(path)
    frame = read_table(path)
    return RunsTable(validate_runs(frame, source=str(path), csv=path.suffix.lower() == ".csv"), source=str(path))


def _numbers(frame: pd.DataFrame, column: str, source: str, csv: bool) -> pd.Series:
    raw = frame[column]
    text = raw.astype(str).str.strip()
    missing = raw.isna() | text.str.lower().isin(["", "nan", "none", "null", "<na>"])
    values = pd.to_numeric(text.where(~missing), errors="coerce")
    bad = ~missing & values.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise RunsTableError(f"{_where(source, i, frame, csv)}: column {column!r}: {raw.iloc[i]!r} is not a number")
    return values.astype(float)


def validate_runs(frame: pd.DataFrame, source: str = "runs table", csv: bool = False) -> pd.DataFrame:
    """Check every contract rule; return a typed copy (text columns str, numeric columns float).

    Raises ``RunsTableError`` naming the first bad column and row.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise RunsTableError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)}; present: {', '.join(map(str, frame.columns))}"
        )
    if len(frame) == 0:
        raise RunsTableError(f"{source}: the table has no rows")
    frame = frame.reset_index(drop=True)
    out = _typed(frame, source, csv)
    where = partial(_where, source, frame=frame, csv=csv)  # where(i): the message prefix of row i
    _check_values(out, frame, where)
    _check_milestones(out, where)
    _check_runs(out, where)
    return out


def _typed(frame: pd.DataFrame, source: str, csv: bool) -> pd.DataFrame:
    """Text columns stripped (required ones non-empty), numeric columns as floats."""
    out = pd.DataFrame(index=frame.index)
    for column, kind in COLUMNS.items():
        if kind.startswith("text"):
            values = frame[column].astype(object).where(frame[column].notna(), "")
            values = values.map(lambda v: str(v).strip())
            if kind == "text":
                empty = (values == "") | values.str.lower().isin(["nan", "none"])
                if empty.any():
                    i = int(np.flatnonzero(empty.to_numpy())[0])
                    raise RunsTableError(f"{_where(source, i, frame, csv)}: column {column!r} is empty")
            else:
                values = values.where(~values.str.lower().isin(["nan", "none"]), "")
            out[column] = values
        else:
            out[column] = _numbers(frame, column, source, csv)

    return out


def _check_values(out: pd.DataFrame, frame: pd.DataFrame, where) -> None:
    """Allowed series and statuses, positive and whole numbers, and batch_tokens = batch_clips x tokens_per_clip."""
    for column, allowed in (("series", SERIES), ("status", STATUSES)):
        bad = ~out[column].isin(allowed)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunsTableError(
                f"{where(i)}: column {column!r}: {out[column].iloc[i]!r} is not one of {', '.join(allowed)}"
            )
    for column in POSITIVE:
        values = out[column]
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunsTableError(
                f"{where(i)}: column {column!r}: {frame[column].iloc[i]!r} must be a positive number"
            )
    for column, kind in COLUMNS.items():
        if kind != "int":
            continue
        values = out[column]
        bad = np.isfinite(values) & (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunsTableError(f"{where(i)}: column {column!r}: {frame[column].iloc[i]!r} is not a whole number")
    mismatch = out["batch_tokens"] != out["batch_clips"] * out["tokens_per_clip"]
    if mismatch.any():
        i = int(np.flatnonzero(mismatch.to_numpy())[0])
        raise RunsTableError(
            f"{where(i)}: column 'batch_tokens': {out['batch_tokens'].iloc[i]:.0f} != batch_clips x tokens_per_clip "
            f"= {out['batch_clips'].iloc[i]:.0f} x {out['tokens_per_clip'].iloc[i]:.0f}"
        )



def _check_milestones(out: pd.DataFrame, where) -> None:
    """Completed runs have every milestone value, none negative, and positive tokens, FLOPs and loss."""
    completed = (out["status"] == "completed").to_numpy()
    for column in MILESTONE:
        values = out[column].to_numpy()
        bad = completed & ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RunsTableError(
                f"{where(i)}: column {column!r} is missing or not finite, which is allowed only for "
                f"runs whose status is not 'completed' (this run is completed)"
            )
        negative = np.isfinite(values) & (values < 0)
        if negative.any():
            i = int(np.flatnonzero(negative)[0])
            raise RunsTableError(f"{where(i)}: column {column!r}: {values[i]} is negative")
    for column in ("tokens", "flops", "flops_6n", "validation_loss"):
        values = out[column].to_numpy()
        bad = completed & (values <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RunsTableError(f"{where(i)}: column {column!r}: {values[i]} must be positive for a completed run")



def _check_runs(out: pd.DataFrame, where) -> None:
    """A run's own columns are the same on all its rows, and no milestone appears twice."""
    for column in RUN_COLUMNS:
        per_run = out.groupby("run_id", sort=False)[column].nunique(dropna=False)
        varying = per_run[per_run > 1]
        if len(varying):
            run_id = varying.index[0]
            rows = np.flatnonzero((out["run_id"] == run_id).to_numpy())
            values = out[column].iloc[rows]
            first_other = int(rows[np.flatnonzero((values != values.iloc[0]).to_numpy())[0]])
            raise RunsTableError(
                f"{where(first_other)}: column {column!r}: {values.loc[first_other]!r} differs from "
                f"{values.iloc[0]!r} on row {rows[0]} of the same run (a run's {column} must be the same on all its rows)"
            )
    duplicated = out.duplicated(subset=["run_id", "tokens"], keep="first") & np.isfinite(out["tokens"])
    if duplicated.any():
        i = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise RunsTableError(f"{where(i)}: column 'tokens': milestone {out['tokens'].iloc[i]:.0f} appears twice for this run")


def same_learning_rate(values, learning_rate) -> np.ndarray:
    """Whether each of ``values`` is ``learning_rate`` (``LEARNING_RATE_RTOL``): the one test of "same learning rate"."""
    return np.isclose(np.asarray(values, dtype=float), float(learning_rate), rtol=LEARNING_RATE_RTOL, atol=0.0)


# ----------------------------------------------------------------------------------------------
def interpolate_loglog(tokens: np.ndarray, losses: np.ndarray, budgets: np.ndarray, tolerance: float) -> np.ndarray:
    """Loss at each budget by log-log interpolation between milestones (see module docstring)."""
    order = np.argsort(tokens)
    tokens = np.asarray(tokens, dtype=float)[order]
    losses = np.asarray(losses, dtype=float)[order]
    keep = np.isfinite(tokens) & np.isfinite(losses) & (tokens > 0) & (losses > 0)
    tokens, losses = tokens[keep], losses[keep]
    budgets = np.asarray(budgets, dtype=float)
    result = np.full(budgets.shape, np.nan)
    if tokens.size == 0:
        return result
    x, y, target = np.log(tokens), np.log(losses), np.log(budgets)
    inside = (budgets >= tokens[0]) & (budgets <= tokens[-1])
    result[inside] = np.exp(np.interp(target[inside], x, y))
    slack = np.log1p(tolerance)
    below = (target < x[0]) & (target >= x[0] - slack)
    above = (target > x[-1]) & (target <= x[-1] + slack)
    if tokens.size >= 2:
        first = (y[1] - y[0]) / (x[1] - x[0])
        last = (y[-1] - y[-2]) / (x[-1] - x[-2])
    else:
        first = last = 0.0
    result[below] = np.exp(y[0] + first * (target[below] - x[0]))
    result[above] = np.exp(y[-1] + last * (target[above] - x[-1]))
    return result


def cluster_budgets(tokens: Iterable[float], tolerance: float) -> list[float]:
    """Group token counts that lie within ``tolerance`` (relative) of a group's smallest; return each group's smallest."""
    values = sorted(float(t) for t in tokens if np.isfinite(t) and t > 0)
    budgets: list[float] = []
    for value in values:
        if not budgets or value > budgets[-1] * (1 + tolerance):
            budgets.append(value)
    return budgets


@dataclass
class RunsTable:
    """A validated runs table (``rows``) and where it came from."""

    rows: pd.DataFrame
    source: str = "runs table"

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str = "runs table") -> "RunsTable":
        return cls(validate_runs(frame, source=source), source=source)

    def runs(self) -> pd.DataFrame:
        """One row per run: the run columns plus ``milestones`` and ``max_tokens``; indexed by run_id (a copy)."""
        return self._runs.copy()

    @cached_property
    def _runs(self) -> pd.DataFrame:
        grouped = self.rows.groupby("run_id", sort=False)
        frame = grouped[list(RUN_COLUMNS)].first()
        # a run that reached no milestone has one placeholder row (tokens 0 from dit.run_folder, or empty)
        frame["milestones"] = (self.rows["tokens"] > 0).groupby(self.rows["run_id"], sort=False).sum()
        frame["max_tokens"] = grouped["tokens"].max()
        return frame

    def exclusions(self) -> list[dict]:
        """Runs kept in the table but excluded from fits: diverged and failed, with their reasons."""
        runs = self.runs()
        excluded = runs[runs["status"] != "completed"]
        return [
            {
                "run_id": run_id,
                "series": row["series"],
                "size": row["size"],
                "status": row["status"],
                "reason": f"{row['status']}: {row['status_reason'] or 'no reason recorded'}",
                "milestones_reached": int(row["milestones"]),
            }
            for run_id, row in excluded.iterrows()
        ]

    def completed(self, series: Sequence[str] | None = None, sizes: Sequence[str] | None = None) -> pd.DataFrame:
        runs = self.runs()
        mask = runs["status"] == "completed"
        if series is not None:
            mask &= runs["series"].isin(series)
        if sizes is not None:
            mask &= runs["size"].isin(sizes)
        return runs[mask]

    @cached_property
    def _rows_by_run(self) -> dict[str, pd.DataFrame]:
        """Each run's rows, by increasing tokens (the table is validated once and not changed after)."""
        return {run_id: rows.sort_values("tokens") for run_id, rows in self.rows.groupby("run_id", sort=False)}

    def curve(self, run_id: str, column: str = "validation_loss") -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows_by_run[run_id]
        return rows["tokens"].to_numpy(float), rows[column].to_numpy(float)

    def loss_matrix(self, run_ids: Sequence[str], budgets: Sequence[float], column: str, tolerance: float) -> np.ndarray:
        """``(runs, budgets)`` losses interpolated to the budgets (NaN where a run does not reach one)."""
        budgets = np.asarray(budgets, dtype=float)
        matrix = np.full((len(run_ids), budgets.size), np.nan)
        for i, run_id in enumerate(run_ids):
            matrix[i] = interpolate_loglog(*self.curve(run_id, column), budgets, tolerance)
        return matrix

    def flops_per_token(self, run_ids: Sequence[str], convention: str) -> np.ndarray:
        """Measured training FLOPs per token of each run (``flops/tokens`` or ``flops_6n/tokens``; median over milestones)."""
        column = "flops" if convention == "paper" else "flops_6n"
        rows = self.rows[self.rows["tokens"] > 0]
        ratio = (rows[column] / rows["tokens"]).groupby(rows["run_id"]).median()
        return ratio.reindex(list(run_ids)).to_numpy(float)

    def default_budgets(self, tolerance: float, sizes: Sequence[str] | None = None) -> list[float]:
        """The grid's milestones (completed grid runs, optionally of ``sizes``), clustered (module docstring)."""
        runs = self.completed(series=["grid"], sizes=sizes)
        rows = self.rows[self.rows["run_id"].isin(runs.index)]
        return cluster_budgets(rows["tokens"], tolerance)


def run_to_run_noise(table: RunsTable, budgets: Sequence[float], column: str, tolerance: float) -> dict | None:
    """Relative run-to-run standard deviation of the loss from the noise-floor seeds (series ``noise``).

    Runs are grouped by (size, batch_clips, learning_rate): the ``noise`` seeds of a cell together
    with the grid (or conventional) run of the same cell, which is one more seed; groups of at least
    two distinct seeds give a relative standard deviation (ddof=1) per budget; the pooled value is
    the root mean of the relative variances. ``None`` when no group has two completed seeds.

    ``degrees_of_freedom`` is that of the pooled estimate (:func:`effective_degrees_of_freedom`): a seed
    gives a run's whole curve, so its deviations at two budgets are correlated and the budgets are not
    independent measurements of the noise.
    """
    noise = table.completed(series=["noise"])
    if noise.empty:
        return None
    cells = set(zip(noise["size"], noise["batch_clips"], noise["learning_rate"]))
    base = table.completed(series=["grid", "conventional"])
    in_cell = [cell in cells for cell in zip(base["size"], base["batch_clips"], base["learning_rate"])]
    runs = pd.concat([noise, base[in_cell]])
    runs = runs[~runs.duplicated(subset=["size", "batch_clips", "learning_rate", "seed"], keep="first")]
    groups = [({"size": size, "batch_clips": int(batch), "learning_rate": float(rate)}, list(group.index))
              for (size, batch, rate), group in runs.groupby(["size", "batch_clips", "learning_rate"])]
    pooled = pooled_relative_std(table, groups, budgets, column, tolerance)
    return None if pooled is None else {**pooled, "source": "noise-floor seeds (series=noise) and the grid run of the same cell"}


def pooled_relative_std(table: RunsTable, groups: list[tuple[dict, list[str]]], budgets: Sequence[float], column: str,
                        tolerance: float) -> dict | None:
    """The relative std between the replicate runs of each group (``(description, run ids)``), pooled over groups and
    budgets as :func:`run_to_run_noise` describes; None when no group has two runs with a loss at one budget."""
    variances, deviations, kept, per_budget = [], [], [], {float(b): [] for b in budgets}
    for description, run_ids in groups:
        if len(run_ids) < 2:
            continue
        matrix = table.loss_matrix(run_ids, budgets, column, tolerance)
        counts = np.sum(np.isfinite(matrix), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, np.nansum(matrix, axis=0) / np.maximum(counts, 1), np.nan)
            relative = np.sqrt(np.nansum((matrix - mean) ** 2, axis=0) / np.maximum(counts - 1, 1)) / mean
        relative[counts < 2] = np.nan
        for budget, value in zip(budgets, relative):
            if np.isfinite(value):
                per_budget[float(budget)].append(float(value))
                variances.append(float(value) ** 2)
        deviations.append(np.where(counts >= 2, matrix / mean - 1, np.nan))
        kept.append({**description, "seeds": len(run_ids), "runs": list(run_ids)})
    if not variances:
        return None
    by_budget = [{"tokens": b, "relative_std": float(np.sqrt(np.mean(np.square(v)))) if v else None} for b, v in per_budget.items()]
    return {"relative_std": float(np.sqrt(np.mean(variances))), "relative_std_by_budget": by_budget,
            **effective_degrees_of_freedom(deviations), "groups": kept}


def effective_degrees_of_freedom(deviations: list[np.ndarray]) -> dict:
    """Degrees of freedom of a relative variance pooled over budgets, from each group's relative deviations.

    ``deviations``: per group of replicate runs, ``(runs, budgets)`` relative deviations from the group's
    mean (NaN where a run or the budget is missing). A group of ``n`` runs estimates the variance at one
    budget on ``n - 1`` degrees of freedom; the mean over ``m`` budgets would have ``(n - 1) m`` if the
    budgets were independent and ``n - 1`` if a run's deviation were the same at every budget. For normal
    deviations whose correlation between budgets ``i`` and ``j`` is ``rho_ij``, the covariance of the two
    sample variances is ``2 sigma^4 rho_ij^2 / (n - 1)``, so the mean over the budgets has
    ``(n - 1) m^2 / sum_ij rho_ij^2`` degrees of freedom (Satterthwaite). ``rho_ij`` is the correlation of
    the deviations pooled over the groups (squared sample correlations err upwards, so the count errs low);
    each group's count is kept between the two extremes and the groups' counts add.

    Returns ``degrees_of_freedom`` and ``degrees_of_freedom_range`` ([runs alone, runs x budgets]).
    """
    if not deviations:
        return {"degrees_of_freedom": None, "degrees_of_freedom_range": None}
    budgets = deviations[0].shape[1]
    products, weights = np.zeros((budgets, budgets)), np.zeros((budgets, budgets))
    for d in deviations:
        for i in range(budgets):
            for j in range(budgets):
                both = np.isfinite(d[:, i]) & np.isfinite(d[:, j])
                if both.sum() < 2:
                    continue
                norm = np.sqrt(np.sum(d[both, i] ** 2) * np.sum(d[both, j] ** 2))
                if norm > 0:
                    products[i, j] += (both.sum() - 1) * np.sum(d[both, i] * d[both, j]) / norm
                    weights[i, j] += both.sum() - 1
    with np.errstate(invalid="ignore"):
        rho = np.where(weights > 0, products / np.where(weights > 0, weights, 1), 0.0)
    np.fill_diagonal(rho, 1.0)
    total = low = high = 0.0
    for d in deviations:
        used = np.flatnonzero(np.isfinite(d).sum(axis=0) >= 2)
        if used.size == 0:
            continue
        runs = int(np.min(np.isfinite(d[:, used]).sum(axis=0)))
        m = used.size
        effective = (runs - 1) * m * m / float(np.sum(rho[np.ix_(used, used)] ** 2))
        total += float(np.clip(effective, runs - 1, (runs - 1) * m))
        low += runs - 1
        high += (runs - 1) * m
    return {"degrees_of_freedom": total, "degrees_of_freedom_range": [low, high]}


def noise_degrees_of_freedom(noise: dict | None) -> float | None:
    """Degrees of freedom of the run-to-run std in a laws document's ``setup.noise`` (its ``detail`` is
    :func:`run_to_run_noise`'s record), or ``None`` (no estimate from seeds: treated as known)."""
    detail = (noise or {}).get("detail") or {}
    value = detail.get("degrees_of_freedom")
    if isinstance(value, (int, float)) and np.isfinite(value) and value > 0:
        return float(value)
    groups = detail.get("groups") or []  # a record from before the effective count: the runs alone, the lower bound
    runs = sum(max(int(g.get("seeds", 0)) - 1, 0) for g in groups)
    return float(runs) if runs > 0 else None


def noise_std_interval(relative_std: float, dof: float | None, level: float) -> list[float] | None:
    """``level`` interval of a standard deviation estimated on ``dof`` degrees of freedom (chi-square)."""
    if dof is None or not relative_std:
        return None
    tail = (1 - level) / 2
    return [float(relative_std * np.sqrt(dof / stats.chi2.ppf(1 - tail, dof))),
            float(relative_std * np.sqrt(dof / stats.chi2.ppf(tail, dof)))]


def noise_quantile(level: float, dof: float | None) -> float:
    """The two-sided ``level`` quantile of a difference in units of a noise estimated on ``dof`` degrees of
    freedom: Student's t (the normal one when ``dof`` is None, the noise treated as known)."""
    return float(stats.norm.ppf(0.5 + level / 2) if dof is None else stats.t.ppf(0.5 + level / 2, dof))


def mean_noise(run_std: float, replicates: int) -> float:
    """The noise of the mean of ``replicates`` independent runs whose own noise is ``run_std``: ``run_std / sqrt(replicates)``."""
    return run_std / np.sqrt(replicates)


def run_relative_std(noise: dict | None) -> float | None:
    """One run's relative std from a laws document's ``setup.noise`` (whose ``relative_std`` is a cell's, the mean of
    ``seeds_per_cell`` replicates); documents without replicates carry only ``relative_std``, which is then one run's."""
    noise = noise or {}
    value = noise.get("run_relative_std", noise.get("relative_std"))
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None
