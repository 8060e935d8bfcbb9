"""The robust fitting core: recovery of known parameters for each law form, bootstrap refits, bounds."""

import numpy as np
import pytest

from analysis.blas import limit_openblas_threads
from analysis.fitter import InsufficientDataError, _objective, batched_refit, fit_law, refit
from analysis.robust_loss import huber
from analysis.intervals import bounds_with_dropped, percentile_interval
from analysis.law_forms import (
    BATCH_SIZE_LAW,
    KAPLAN_LAW,
    LEARNING_RATE_OF_COMPUTE_LAW,
    LOSS_LAW,
    OPTIMAL_SIZE_OF_COMPUTE_LAW,
)

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread

# A tiny-model design: N and T in billions, as the analysis uses them.
N = np.repeat([8e-6, 1.8e-5, 3.3e-5, 6.6e-5, 1.5e-4], 6)
T = np.tile([5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], 5)


def noisy(values, relative, seed=0):
    return values * (1 + relative * np.random.default_rng(seed).standard_normal(values.shape))


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    value, slope = huber(np.array([0.5e-3, -2e-3]), 1e-3)
    assert value[0] == pytest.approx(0.125)
    assert value[1] == pytest.approx(1.5)
    assert slope[0] == pytest.approx(500.0)
    assert slope[1] == pytest.approx(-1000.0)


def test_sum_of_power_laws_recovers_known_parameters():
    truth = {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}
    observed = noisy(LOSS_LAW.predict(truth, N=N, T=T), 1e-4)
    fit = fit_law(LOSS_LAW, {"N": N, "T": T}, observed, delta=1e-3)
    assert fit.usable
    # tolerances: exponents +-0.02, floor +-2%, coefficients +-15% (noise 1e-4 relative, 30 points)
    assert fit.parameters["alpha"] == pytest.approx(0.28, abs=0.02)
    assert fit.parameters["beta"] == pytest.approx(0.32, abs=0.02)
    assert fit.parameters["L_inf"] == pytest.approx(0.3, rel=0.02)
    assert fit.parameters["a"] == pytest.approx(0.02, rel=0.15)
    assert fit.parameters["b"] == pytest.approx(0.0025, rel=0.15)
    assert fit.rmse_log < 3e-4


def test_paper_scale_inputs_recover_the_published_law():
    truth = {"a": 0.0373, "alpha": 0.2917, "b": 0.0082, "beta": 0.3188, "L_inf": 0.4856}
    n = np.repeat([0.017, 0.057, 0.13, 0.26], 6)
    t = np.tile([2.0, 3.0, 4.0, 6.0, 8.0, 12.0], 4)
    fit = fit_law(LOSS_LAW, {"N": n, "T": t}, LOSS_LAW.predict(truth, N=n, T=t), delta=1e-3)
    for key, value in truth.items():
        assert fit.parameters[key] == pytest.approx(value, rel=1e-3)


def test_hyperparameter_power_law_recovers_exponents_and_resists_an_outlier():
    truth = {"a": 1.83e5, "b": 0.3, "c": 0.2}
    observed = noisy(BATCH_SIZE_LAW.predict(truth, N=N, T=T), 0.03, seed=1)
    observed[7] *= 5.0  # one grossly wrong optimum
    fit = fit_law(BATCH_SIZE_LAW, {"N": N, "T": T}, observed, delta=0.1)
    assert fit.usable
    assert fit.parameters["b"] == pytest.approx(0.3, abs=0.03)
    assert fit.parameters["c"] == pytest.approx(0.2, abs=0.03)
    assert fit.parameters["a"] == pytest.approx(1.83e5, rel=0.3)


def test_compute_power_laws_recover_exponents():
    """20 points over 4 decades with 2% noise: the exponent's standard error is about 0.0016 and the law's value
    at the centre of the data about 0.45%; k = N(C) / C^a lies 44 e-folds from the data, so its error is the
    exponent's error times ln C_centre (k itself is known only within about 50%)."""
    flops = np.geomspace(1e17, 1e21, 20)
    n_opt = noisy(0.8705 * flops**0.4294, 0.02, seed=2)
    fit = fit_law(OPTIMAL_SIZE_OF_COMPUTE_LAW, {"C": flops}, n_opt, delta=0.1)
    k, a = fit.parameters["k"], fit.parameters["a"]
    assert a == pytest.approx(0.4294, abs=4 * 0.0016)
    centre = 1e19
    assert k * centre**a == pytest.approx(0.8705 * centre**0.4294, rel=4 * 0.0045)
    assert abs(np.log(k / 0.8705)) <= abs(a - 0.4294) * np.log(centre) + 4 * 0.0045
    rate = noisy(0.02 * flops**-0.09, 0.02, seed=3)
    fit = fit_law(LEARNING_RATE_OF_COMPUTE_LAW, {"C": flops}, rate, delta=0.1)
    assert fit.parameters["b"] == pytest.approx(-0.09, abs=0.01)


