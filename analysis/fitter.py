"""Robust fitting of a law form: Huber loss on log residuals, bounded L-BFGS-B from a few good starts.

The objective is the Chinchilla replication's (Besiroglu et al. 2024):
``sum_i w_i * huber_delta(log f(x_i; theta) - log y_i)``, divided by ``delta**2`` so that residuals of
size ``delta`` contribute O(1) and the optimiser's tolerances mean the same for every law.

Full fits (``fit_law``): the form proposes starting points (``LawForm.starting_points``; for the loss
law, variable projection over a grid of exponents finds the basins without iterating), and each is
run to convergence by L-BFGS-B with the analytic gradient; the best is kept. When a form proposes
more than ``POLISHED_STARTS`` starts, each first runs ``SCOUT_ITERATIONS`` iterations and only the
best ``POLISHED_STARTS`` continue (bounded cost on ill-posed data).

A fit is *usable* when it converged to finite parameters that sit on no bound; the result says
which parameters ended on a bound (``on_bound``) so that callers can report it, and which of them on a
*guard* bound (``guard_bounds``): any bound but the side a parameter has as a bound of the model itself
(``LawForm.constraint_bounds``: ``L_inf = 0``, a floor the loss can have, is the constrained estimate;
an exponent at the optimiser's cap of 5 is not identified).

Bootstrap refits start from the full-data optimum: ``batched_refit`` refits every resample at once
(vectorised Levenberg-Marquardt); ``refit`` is the one-at-a-time scipy reference.

Everything here works on tiny matrices; command-line entry points that fit call
``analysis.blas.limit_openblas_threads`` first, without which L-BFGS-B is many times slower on a
loaded machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from analysis.law_forms import LawForm
from analysis.robust_loss import huber

#: L-BFGS-B options of a full fit (objective is O(1) per point at residuals of size delta).
FIT_OPTIONS = {"maxiter": 3000, "ftol": 1e-12, "gtol": 1e-8, "maxcor": 30}
#: Iterations of each start's first run, and how many of the best are then run to convergence.
SCOUT_ITERATIONS = 150
POLISHED_STARTS = 4

#: Relative distance (fraction of the bound range, or absolute when a bound is 0) counted as "on the bound".
BOUND_TOLERANCE = 1e-6
#: Newton decrement (predicted objective decrease, relative to max(1, objective)) below which a
#: bootstrap refit counts as stationary, and below which its iteration stops early.
STATIONARY_DECREMENT = 1e-6
CONVERGED_DECREMENT = 1e-10


class InsufficientDataError(ValueError):
    """Too few usable points to fit a law; the message says what is missing."""


@dataclass
class FitResult:
    """One fitted law (published-unit parameters) and how the fit went."""

    form: LawForm
    parameters: dict[str, float]
    theta: np.ndarray
    scales: dict[str, float]
    objective: float
    converged: bool
    on_bound: list[str]
    points: int
    mse: float  # mean squared error of the prediction in the output's units (as the paper reports)
    rmse_log: float  # root mean square of the log residuals
    starts: int = 1
    message: str = ""
    extra: dict = field(default_factory=dict)
    guard_bounds: list[str] = field(default_factory=list)  # on a bound other than a bound of the model (module docstring)

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(self.theta))) and np.isfinite(self.objective)

    @property
    def usable(self) -> bool:
        return self.finite and self.converged and not self.on_bound

    def predict(self, **inputs: np.ndarray) -> np.ndarray:
        return self.form.predict(self.parameters, **inputs)

    def summary(self) -> dict:
        return {
            "objective": self.objective,
            "converged": self.converged,
            "finite": self.finite,
            "on_bound": list(self.on_bound),
            "guard_bounds": list(self.guard_bounds),
            "points": self.points,
            "mse": self.mse,
            "rmse_log": self.rmse_log,
            "starts": self.starts,
            "message": self.message,
        }


def _objective(form: LawForm, log_x, log_y, weights, delta):
    def function(theta):
        log_prediction, jac = form.log_predict(theta, log_x)
        residuals = log_prediction - log_y
        if not np.all(np.isfinite(residuals)):
            return 1e30, np.zeros_like(theta)
        value, derivative = huber(residuals, delta)
        return float(weights @ value), (weights * derivative) @ jac

    return function


def _bound_sides(theta: np.ndarray, bounds: Sequence[tuple[float, float]], names: Sequence[str]) -> dict[str, str]:
    """Parameter name -> ``"low"`` or ``"high"``: the bound each parameter on a bound sits on."""
    sides = {}
    for value, (low, high), name in zip(theta, bounds, names):
        span = high - low
        tolerance = BOUND_TOLERANCE * (span if np.isfinite(span) and span > 0 else 1.0)
        if value <= low + tolerance:
            sides[name] = "low"
        elif value >= high - tolerance:
            sides[name] = "high"
    return sides


def _on_bound(theta: np.ndarray, bounds: Sequence[tuple[float, float]], names: Sequence[str]) -> list[str]:
    return list(_bound_sides(theta, bounds, names))


def guard_bounds(form: LawForm, sides: Mapping[str, str]) -> list[str]:
    """The parameters of ``sides`` (name -> bound side) on a guard bound: every bound but a bound of the model."""
    return [name for name, side in sides.items() if (name, side) not in form.constraint_bounds]


def _prepare(form: LawForm, inputs: Mapping[str, np.ndarray], observed: np.ndarray, weights):
    observed = np.asarray(observed, dtype=float)
    for variable in form.variables:
        values = np.asarray(inputs[variable], dtype=float)
        if values.shape != observed.shape:
            raise ValueError(f"{form.name}: input {variable} has shape {values.shape}, observed {observed.shape}")
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"{form.name}: input {variable} must be finite and positive")
    if not np.all(np.isfinite(observed) & (observed > 0)):
        raise ValueError(f"{form.name}: observed values must be finite and positive")
    weights = np.ones_like(observed) if weights is None else np.asarray(weights, dtype=float)
    return observed, weights


def fit_law(
    form: LawForm,
    inputs: Mapping[str, np.ndarray],
    observed: np.ndarray,
    delta: float,
    weights: np.ndarray | None = None,
    scales: Mapping[str, float] | None = None,
    extra_starts: Sequence[np.ndarray] = (),
) -> FitResult:
    """Fit ``form`` to ``observed`` at ``inputs`` (published units) from the form's starting points.

    Raises ``InsufficientDataError`` when there are fewer points than parameters + 1.
    """
    observed, weights = _prepare(form, inputs, observed, weights)
    needed = len(form.parameter_names) + 1
    if observed.size < needed:
        raise InsufficientDataError(
            f"{form.name}: {observed.size} points, need at least {needed} for {len(form.parameter_names)} parameters"
        )
    scales = dict(scales) if scales is not None else form.reference_scales(inputs)
    log_x = form.log_inputs(inputs, scales)
    log_y = np.log(observed)
    bounds = form.bounds(observed)
    function = _objective(form, log_x, log_y, weights, delta)
    starts = list(form.starting_points(log_x, observed, weights, delta)) + [np.asarray(s, dtype=float) for s in extra_starts]
    low, high = [b[0] for b in bounds], [b[1] for b in bounds]
    starts = [np.clip(np.asarray(start, dtype=float), low, high) for start in starts]

    def run(start, options):
        return minimize(function, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options)

    if len(starts) > POLISHED_STARTS:
        # many starts: each runs a short L-BFGS-B and only the best few go on to convergence
        # (bounded cost on ill-posed data, where single runs can crawl for thousands of iterations)
        scouts = [run(start, {**FIT_OPTIONS, "maxiter": SCOUT_ITERATIONS}) for start in starts]
        scouts = sorted(scouts, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)[:POLISHED_STARTS]
        finished = [scout if scout.success else run(scout.x, FIT_OPTIONS) for scout in scouts]
    else:
        finished = [run(start, FIT_OPTIONS) for start in starts]
    best = min(finished, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
    converged = bool(best.success) or _stationary(function, best.x, bounds)
    return _result(form, best.x, best.fun, converged, str(best.message), scales, log_x, observed, bounds, len(starts))


def _stationary(function, theta, bounds, tolerance: float = 1e-3) -> bool:
    """Projected gradient small: a line-search stop at the precision limit still counts as converged."""
    value, gradient = function(theta)
    low = np.array([b[0] for b in bounds])
    high = np.array([b[1] for b in bounds])
    projected = np.where((theta <= low) & (gradient > 0), 0.0, gradient)
    projected = np.where((theta >= high) & (projected < 0), 0.0, projected)
    return bool(np.isfinite(value) and np.max(np.abs(projected)) <= tolerance * max(1.0, abs(value)))


def _result(form, theta, objective, converged, message, scales, log_x, observed, bounds, starts) -> FitResult:
    theta = np.asarray(theta, dtype=float)
    log_prediction, _ = form.log_predict(theta, log_x)
    residual_log = log_prediction - np.log(observed)
    prediction = np.exp(log_prediction)
    sides = _bound_sides(theta, bounds, form.parameter_names)
    return FitResult(
        form=form,
        parameters=form.to_parameters(theta, scales),
        theta=theta,
        scales=dict(scales),
        objective=float(objective),
        converged=converged,
        on_bound=list(sides),
        points=int(observed.size),
        mse=float(np.mean((prediction - observed) ** 2)),
        rmse_log=float(np.sqrt(np.mean(residual_log**2))),
        starts=starts,
        message=message,
        guard_bounds=guard_bounds(form, sides),
    )


def refit(
    form: LawForm,
    inputs: Mapping[str, np.ndarray],
    observed: np.ndarray,
    delta: float,
    start: FitResult,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, bool, bool]:
    """Refit from ``start``'s optimum (same reference scales): ``(theta, usable, on_bound)``.

    Used for bootstrap resamples; returns internal parameters (``form.to_parameters`` converts).
    """
    observed = np.asarray(observed, dtype=float)
    weights = np.ones_like(observed) if weights is None else np.asarray(weights, dtype=float)
    log_x = form.log_inputs(inputs, start.scales)
    bounds = form.bounds(observed)
    x0 = np.clip(start.theta, [b[0] for b in bounds], [b[1] for b in bounds])
    function = _objective(form, log_x, np.log(observed), weights, delta)
    result = minimize(
        function,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-9},
    )
    theta = np.asarray(result.x, dtype=float)
    finite = bool(np.all(np.isfinite(theta)) and np.isfinite(result.fun))
    hit = bool(_on_bound(theta, bounds, form.parameter_names))
    converged = bool(result.success) or _stationary(function, theta, bounds)
    return theta, finite and converged, hit


def batched_refit(
    form: LawForm,
    inputs: Mapping[str, np.ndarray],
    observed: np.ndarray,
    delta: float,
    start: FitResult,
    weights: np.ndarray | None = None,
    iterations: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refit many resamples at once from ``start``'s optimum: ``(theta (R, p), usable (R,), bound_sides (R, p))``.

    ``inputs`` are shared by all resamples (published units, shape ``(n,)``); ``observed`` is
    ``(R, n)`` and ``weights`` ``(R, n)`` (multiplicities; 0 drops a point, NaN observations must
    have weight 0). The same Huber objective as ``fit_law`` is minimised by a vectorised
    Levenberg-Marquardt on its iteratively reweighted least-squares form; a parameter on a bound
    whose gradient points outwards is held there (active set), the others are stepped and clipped
    to the bounds. ``usable``: finite, with a small Newton decrement over the free parameters.
    ``bound_sides[r, i]``: -1 where parameter ``i`` of resample ``r`` ended on its lower bound, +1 on its
    upper bound, 0 inside (``LawForm.constraint_bounds`` tells a bound of the model from a guard).
    """
    observed = np.atleast_2d(np.asarray(observed, dtype=float))
    resamples, _ = observed.shape
    weights = np.ones_like(observed) if weights is None else np.asarray(weights, dtype=float).copy()
    weights[~np.isfinite(observed)] = 0.0
    log_y = np.log(np.where(np.isfinite(observed) & (observed > 0), observed, 1.0))
    log_x = form.log_inputs(inputs, start.scales)
    parameters = len(form.parameter_names)
    low = np.empty((resamples, parameters))
    high = np.empty((resamples, parameters))
    for r in range(resamples):
        present = weights[r] > 0
        row_bounds = form.bounds(observed[r, present] if present.any() else observed[r, :1])
        low[r] = [b[0] for b in row_bounds]
        high[r] = [b[1] for b in row_bounds]
    theta = np.clip(np.broadcast_to(start.theta, (resamples, parameters)), low, high).copy()
    theta, objective, decrement = _levenberg_marquardt(form, log_x, log_y, weights, delta, theta, low, high, iterations)
    finite = np.all(np.isfinite(theta), axis=1) & np.isfinite(objective)
    stationary = np.abs(decrement) <= STATIONARY_DECREMENT * np.maximum(1.0, objective)
    span = high - low
    sides = np.zeros(theta.shape, dtype=np.int8)
    sides[theta <= low + BOUND_TOLERANCE * span] = -1
    sides[theta >= high - BOUND_TOLERANCE * span] = 1
    return theta, finite & stationary, sides


