"""The points each law is fitted to, for the data as measured and every resample of the runs' noise.

* ``OptimumPoints``: the optimal (B, LR, loss) of every (fitting size, budget) (``analysis.optima``),
  with their interior flags: the points of L(N, T) at optimal hyperparameters, B_opt(N, T),
  LR_opt(N, T) and the baselines fitted to optima.
* ``cell_curves``: each fitting size's loss at one fixed cell (the conventional recipe).
* ``optimum_datasets``, ``cell_dataset``, ``all_runs_dataset``: the ``LawData`` of each law.

Loss laws get the Huber delta ``huber_delta_in_noise_std`` x the run-to-run relative std (a log
residual is a relative error; at least ``MIN_LOSS_DELTA``); the hyperparameter laws get ``huber_delta_hyperparameters`` (log
units of B or LR, whose scatter is not the loss noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.allocation import BILLION
from analysis.config import FitConfig
from analysis.law_fits import LawData
from analysis.law_forms import (
    BATCH_SIZE_LAW,
    BATCH_SIZE_OF_COMPUTE_LAW,
    KAPLAN_LAW,
    LEARNING_RATE_LAW,
    LEARNING_RATE_OF_COMPUTE_LAW,
    LOSS_LAW,
)
from analysis.optima import Optima, find_optima
from analysis.resampling import RunNoise
from analysis.selection import Selection

OPTIMA_REQUIREMENT = "optima off the grid's edge at >= 2 sizes and >= 2 budgets (4 points at least)"
LOSS_REQUIREMENT = "at >= 2 fitting sizes and >= 2 token budgets (6 points at least)"


@dataclass
class OptimumPoints:
    """Optima of every (fitting size, budget), sizes outer and budgets inner; arrays ``(R + 1, sizes x budgets)``."""

    n_billions: np.ndarray  # (points,)
    t_billions: np.ndarray  # (points,)
    flops: np.ndarray  # (points,) measured C_token x tokens, at every (size, budget) pair, run or not (``measured_flops``)
    labels: list[dict]
    loss: np.ndarray
    learning_rate: np.ndarray
    batch_tokens: np.ndarray
    interior_learning_rate: np.ndarray
    interior_batch: np.ndarray
    per_size: list[Optima]

    @classmethod
    def find(cls, selection: Selection, noise: RunNoise | None, config: FitConfig) -> "OptimumPoints":
        """Optima of the measured losses (``noise`` None: row 0 only) and of every resample."""
        optima = [find_optima(grid, None if noise is None else noise.losses(grid.replicates, grid.losses),
                              config.optimum_method, config.optimum_band, config.optimum_max_gain)
                  for grid in selection.fitting]
        budgets = selection.budgets
        sizes, rows = len(optima), optima[0].loss.shape[0] if optima else 1

        def stack(attribute):
            if not optima:
                return np.empty((rows, 0))
            return np.stack([getattr(o, attribute) for o in optima], axis=1).reshape(rows, sizes * budgets.size)

        labels = [{"size": g.size, "N": g.parameters / BILLION, "T": t / BILLION, "tokens": float(t), "flops": float(t * g.flops_per_token)}
                  for g in selection.fitting for t in budgets]
        return cls(
            np.repeat([g.parameters / BILLION for g in selection.fitting], budgets.size), np.tile(budgets / BILLION, sizes),
            np.repeat([g.flops_per_token for g in selection.fitting], budgets.size) * np.tile(budgets, sizes), labels,
            stack("loss"), stack("learning_rate"), stack("batch_tokens"), stack("interior_learning_rate").astype(bool),
            stack("interior_batch").astype(bool), optima,
        )

    @property
    def finite(self) -> np.ndarray:
        return np.isfinite(self.loss)

    @property
    def measured_flops(self) -> np.ndarray:
        """Compute of the (size, budget) pairs that were run: those with a measured optimum (row 0). ``flops`` holds
        every fitting size at every budget of any size, pairs never run included."""
        return self.flops[self.finite[0]] if self.loss.size else np.empty(0)


#: Smallest Huber delta of the loss laws (log residual, i.e. 0.1% of the loss): noise-free or nearly identical seeds
#: would otherwise turn the fit into least absolute deviations, which follows no lack of fit smoothly.
MIN_LOSS_DELTA = 1e-3


def loss_delta(config: FitConfig, relative_std: float) -> float:
    """The loss laws' Huber delta on log residuals: ``huber_delta_in_noise_std`` run-to-run standard deviations."""
    return max(config.huber_delta_in_noise_std * relative_std, MIN_LOSS_DELTA)


