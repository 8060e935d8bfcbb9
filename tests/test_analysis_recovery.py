"""The fitting pipeline (``python -m analysis.fit``) on synthetic runs tables drawn from known laws that are
harder than the default design's: realistic run-to-run noise (2%), a loss valley that is not quadratic
(lack of fit for the optimum search), and a loss with no irreducible floor (L_inf = 0). Each case is
checked against the known truth: the precise and conventional compute-optimal sizes and the model-size
reduction between them (computed here by a dense search over N of the true losses), held-out
predictions, and the fitted loss law at the fitting points.

Compute is counted as C = 6 N T (``flop_convention: 6n``) and the comparison budget is the largest
fitting run's compute, inside the data. (Far beyond it, at the default 100x, the conventional law's
power-law form cannot follow the fixed cell's penalty, which grows like the squared log distance to the
optimum: on noise-free runs its N_opt comes out about 11% small there.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.blas import limit_openblas_threads
from analysis.fit import main as fit_main
from analysis.synthetic_runs import SyntheticDesign, SyntheticTruth, synthetic_runs
from dit.sizes import get_size

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread

DESIGN = SyntheticDesign()
CELL = (16, 2e-3)  # the conventional cell (clips, learning rate)
LARGEST_RUN_FLOPS = 6 * get_size(DESIGN.fitting_sizes[-1]).non_embedding_parameters * max(DESIGN.milestones_tokens)
NO_FLOOR = {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.0}
#: A valley as deep as real grids show next to 1-2% noise: one octave from the optimal learning rate costs 1.5% to 6%
#: of the loss, one octave of batch size about 2.5% (the default truth's valley, 0.3% to 1.2%, is lost in 2% noise).
REALISTIC_VALLEY = {"lr_curvature": 0.03, "batch_curvature": 0.02}


@dataclass
class LopsidedValley(SyntheticTruth):
    """A loss valley steeper above the optimal learning rate than below it, and |log B ratio|^1.5 in batch size."""

    def loss_at(self, n_billions, t_billions, batch_tokens, learning_rate):
        rate = np.log(learning_rate / self.optimal_learning_rate(n_billions, t_billions))
        batch = np.log(batch_tokens / self.optimal_batch_tokens(n_billions, t_billions))
        penalty = self.lr_curvature * np.where(rate > 0, 2.0, 0.5) * rate**2 + self.batch_curvature * np.abs(batch) ** 1.5
        return self.optimal_loss(n_billions, t_billions) + penalty


def true_optima(truth: SyntheticTruth, flops: float) -> tuple[float, float]:
    """N_opt (parameters) of the precise recipe (optimal B and LR) and of the conventional one (the fixed
    cell) at ``flops`` under C = 6 N T, by a dense search over N of the true losses."""
    n = np.geomspace(1e3, 1e9, 200_001)
    t = flops / (6 * n)
    precise = truth.optimal_loss(n / 1e9, t / 1e9)
    conventional = truth.loss_at(n / 1e9, t / 1e9, CELL[0] * DESIGN.tokens_per_clip, CELL[1])
    return float(n[np.argmin(precise)]), float(n[np.argmin(conventional)])


def fit(folder: Path, truth: SyntheticTruth, seed: int = 0, target_flops: float | None = LARGEST_RUN_FLOPS) -> dict:
    folder.mkdir(parents=True)
    synthetic_runs(truth, DESIGN, seed=seed).to_csv(folder / "runs.csv", index=False)
    config = {"heldout_sizes": DESIGN.heldout_sizes, "conventional_cell": {"batch_clips": CELL[0], "learning_rate": CELL[1]},
              "bootstrap_resamples": 30, "seed": 7, "flop_convention": "6n", "edge_optima": "include"}
    if target_flops is not None:
        config["target_flops"] = target_flops
    (folder / "fit.yaml").write_text(yaml.safe_dump(config))
    assert fit_main(["--runs", str(folder / "runs.csv"), "--config", str(folder / "fit.yaml"), "--out",
                     str(folder / "laws.json"), "--quiet"]) == 0
    return json.loads((folder / "laws.json").read_text())


def inside(estimate: dict, value: float) -> bool:
    low, high = estimate["interval"]
    return low <= value <= high


def fitting_points() -> tuple[np.ndarray, np.ndarray]:
    n = np.array([get_size(s).non_embedding_parameters / 1e9 for s in DESIGN.fitting_sizes])
    t = np.array(DESIGN.milestones_tokens, dtype=float) / 1e9
    return np.repeat(n, t.size), np.tile(t, n.size)


def fitted_loss(document: dict, n_billions, t_billions):
    p = document["laws"]["loss_optimal"]["parameters"]
    return p["a"] * t_billions ** -p["alpha"] + p["b"] * n_billions ** -p["beta"] + p["L_inf"]


def test_noise_free_runs_give_the_true_compute_optimal_sizes_and_reduction(tmp_path):
    truth = SyntheticTruth(run_noise=0.0, milestone_noise=0.0)
    document = fit(tmp_path / "clean", truth)
    comparison = document["comparison"]
    assert comparison["target_flops"] == LARGEST_RUN_FLOPS
    precise, conventional = true_optima(truth, LARGEST_RUN_FLOPS)
    assert comparison["precise"]["parameters"]["value"] == pytest.approx(precise, rel=0.01)
    assert comparison["conventional"]["parameters"]["value"] == pytest.approx(conventional, rel=0.01)
    reduction = 1 - precise / conventional
    assert comparison["model_size_reduction"]["value"] == pytest.approx(reduction, abs=0.01)
    # the bootstrap resamples the runs' noise, and there is none: every resample is the data itself
    low, high = comparison["model_size_reduction"]["interval"]
    assert low == pytest.approx(high, abs=1e-9) == pytest.approx(comparison["model_size_reduction"]["value"], abs=1e-9)


def test_two_percent_noise_and_a_lopsided_valley_stay_inside_the_reported_uncertainty(tmp_path):
    """2% run-to-run noise (plus 0.5% per milestone) and a valley that is not quadratic: the optima are noisy
    and biased, yet the reported 95% intervals hold the true sizes and reduction, the fitted loss law stays
    within the noise of the true optimal loss, and held-out losses are predicted within the noise."""
    truth = LopsidedValley(run_noise=0.02, milestone_noise=0.005, **REALISTIC_VALLEY)
    document = fit(tmp_path / "noisy", truth)
    comparison = document["comparison"]
    precise, conventional = true_optima(truth, LARGEST_RUN_FLOPS)
    assert inside(comparison["precise"]["parameters"], precise)
    assert inside(comparison["conventional"]["parameters"], conventional)
    assert inside(comparison["model_size_reduction"], 1 - precise / conventional)
    n, t = fitting_points()
    assert np.max(np.abs(fitted_loss(document, n, t) / truth.optimal_loss(n, t) - 1)) < 0.02
    heldout = document["heldout"]["summary"]
    # a held-out optimum carries its size's run-to-run noise (2% per run, shared along the run's curve)
    assert heldout["points"] == 12 and heldout["mean_absolute_relative_error"] < 1.5 * truth.run_noise
    assert round(heldout["coverage"] * 12) >= 10


def test_a_loss_without_floor_is_fitted_with_almost_none(tmp_path):
    """L_inf = 0 in truth, 1.5% noise: the fitted floor is a small fraction of the losses and the law follows
    the true optimal loss within the noise. (Its percentile bootstrap interval need not hold 0: the estimate
    sits near its bound, where a percentile interval of a bounded parameter is not reliable.)"""
    truth = SyntheticTruth(loss=dict(NO_FLOOR), run_noise=0.015, milestone_noise=0.004, **REALISTIC_VALLEY)
    document = fit(tmp_path / "no-floor", truth)
    n, t = fitting_points()
    assert document["laws"]["loss_optimal"]["parameters"]["L_inf"] < 0.15 * truth.optimal_loss(n, t).mean()
    assert np.max(np.abs(fitted_loss(document, n, t) / truth.optimal_loss(n, t) - 1)) < 0.015
    assert inside(document["comparison"]["model_size_reduction"], 1 - np.divide(*true_optima(truth, LARGEST_RUN_FLOPS)))