def _levenberg_marquardt(form, log_x, log_y, weights, delta, theta, low, high, iterations):
    """Vectorised projected Levenberg-Marquardt over rows: ``(theta, objective, Newton decrement)``."""
    resamples, parameters = theta.shape
    eye = np.eye(parameters)

    def evaluate(values, rows):
        log_prediction, jac = _batched_log_predict(form, values, log_x)
        residuals = log_prediction - log_y[rows]
        loss, _ = huber(residuals, delta)
        objective = np.sum(weights[rows] * np.where(np.isfinite(loss), loss, 1e30), axis=1)
        return objective, residuals, jac

    def local_model(rows, values, residuals, jac):
        """Gradient and Gauss-Newton Hessian of the reweighted form; parameters held on a bound get a zero
        gradient and an identity block, so that their step is zero."""
        robust = weights[rows] * np.minimum(1.0, delta / np.maximum(np.abs(residuals), 1e-300))
        robust = np.where(np.isfinite(residuals), robust, 0.0)
        transposed = np.swapaxes(np.where(np.isfinite(jac), jac, 0.0), 1, 2)  # (r, p, n)
        hessian = (transposed * robust[:, None, :]) @ np.swapaxes(transposed, 1, 2) / delta**2
        gradient = (transposed @ (robust * np.where(np.isfinite(residuals), residuals, 0.0))[..., None])[..., 0] / delta**2
        span = high[rows] - low[rows]
        at_low = values <= low[rows] + BOUND_TOLERANCE * span
        at_high = values >= high[rows] - BOUND_TOLERANCE * span
        held = (at_low & (gradient > 0)) | (at_high & (gradient < 0))
        gradient = np.where(held, 0.0, gradient)
        hessian = np.where(held[:, :, None] | held[:, None, :], 0.0, hessian) + held[:, :, None] * eye
        ridge = 1e-12 * np.einsum("rii->r", hessian)[:, None, None] + 1e-300
        return gradient, hessian + ridge * eye

    def newton_decrement(gradient, hessian):
        return np.einsum("ri,ri->r", gradient, np.linalg.solve(hessian, gradient[..., None])[..., 0])

    everyone = np.arange(resamples)
    objective, residuals, jac = evaluate(theta, everyone)
    damping = np.full(resamples, 1e-3)
    quiet = np.zeros(resamples, dtype=int)  # consecutive accepted steps without meaningful progress
    active = everyone
    for _ in range(iterations):
        if active.size == 0:
            break
        gradient, hessian = local_model(active, theta[active], residuals[active], jac[active])
        decrement = newton_decrement(gradient, hessian)
        done = decrement <= CONVERGED_DECREMENT * np.maximum(1.0, objective[active])
        keep = ~done
        active, gradient, hessian = active[keep], gradient[keep], hessian[keep]
        if active.size == 0:
            break
        diagonal = np.einsum("rii->ri", hessian)
        system = hessian + damping[active, None, None] * (diagonal[:, :, None] * eye)
        step = np.linalg.solve(system, -gradient[..., None])[..., 0]
        candidate = np.clip(theta[active] + step, low[active], high[active])
        new_objective, new_residuals, new_jac = evaluate(candidate, active)
        old = objective[active]
        better = np.isfinite(new_objective) & (new_objective <= old)
        rows = active[better]
        theta[rows] = candidate[better]
        residuals[rows] = new_residuals[better]
        jac[rows] = new_jac[better]
        objective[rows] = new_objective[better]
        progress = np.where(better, old - new_objective, 0.0) > 1e-13 * np.maximum(old, 1.0)
        damping[active] = np.where(better, np.maximum(damping[active] / 3, 1e-9), np.minimum(damping[active] * 4, 1e12))
        # stop a row after 8 accepted steps in a row without progress, or when even a tiny
        # (heavily damped) step no longer lowers the objective
        quiet[active] = np.where(progress, 0, quiet[active] + better)
        active = active[(quiet[active] < 8) & (damping[active] < 1e12)]
    gradient, hessian = local_model(everyone, theta, residuals, jac)
    return theta, objective, newton_decrement(gradient, hessian)


def _batched_log_predict(form: LawForm, theta: np.ndarray, log_x: Mapping[str, np.ndarray]):
    """``form.log_predict`` for a batch of parameter vectors ``(R, p)`` at shared inputs ``(n,)``."""
    columns = {v: log_x[v][None, :] for v in form.variables}
    log_prediction, jac = form.log_predict(tuple(theta[:, i : i + 1] for i in range(theta.shape[1])), columns)
    return log_prediction, jac
