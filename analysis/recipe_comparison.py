"""Compute-optimal allocation from the fitted loss laws, and the precise recipe against the conventional one.

* ``allocate``: N_opt(C) minimising a loss law under ``C = T * C_token(N)``, for the full-data fit and
  every kept bootstrap resample (``analysis.allocation.AllocationSolver``).
* ``law_allocation_record``: ``N_opt = k C^a`` fitted to those optima over a range of budgets.
* ``empirical_allocation``: the isoFLOP reading of the measured curves: at each budget the size of
  lowest loss, *bracketed* when a measured size lies on each side of it; ``N_opt = k C^a`` is
  fitted when at least ``MIN_BRACKETED_BUDGETS`` budgets are bracketed.
* ``comparison_at_target``: both recipes at the target budget, paired resample by resample.
* ``reduction_curve``: the model-size and inference-cost reductions ``1 - X_precise / X_conventional``
  over a range of budgets, for one fixed cell of the conventional recipe (claim 3c).

Pairing: both recipes are fitted to the same resampled runs (``analysis.resampling``); a resample
counts when both laws kept it, and the others are *dropped* (their bound on each interval is
recorded, ``analysis.intervals``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.allocation import (
    BILLION,
    AllocationSolver,
    FlopModel,
    InferenceCost,
    SizeCurve,
    empirical_flops_grid,
    empirical_optimal_sizes,
    loss_law_callable,
    power_law_through,
)
from analysis.config import InferenceSetup
from analysis.intervals import estimate, percentile_interval
from analysis.law_fits import UNITS, LawFit

#: Budgets with a bracketed isoFLOP optimum needed to fit the empirical N_opt = k C^a.
MIN_BRACKETED_BUDGETS = 3
REDUCTION_DEFINITIONS = {
    "model_size_reduction": "1 - N_opt(precise) / N_opt(conventional) at the same budget C",
    "inference_flops_reduction": "1 - F(N_precise) / F(N_conventional), F = FLOPs to generate one video "
    "(dit.flops.inference_flops_per_video, attention included)",
}


@dataclass
class Allocation:
    """Compute-optimal sizes of one loss law at budgets ``flops``: row 0 the full-data fit, then each kept resample."""

    parameters: np.ndarray  # (rows, 5) loss-law parameters
    resample_index: np.ndarray  # (rows - 1,) which resamples (1..R) rows 1.. came from
    resamples: int  # R
    n_opt: np.ndarray  # (rows, m) raw parameters
    loss: np.ndarray  # (rows, m)
    interior: np.ndarray  # (rows, m) the optimum is inside the search range


def allocate(fit: LawFit, solver: AllocationSolver, flops: np.ndarray) -> Allocation:
    """N_opt at each of ``flops`` for the full-data loss law and every kept resample."""
    parameters = fit.parameter_rows()
    grid = np.broadcast_to(np.asarray(flops, dtype=float)[None, :], (len(parameters), len(flops)))
    n_opt, loss, interior = solver.optimal(loss_law_callable(parameters), grid)
    index = fit.resample_index if fit.resample_index is not None else np.array([], dtype=int)
    return Allocation(parameters, index, int(fit.data.observed.shape[0] - 1), n_opt, loss, interior)


def paired_rows(first: Allocation, second: Allocation) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of each allocation for the full data and the resamples both kept, and how many resamples were dropped."""
    common = np.intersect1d(first.resample_index, second.resample_index)
    rows = [np.concatenate([[0], 1 + np.searchsorted(a.resample_index, common)]).astype(int) for a in (first, second)]
    return rows[0], rows[1], first.resamples - len(common)


def law_allocation_record(allocation: Allocation, which: str, flop_model: FlopModel, compute_grid: np.ndarray,
                          level: float) -> tuple[dict, np.ndarray]:
    """``N_opt = k C^a`` through the optima of one loss law over ``compute_grid`` (allocation columns 1..):
    ``(record, exponent a per row)``."""
    k, a = power_law_through(compute_grid, allocation.n_opt[:, 1:])
    ratio = allocation.n_opt[0, 1:] / (k[0] * compute_grid ** a[0])
    record = {
        "status": "fitted",
        "formula": "N_opt = k * C^a",
        "method": f"minimise loss_{which} L(N, T) subject to {flop_model.describe()}; power law fitted over the range",
        "parameters": {"k": float(k[0]), "a": float(a[0])},
        "intervals": {name: list(percentile_interval(values[1:], level)) if len(values) > 2 else None
                      for name, values in (("k", k), ("a", a))},
        "fit_range_flops": [float(compute_grid[0]), float(compute_grid[-1])],
        "power_law_max_relative_deviation": float(np.max(np.abs(ratio - 1))),
        "units": {"N_opt": UNITS["N_opt"], "C": UNITS["C"]},
        "optimum_interior": bool(allocation.interior[0, 0]),
    }
    if not allocation.interior[0, 0]:
        record["warning"] = "the optimum at the target budget lies at the end of the search range (the law has no interior optimum there)"
    return record, a


