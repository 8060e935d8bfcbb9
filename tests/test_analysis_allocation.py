"""Compute-optimal allocation: width rules, the vectorised minimiser, the isoFLOP reading."""

from pathlib import Path

import numpy as np
import pytest

from dit.sizes import width_for_parameters

from analysis.allocation import (
    AllocationSolver,
    FlopModel,
    InferenceCost,
    SizeCurve,
    WidthRule,
    empirical_flops_grid,
    empirical_optimal_sizes,
    inference_flops,
    loss_law_callable,
    power_law_through,
)
from analysis.blas import limit_openblas_threads
from analysis.config import PAPER_INFERENCE

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"


def test_registry_width_rule_is_dit_sizes():
    rule = WidthRule("registry", "tiny")
    for n in (5e3, 3e4, 1e6, 1e8):
        assert rule.width(n) == pytest.approx(width_for_parameters(n, "tiny"))


def test_fitted_width_rule_recovers_a_power_law():
    n = np.array([1e4, 1e5, 1e6])
    rule = WidthRule.fit(n, 0.5 * n**0.4)
    assert rule.exponent == pytest.approx(0.4) and np.exp(rule.log_coefficient) == pytest.approx(0.5)


def test_solver_matches_the_closed_form_for_many_laws_at_once():
    params = np.array([[0.02, 0.28, 0.0025, 0.32, 0.3], [0.0373, 0.2917, 0.0082, 0.3188, 0.4856], [0.01, 0.4, 0.01, 0.2, 0.1]])
    flops = np.array([[1e12, 1e15, 1e20]])
    solver = AllocationSolver(FlopModel("6n", 256, WidthRule("registry", "tiny")), (1.0, 1e16))
    n, _, interior = solver.optimal(loss_law_callable(params), np.broadcast_to(flops, (3, 3)))
    a, alpha, b, beta = params[:, 0:1], params[:, 1:2], params[:, 2:3], params[:, 3:4]
    exponent = alpha / (alpha + beta)
    closed = 1e9 * (beta * b / (alpha * a)) ** (1 / (alpha + beta)) * (flops / 6e18) ** exponent
    assert np.allclose(n, closed, rtol=1e-6)
    assert interior.all()


def test_isoflop_reading_of_a_smooth_family_recovers_the_law_exponent():
    truth = np.array([[0.02, 0.28, 0.0025, 0.32, 0.3]])
    model = FlopModel("6n", 256, WidthRule("registry", "tiny"))
    budgets = np.geomspace(2**19, 2**24, 6)
    sizes = 8192 * 2.0 ** np.arange(5)
    loss = loss_law_callable(truth)
    curves = [SizeCurve(f"{n:.0f}", n, budgets * float(model.flops_per_token(n)), loss(n / 1e9, budgets[None, :] / 1e9)) for n in sizes]
    flops = empirical_flops_grid(curves, 80)
    n_opt, interior = empirical_optimal_sizes(curves, flops, "parabola")
    _, exponent = power_law_through(flops, n_opt, interior)
    assert interior.sum() > 20
    assert exponent[0] == pytest.approx(0.28 / 0.60, abs=0.01)
    discrete, _ = empirical_optimal_sizes(curves, flops, "discrete")
    assert set(np.unique(discrete[np.isfinite(discrete)])) <= set(sizes)


def test_analysis_does_not_import_torch():
    import subprocess
    import sys

    modules = sorted(f"analysis.{path.stem}" for path in ANALYSIS.glob("*.py") if path.stem != "__init__")
    code = f"import sys, {', '.join(modules)}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_tabulated_inference_cost_matches_the_exact_count():
    for rule in (WidthRule("registry", "paper"), WidthRule.fit([1e6, 1e7, 1e8], [64, 160, 400])):
        cost = InferenceCost(rule, PAPER_INFERENCE, (1e6, 1e11))
        sizes = np.geomspace(1.1e6, 0.9e11, 37)
        assert cost(sizes) == pytest.approx(inference_flops(sizes, rule, PAPER_INFERENCE), rel=1e-5)