def test_kaplan_law_recovers_known_parameters():
    truth = {"N_c": 1e-10, "alpha_N": 0.07, "D_c": 6e-6, "alpha_D": 0.15}
    observed = noisy(KAPLAN_LAW.predict(truth, N=N, T=T), 1e-4, seed=4)
    fit = fit_law(KAPLAN_LAW, {"N": N, "T": T}, observed, delta=1e-3)
    assert fit.usable
    assert fit.parameters["alpha_N"] == pytest.approx(0.07, abs=0.01)
    assert fit.parameters["alpha_D"] == pytest.approx(0.15, abs=0.01)
    assert np.log(fit.parameters["N_c"]) == pytest.approx(np.log(1e-10), abs=1.0)
    assert np.log(fit.parameters["D_c"]) == pytest.approx(np.log(6e-6), abs=0.3)


def test_fit_ending_on_a_bound_is_flagged():
    # losses that keep falling faster than any floor allows: L_inf is pushed to 0
    observed = 0.5 * T ** -0.3 * N ** -0.1 / 50
    fit = fit_law(LOSS_LAW, {"N": N, "T": T}, observed, delta=1e-3)
    assert "L_inf" in fit.on_bound
    assert not fit.usable


def test_a_guard_bound_of_the_optimiser_is_told_from_the_models_floor():
    """An N term that falls faster than any exponent the optimiser allows puts beta on its cap (a guard: not identified);
    losses falling faster than any floor put L_inf at 0, a bound of the model (the constrained estimate)."""
    steep = 0.02 * T**-0.28 + 0.3 + 0.05 * (N / N.min()) ** -8.0
    fit = fit_law(LOSS_LAW, {"N": N, "T": T}, steep, delta=1e-3)
    high = LOSS_LAW.bounds(steep)[LOSS_LAW.parameter_names.index("beta")][1]
    assert fit.parameters["beta"] == pytest.approx(high) and fit.on_bound == ["beta"] and fit.guard_bounds == ["beta"]
    assert fit.summary()["guard_bounds"] == ["beta"]
    floor = fit_law(LOSS_LAW, {"N": N, "T": T}, 0.5 * T**-0.3 * N**-0.1 / 50, delta=1e-3)
    assert floor.parameters["L_inf"] == 0.0 and floor.on_bound == ["L_inf"] and floor.guard_bounds == []


def test_too_few_points_is_an_error_that_says_so():
    with pytest.raises(InsufficientDataError, match="3 points, need at least 6"):
        fit_law(LOSS_LAW, {"N": N[:3], "T": T[:3]}, np.full(3, 0.5), delta=1e-3)


def test_batched_refit_matches_single_refits():
    truth = {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}
    base = LOSS_LAW.predict(truth, N=N, T=T)
    start = fit_law(LOSS_LAW, {"N": N, "T": T}, noisy(base, 1e-4), delta=1e-3)
    rng = np.random.default_rng(5)
    resamples = base[None, :] * (1 + 2e-4 * rng.standard_normal((8, base.size)))
    weights = rng.integers(0, 3, size=resamples.shape).astype(float)
    theta, usable, sides = batched_refit(LOSS_LAW, {"N": N, "T": T}, resamples, 1e-3, start, weights=weights)
    assert usable.all() and not sides.any()
    for r in range(3):
        keep = weights[r] > 0
        single, ok, _ = refit(LOSS_LAW, {"N": N[keep], "T": T[keep]}, resamples[r, keep], 1e-3, start, weights=weights[r, keep])
        assert ok
        assert np.allclose(LOSS_LAW.to_parameters(theta[r], start.scales)["alpha"],
                           LOSS_LAW.to_parameters(single, start.scales)["alpha"], atol=1e-5)


def test_percentile_interval_ignores_non_finite_samples():
    low, high = percentile_interval(np.array([np.nan, *np.linspace(0, 1, 101)]), 0.9)
    assert low == pytest.approx(0.05)
    assert high == pytest.approx(0.95)