def empirical_allocation(curves: list[SizeCurve], method: str, level: float, accounting: str) -> tuple[dict, np.ndarray | None]:
    """The isoFLOP law of measured curves (rows: resamples): ``(record, exponent a per row or None)``."""
    if len(curves) < 3:
        return {"status": "not fitted", "reason": f"isoFLOP optima need curves of >= 3 sizes; have {len(curves)}"}, None
    flops = empirical_flops_grid(curves)
    n_opt, bracketed = empirical_optimal_sizes(curves, flops, method)
    k, a = power_law_through(flops, n_opt, bracketed)
    points = [{"flops": float(c), "parameters": float(n), "bracketed": bool(b)}
              for c, n, b in zip(flops, n_opt[0], bracketed[0]) if np.isfinite(n)]
    count = int(bracketed[0].sum())
    record = {"points": points, "bracketed_budgets": count, "budgets": len(points),
              "rule": "bracketed: a measured size lies on each side of the size of lowest loss at that budget"}
    if count < MIN_BRACKETED_BUDGETS or not np.isfinite(a[0]):
        return {**record, "status": "not fitted", "reason": f"isoFLOP optima bracketed by measured sizes at {count} "
                f"budgets C (need {MIN_BRACKETED_BUDGETS} or more): the compute-optimal size lies outside the fitting "
                "sizes over most of the range"}, None
    record.update(
        status="fitted", formula="N_opt = k * C^a", parameters={"k": float(k[0]), "a": float(a[0])},
        intervals={name: list(percentile_interval(values[1:], level)) if len(values) > 2 else None
                   for name, values in (("k", k), ("a", a))},
        method=f"isoFLOP: at each C the size with the lowest loss on the measured curves ({method}; C counted as {accounting})",
        units={"N_opt": UNITS["N_opt"], "C": UNITS["C"]},
    )
    return record, a


def comparison_at_target(precise: Allocation, conventional: Allocation, flop_model: FlopModel,
                         inference: InferenceSetup, target: float, level: float) -> dict:
    """Both recipes at the target budget (column 0 of each allocation), paired resample by resample."""
    rows_p, rows_c, dropped = paired_rows(precise, conventional)
    n_p, n_c = precise.n_opt[rows_p, 0], conventional.n_opt[rows_c, 0]
    t_p, t_c = target / flop_model.flops_per_token(n_p), target / flop_model.flops_per_token(n_c)
    loss_p, loss_c = precise.loss[rows_p, 0], conventional.loss[rows_c, 0]
    loss_c_optimal = loss_law_callable(precise.parameters[rows_p])(n_c[:, None] / BILLION, t_c[:, None] / BILLION)[:, 0]
    f_p, f_c = (_inference_cost(flop_model, inference, n_p, n_c)(n) for n in (n_p, n_c))

    def paired(values):
        return estimate(values[0], values[1:] if len(values) > 2 else None, level, dropped if len(values) > 2 else 0)

    return {
        "status": "computed",
        "target_flops": float(target),
        "flop_model": flop_model.describe(),
        "inference_setup": inference.__dict__,
        "precise": {"parameters": paired(n_p), "tokens": paired(t_p), "loss": paired(loss_p),
                    "inference_flops_per_video": paired(f_p), "optimum_interior": bool(precise.interior[0, 0])},
        "conventional": {"parameters": paired(n_c), "tokens": paired(t_c), "loss": paired(loss_c),
                         "loss_with_optimal_hyperparameters": paired(loss_c_optimal), "inference_flops_per_video": paired(f_c),
                         "optimum_interior": bool(conventional.interior[0, 0])},
        "model_size_reduction": paired(1 - n_p / n_c),
        "inference_flops_reduction": paired(1 - f_p / f_c),
        "loss_difference_precise_minus_conventional": paired(loss_p - loss_c),
        "paired_resamples": int(len(rows_p) - 1),
        "dropped_resamples": int(dropped),
        "definitions": {**REDUCTION_DEFINITIONS, "loss": "precise: loss_optimal at its optimum; conventional: loss_conventional "
                        "at its optimum (the fixed cell's loss)"},
    }


def reduction_curve(precise: Allocation, conventional: Allocation, flops: np.ndarray, flop_model: FlopModel,
                    inference: InferenceSetup, level: float) -> dict:
    """The reductions at each budget of ``flops`` (the allocations' columns), paired resample by resample."""
    rows_p, rows_c, dropped = paired_rows(precise, conventional)
    n_p, n_c = precise.n_opt[rows_p], conventional.n_opt[rows_c]
    f_p, f_c = (_inference_cost(flop_model, inference, n_p, n_c)(n) for n in (n_p, n_c))
    points = []
    for j, budget in enumerate(flops):
        point = {"flops": float(budget), "parameters_precise": float(n_p[0, j]), "parameters_conventional": float(n_c[0, j]),
                 "optimum_interior": bool(precise.interior[0, j] and conventional.interior[0, j])}
        for key, values in (("model_size_reduction", 1 - n_p[:, j] / n_c[:, j]), ("inference_flops_reduction", 1 - f_p[:, j] / f_c[:, j])):
            point[key] = estimate(values[0], values[1:] if len(values) > 2 else None, level, dropped if len(values) > 2 else 0)
        points.append(point)
    return {"status": "computed", "points": points, "paired_resamples": int(len(rows_p) - 1), "dropped_resamples": int(dropped)}


def _inference_cost(flop_model: FlopModel, inference: InferenceSetup, *sizes: np.ndarray) -> InferenceCost:
    """The per-video inference cost tabulated over the range of ``sizes``."""
    low = min(float(np.min(n)) for n in sizes)
    high = max(float(np.max(n)) for n in sizes)
    return InferenceCost(flop_model.width_rule, inference, (low * 0.99, high * 1.01))