def optimum_datasets(points: OptimumPoints, run_ids: list[str], config: FitConfig, delta: float) -> dict[str, LawData]:
    """L(N, T) at the optima, B_opt(N, T), LR_opt(N, T) and the baselines fitted to optima (Kaplan, DeepSeek)."""
    exclude = config.edge_optima == "exclude"
    finite = points.finite.astype(float)
    weights_b = finite * ~(~points.interior_batch & exclude)
    weights_lr = finite * ~(~points.interior_learning_rate & exclude)
    inputs = {"N": points.n_billions, "T": points.t_billions}
    hp_delta = config.huber_delta_hyperparameters
    by_compute = "optima off the grid's edge at >= 2 budgets C"

    def data(name, form, law_inputs, observed, weights, law_delta, requirement, distinct):
        return LawData(name, form, law_inputs, observed, weights, law_delta, points.labels, run_ids, requirement, distinct)

    return {
        "loss_optimal": data("loss_optimal", LOSS_LAW, inputs, points.loss, finite, delta,
                             f"optimal-hyperparameter losses {LOSS_REQUIREMENT}", {"N": 2, "T": 2}),
        "batch_size": data("batch_size", BATCH_SIZE_LAW, inputs, points.batch_tokens, weights_b, hp_delta, OPTIMA_REQUIREMENT,
                           {"N": 2, "T": 2}),
        "learning_rate": data("learning_rate", LEARNING_RATE_LAW, inputs, points.learning_rate, weights_lr, hp_delta,
                              OPTIMA_REQUIREMENT, {"N": 2, "T": 2}),
        "kaplan": data("kaplan", KAPLAN_LAW, inputs, points.loss, finite, delta,
                       "optimal-hyperparameter losses at >= 2 sizes and >= 2 budgets (5 points at least)", {"N": 2, "T": 2}),
        "deepseek_batch_size": data("deepseek_batch_size", BATCH_SIZE_OF_COMPUTE_LAW, {"C": points.flops}, points.batch_tokens,
                                    weights_b, hp_delta, by_compute, {"C": 2}),
        "deepseek_learning_rate": data("deepseek_learning_rate", LEARNING_RATE_OF_COMPUTE_LAW, {"C": points.flops},
                                       points.learning_rate, weights_lr, hp_delta, by_compute, {"C": 2}),
    }


def cell_curves(selection: Selection, cell: dict, noise: RunNoise) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Each fitting size's mean loss over its runs at ``cell``: ``((R + 1, sizes x budgets), size -> run ids)``."""
    budgets = selection.budgets
    runs = selection.cell_runs(cell) if cell else {}
    curves = np.full((noise.resamples + 1, len(selection.fitting) * budgets.size), np.nan)
    config = selection.config
    for s, grid in enumerate(selection.fitting):
        ids = runs.get(grid.size)
        if ids:
            losses = selection.table.loss_matrix(ids, budgets, config.loss_column, config.token_match_tolerance)
            curves[:, s * budgets.size : (s + 1) * budgets.size] = noise.mean_losses(ids, losses)
    return curves, runs


def cell_dataset(name: str, points: OptimumPoints, cell: dict, curves: np.ndarray, runs: dict, delta: float) -> LawData:
    """L(N, T) of the runs at one fixed cell, at the optima's (N, T) points."""
    text = f"batch_clips={cell['batch_clips']}, learning_rate={cell['learning_rate']:g}" if cell else "no cell common to all fitting sizes"
    return LawData(name, LOSS_LAW, {"N": points.n_billions, "T": points.t_billions}, curves, np.isfinite(curves).astype(float),
                   delta, points.labels, [r for ids in runs.values() for r in ids],
                   f"runs at the fixed cell ({text}) {LOSS_REQUIREMENT}", {"N": 2, "T": 2})


def all_runs_dataset(selection: Selection, noise: RunNoise, delta: float) -> LawData | None:
    """Chinchilla's form on every completed grid run of the fitting sizes, whatever its (B, LR)."""
    budgets = selection.budgets
    n, t, labels, blocks = [], [], [], []
    for grid in selection.fitting:
        for run_id in grid.run_ids:
            n += [grid.parameters / BILLION] * budgets.size
            t += list(budgets / BILLION)
            labels += [{"size": grid.size, "run_id": run_id, "N": grid.parameters / BILLION, "T": b / BILLION, "tokens": float(b)}
                       for b in budgets]
        blocks.append(noise.losses(grid.replicates, grid.losses).reshape(noise.resamples + 1, -1))
    if not blocks:
        return None
    observed = np.concatenate(blocks, axis=1)
    return LawData("chinchilla_all_runs", LOSS_LAW, {"N": np.array(n), "T": np.array(t)}, observed,
                   np.isfinite(observed).astype(float), delta, labels, selection.grid_run_ids,
                   "completed grid runs at >= 2 sizes and >= 2 budgets", {"N": 2, "T": 2})