def test_dropped_resamples_bound_the_interval_from_outside():
    """Each dropped resample counted below every kept one (lower end) and above (upper end): the bound holds
    the kept resamples' interval, equals numpy's quantile of the completed set, and is open once a tail fills."""
    kept = np.linspace(0, 1, 101)
    low, high = bounds_with_dropped(kept, 3, 0.9)
    assert low <= percentile_interval(kept, 0.9)[0] and high >= percentile_interval(kept, 0.9)[1]
    assert low == pytest.approx(np.percentile(np.concatenate([np.full(3, -10.0), kept]), 5))
    assert high == pytest.approx(np.percentile(np.concatenate([kept, np.full(3, 10.0)]), 95))
    assert bounds_with_dropped(kept, 0, 0.9) == pytest.approx(list(percentile_interval(kept, 0.9)))
    assert bounds_with_dropped(kept, 20, 0.9) == [None, None]  # 20 of 121 is more than a 5% tail


# ---------------------------------------------------------------------------------------------- starting points
def dense_loss_starts(inputs, observed):
    """A dense reference grid of starts (alpha, beta, L_inf fraction; a', b' by NNLS), as a slow multi-start fit would use."""
    from scipy.optimize import nnls

    scales = LOSS_LAW.reference_scales(inputs)
    log_x = LOSS_LAW.log_inputs(inputs, scales)
    starts = []
    for alpha in (0.1, 0.3, 0.6, 1.0, 2.0):
        for beta in (0.1, 0.3, 0.6, 1.0, 2.0):
            for fraction in (0.0, 0.5, 0.8, 0.95):
                floor = fraction * observed.min()
                design = np.stack([np.exp(-alpha * log_x["T"]), np.exp(-beta * log_x["N"])], axis=1)
                coefficients = np.maximum(nnls(design, observed - floor)[0], 1e-6 * observed.min())
                starts.append(np.array([np.log(coefficients[0]), alpha, np.log(coefficients[1]), beta, floor]))
    return starts


# smoke-like design: 3 sizes x 3 budgets spanning a factor 4; losses drawn with a negative floor, so
# the fitted L_inf ends on its bound 0 (as on the smoke run's real data)
N_SMALL = np.repeat([8.192e-6, 1.8432e-5, 3.2768e-5], 3)
T_SMALL = np.tile([8.192e-6, 1.6384e-5, 3.2768e-5], 3)
DEGENERATE = LOSS_LAW.predict({"a": 0.01, "alpha": 0.5, "b": 0.02, "beta": 0.3, "L_inf": -0.3}, N=N_SMALL, T=T_SMALL) * (
    1 + 0.004 * np.random.default_rng(8).standard_normal(9)
)


def independent_multistart(form, inputs, observed, starts, delta=1e-3) -> float:
    """The lowest objective L-BFGS-B reaches from each of ``starts`` alone, run to convergence: a search that
    shares the fitter's objective and bounds (what is being minimised, and where) but none of its starting
    points or its short-run screening."""
    from scipy.optimize import minimize

    log_x = form.log_inputs(inputs, form.reference_scales(inputs))
    function = _objective(form, log_x, np.log(observed), np.ones_like(observed), delta)
    bounds = form.bounds(observed)
    low, high = [b[0] for b in bounds], [b[1] for b in bounds]
    best = np.inf
    for start in starts:
        result = minimize(function, np.clip(start, low, high), jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": 5_000})
        best = min(best, float(result.fun))
    return best


@pytest.mark.parametrize("case", ["well_posed", "degenerate"])
def test_few_projected_starts_reach_the_dense_multistart_optimum(case):
    if case == "well_posed":
        inputs = {"N": N, "T": T}
        observed = noisy(LOSS_LAW.predict({"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}, N=N, T=T), 3e-4, seed=6)
    else:
        inputs, observed = {"N": N_SMALL, "T": T_SMALL}, DEGENERATE
    scales = LOSS_LAW.reference_scales(inputs)
    starts = LOSS_LAW.starting_points(LOSS_LAW.log_inputs(inputs, scales), observed, np.ones_like(observed), 1e-3)
    assert 1 <= len(starts) <= LOSS_LAW.STARTS
    fast = fit_law(LOSS_LAW, inputs, observed, delta=1e-3)
    dense = dense_loss_starts(inputs, observed)
    assert len(dense) == 100 and fast.starts <= LOSS_LAW.STARTS
    assert fast.converged
    assert fast.objective <= independent_multistart(LOSS_LAW, inputs, observed, dense) * (1 + 1e-6) + 1e-9
    if case == "degenerate":
        assert fast.on_bound == ["L_inf"] and not fast.usable
    else:
        assert fast.usable and fast.parameters["alpha"] == pytest.approx(0.28, abs=0.02)


def test_projected_starts_score_cells_by_the_fit_objective():
    # the best start is already in the right basin: exponents within one grid step of the truth
    truth = {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}
    observed = LOSS_LAW.predict(truth, N=N, T=T)
    scales = LOSS_LAW.reference_scales({"N": N, "T": T})
    log_x = LOSS_LAW.log_inputs({"N": N, "T": T}, scales)
    best = LOSS_LAW.starting_points(log_x, observed, None, 1e-3)[0]
    step = LOSS_LAW.EXPONENT_GRID[1] / LOSS_LAW.EXPONENT_GRID[0]
    assert truth["alpha"] / step <= best[1] <= truth["alpha"] * step
    assert truth["beta"] / step <= best[3] <= truth["beta"] * step
    function = _objective(LOSS_LAW, log_x, np.log(observed), np.ones_like(observed), 1e-3)
    others = LOSS_LAW.starting_points(log_x, observed, None, 1e-3)[1:]
    assert all(function(best)[0] <= function(other)[0] for other in others)


def test_kaplan_projected_starts_reach_the_dense_multistart_optimum():
    truth = {"N_c": 1e-10, "alpha_N": 0.07, "D_c": 6e-6, "alpha_D": 0.15}
    observed = noisy(KAPLAN_LAW.predict(truth, N=N, T=T), 3e-4, seed=9)
    dense = []
    for alpha_n in (0.01, 0.05, 0.2, 0.5):
        for alpha_d in (0.01, 0.05, 0.2, 0.5):
            half = np.log(0.5) + np.log(np.exp(np.mean(np.log(observed)))) / alpha_d
            dense.append(np.array([half * alpha_d / alpha_n, alpha_n, half, alpha_d]))
    fast = fit_law(KAPLAN_LAW, {"N": N, "T": T}, observed, delta=1e-3)
    assert fast.starts <= KAPLAN_LAW.STARTS and fast.usable
    assert fast.objective <= independent_multistart(KAPLAN_LAW, {"N": N, "T": T}, observed, dense) * (1 + 1e-6) + 1e-9


def test_batched_refit_converges_on_a_degenerate_fit_and_reports_the_bound():
    inputs = {"N": N_SMALL, "T": T_SMALL}
    start = fit_law(LOSS_LAW, inputs, DEGENERATE, delta=1e-3)
    assert start.on_bound == ["L_inf"]
    rng = np.random.default_rng(10)
    weights = rng.multinomial(9, np.full(9, 1 / 9), size=20).astype(float)
    observed = np.broadcast_to(DEGENERATE, weights.shape) * (1 + 0.002 * rng.standard_normal(weights.shape))
    theta, usable, sides = batched_refit(LOSS_LAW, inputs, observed, 1e-3, start, weights=weights)
    assert usable.mean() >= 0.9
    assert sides.shape == (20, 5) and (sides[:, 4] == -1).mean() >= 0.5 and not sides[:, :4].any()
    assert not (sides == 1).any()  # L_inf's bound there is its lower one, 0
    # each usable refit is as good as scipy's one-at-a-time refit of the same resample
    log_x = LOSS_LAW.log_inputs(inputs, start.scales)
    for r in np.flatnonzero(usable)[:5]:
        keep = weights[r] > 0
        single, _, _ = refit(LOSS_LAW, {k: v[keep] for k, v in inputs.items()}, observed[r, keep], 1e-3, start, weights=weights[r, keep])
        function = _objective(LOSS_LAW, {k: v[keep] for k, v in log_x.items()}, np.log(observed[r, keep]), weights[r, keep], 1e-3)
        assert function(theta[r])[0] <= function(single)[0] * (1 + 1e-3) + 1e-6


def test_importing_analysis_changes_nothing_and_the_fits_run_openblas_with_one_thread():
    """Snakemake sets OPENBLAS_NUM_THREADS to a rule's threads (2 for the fits), which made L-BFGS-B ~50x slower:
    the fitting commands call analysis.blas.limit_openblas_threads; importing the package leaves the setting alone."""
    import subprocess
    import sys

    code = """
import ctypes, os, numpy, scipy.optimize  # OpenBLAS loaded with 2 threads before the package
import analysis, analysis.fit, analysis.facts, analysis.report, analysis.figures
assert os.environ["OPENBLAS_NUM_THREADS"] == "2", "importing analysis changed OPENBLAS_NUM_THREADS"
from analysis.blas import limit_openblas_threads
limit_openblas_threads()
paths = {l.split(maxsplit=5)[-1].strip() for l in open('/proc/self/maps') if 'openblas' in l.lower()}
counts = []
for path in sorted(p for p in paths if p.startswith('/')):
    library = ctypes.CDLL(path)
    for name in ('openblas_get_num_threads', 'openblas_get_num_threads64_', 'scipy_openblas_get_num_threads',
                 'scipy_openblas_get_num_threads64_'):
        getter = getattr(library, name, None)
        if getter is not None:
            counts.append(getter())
            break
print(counts)
"""
    env = {**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    counts = eval(result.stdout.strip())
    if not counts:
        pytest.skip("numpy/scipy here are not linked against OpenBLAS")
    assert counts == [1] * len(counts)


def test_bootstrap_keeps_resamples_whose_loss_floor_is_zero_and_the_interval_reaches_it():
    """L_inf = 0 is a floor the loss can have (a bound of the model, not a guard of the optimiser): a resample
    refitted there is the constrained estimate and is kept at 0, so when more than a tail's share of the
    resamples land there, L_inf's interval starts at 0. Checked against scipy's one-at-a-time refits of the
    same resamples, classified here from their parameters and the form's bounds."""
    from analysis.law_fits import LawData, bootstrap_law, fit_full_data, law_record

    n = np.repeat([1e-5, 3e-5, 1e-4, 3e-4], 4)
    t = np.tile([1e-4, 3e-4, 1e-3, 3e-3], 4)
    rng = np.random.default_rng(1)
    truth = {"a": 0.004, "alpha": 0.3, "b": 0.006, "beta": 0.3, "L_inf": 0.01}
    observed = LOSS_LAW.predict(truth, N=n, T=t) * (1 + 0.01 * rng.standard_normal(n.size))
    resamples = 120
    weights = np.ones((resamples + 1, n.size))
    weights[1:] = rng.multinomial(n.size, np.full(n.size, 1 / n.size), size=resamples)
    data = LawData("loss_optimal", LOSS_LAW, {"N": n, "T": t}, np.broadcast_to(observed, weights.shape).copy(), weights,
                   1e-3, [{"point": i} for i in range(n.size)], ["run"], "test points", {"N": 2, "T": 2})
    fit = fit_full_data(data)
    assert fit.fitted and fit.result.on_bound == [] and fit.result.parameters["L_inf"] > 0
    bootstrap_law(fit)
    record = law_record(fit, 0.95)

    # the reference: scipy refits, a resample at 0 kept there, one on another bound dropped
    names = list(LOSS_LAW.parameter_names)
    floors, dropped = [], 0
    for r in range(1, resamples + 1):
        keep = weights[r] > 0
        theta, usable, _ = refit(LOSS_LAW, {"N": n[keep], "T": t[keep]}, observed[keep], 1e-3, fit.result,
                                 weights=weights[r, keep])
        bounds = LOSS_LAW.bounds(observed[keep])
        tolerance = [1e-6 * (high - low) for low, high in bounds]
        guard = [theta[i] <= bounds[i][0] + tolerance[i] or theta[i] >= bounds[i][1] - tolerance[i] for i in range(4)]
        guard.append(theta[4] >= bounds[4][1] - tolerance[4])
        if not usable or any(guard):
            dropped += 1
            continue
        floors.append(0.0 if theta[names.index("L_inf")] <= tolerance[4] else LOSS_LAW.to_parameters(theta, fit.result.scales)["L_inf"])
    at_zero = sum(value == 0.0 for value in floors)
    assert at_zero > 0.025 * resamples  # more than the lower tail holds: the design of this test
    bootstrap = record["bootstrap"]
    assert bootstrap["on_bound"] == 0 and abs(bootstrap["at_constraint"]["L_inf"] - at_zero) <= 3
    assert bootstrap["usable"] == resamples - bootstrap["failed"] and dropped <= bootstrap["failed"]
    kept = np.array(bootstrap["samples"])[:, names.index("L_inf")]
    assert int(np.sum(kept <= 1e-9)) == bootstrap["at_constraint"]["L_inf"]
    low, high = record["intervals"]["L_inf"]
    assert low == 0.0 and (low, high) == pytest.approx(percentile_interval(kept, 0.95))
    assert high == pytest.approx(percentile_interval(np.array(floors), 0.95)[1], rel=0.1)
