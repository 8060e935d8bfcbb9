"""One law's points, its full-data fit, its bootstrap refits and its ``laws.json`` record.

``LawData`` holds a law's points for every resample (row 0: as measured; rows 1..R: the runs'
noise resampled, ``analysis.resampling``) with weights (0 drops a point: a missing loss, an optimum
on the grid's edge when edges are excluded). ``fit_full_data`` fits row 0 (``analysis.fitter``),
``bootstrap_law`` refits rows 1..R from that optimum, and ``law_record`` writes the result with
percentile intervals and the bound the dropped resamples put on them (``analysis.intervals``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.fitter import BOUND_TOLERANCE, FitResult, InsufficientDataError, batched_refit, fit_law
from analysis.intervals import bounds_with_dropped, percentile_interval
from analysis.law_forms import FORMS, LOSS_LAW, LawForm

#: What each variable of a law means, as every record states it.
UNITS = {
    "N": "billions of non-embedding parameters (raw count / 1e9)",
    "T": "billions of video tokens",
    "B": "tokens per batch (batch_clips x tokens_per_clip)",
    "C": "training FLOPs",
    "LR": "learning rate (constant schedule)",
    "L": "loss (the configured loss column)",
    "N_opt": "non-embedding parameters (raw count)",
}


@dataclass
class LawData:
    """Points of one law for R + 1 rows (row 0: the data as measured)."""

    name: str
    form: LawForm
    inputs: dict  # variable -> (n,) published units
    observed: np.ndarray  # (R+1, n)
    weights: np.ndarray  # (R+1, n)
    delta: float  # Huber delta on log residuals
    labels: list  # per point: dict describing it
    runs: list[str]
    requirement: str  # what the law needs, for the "not fitted" reason
    minimum_distinct: dict  # variable -> distinct values needed


@dataclass
class LawFit:
    data: LawData
    result: FitResult | None
    reason: str = ""
    samples: np.ndarray | None = None  # (R_kept, p) published units
    resample_index: np.ndarray | None = None  # which resamples (1..R) the samples came from
    failed: int = 0  # resamples whose refit did not converge
    on_bound: int = 0  # converged resamples with a parameter on a bound the full-data fit is not on (dropped)
    at_constraint: dict = field(default_factory=dict)  # kept resamples on a bound of the model, per parameter

    @property
    def fitted(self) -> bool:
        return self.result is not None and not self.reason

    @property
    def dropped(self) -> int:
        return self.failed + self.on_bound

    def parameter_rows(self) -> np.ndarray:
        """``(1 + R_kept, p)``: the full-data parameters, then the kept resamples'."""
        names = self.data.form.parameter_names
        first = np.array([[self.result.parameters[name] for name in names]])
        return np.concatenate([first, self.samples]) if self.samples is not None and len(self.samples) else first


def _missing_data(data: LawData) -> str:
    use = data.weights[0] > 0
    counts = {v: len(np.unique(np.round(np.log(data.inputs[v][use]), 9))) for v in data.form.variables}
    short = [f"{counts[v]} distinct {v} (need {need})" for v, need in data.minimum_distinct.items() if counts[v] < need]
    if int(use.sum()) < len(data.form.parameter_names) + 1 or short:
        have = f"{int(use.sum())} usable points" + (f", {', '.join(short)}" if short else "")
        return f"not enough data: {data.requirement}; have {have}"
    return ""


def fit_full_data(data: LawData) -> LawFit:
    """Fit row 0; a law that cannot be fitted gets the reason."""
    reason = _missing_data(data)
    if reason:
        return LawFit(data, None, reason)
    use = data.weights[0] > 0
    inputs = {k: v[use] for k, v in data.inputs.items()}
    try:
        result = fit_law(data.form, inputs, data.observed[0, use], data.delta, weights=data.weights[0, use],
                         scales=data.form.reference_scales(inputs))
    except InsufficientDataError as error:
        return LawFit(data, None, f"not enough data: {error}")
    if not result.finite:
        return LawFit(data, result, "the fit did not reach finite parameters")
    return LawFit(data, result)


def bootstrap_law(fit: LawFit) -> None:
    """Refit resamples 1..R from the full-data optimum (vectorised) and keep the usable ones.

    A resample is kept when its refit converged and it put no parameter on a bound that the
    full-data fit is not on, other than a bound of the model itself (``LawForm.constraint_bounds``:
    ``L_inf = 0``, a floor the loss can have). A resample there is the constrained estimate, the
    same estimator as the full-data fit's, so it is kept at the bound (``at_constraint`` counts
    them): dropping it would cut the interval short on that side, and an interval of ``L_inf`` would
    exclude 0 only because the resamples at 0 were left out. When the full-data fit itself holds a
    parameter on a bound (e.g. ``L_inf = 0`` on degenerate data), resamples holding it there too are
    kept: the intervals are then those of the bounded estimator, conditional on that bound
    (``law_record`` says so).
    """
    data = fit.data
    if not fit.fitted or data.observed.shape[0] <= 1:
        return
    theta, usable, sides = batched_refit(data.form, data.inputs, data.observed[1:], data.delta, fit.result,
                                         weights=data.weights[1:])
    names = data.form.parameter_names
    held = np.array([name in fit.result.on_bound for name in names])
    constraint = dict(data.form.constraint_bounds)
    allowed = np.zeros(sides.shape, dtype=bool)  # on a bound of the model: the constrained estimate, kept
    for i, name in enumerate(names):
        if name in constraint:
            allowed[:, i] = sides[:, i] == (-1 if constraint[name] == "low" else 1)
    new_bound = np.any((sides != 0) & ~held & ~allowed, axis=1)
    kept = usable & ~new_bound
    fit.failed = int(np.sum(~usable))
    fit.on_bound = int(np.sum(usable & new_bound))
    fit.at_constraint = {name: int(np.sum(kept & allowed[:, i] & ~held[i])) for i, name in enumerate(names)
                         if name in constraint}
    rows = [data.form.to_parameters(t, fit.result.scales) for t in theta[kept]]
    fit.samples = np.array([[row[n] for n in names] for row in rows]) if rows else np.empty((0, len(names)))
    fit.resample_index = np.flatnonzero(kept) + 1


def law_record(fit: LawFit, level: float) -> dict:
    """The ``laws.json`` record of one law (``status`` fitted or not fitted, with the reason)."""
    data = fit.data
    record = {
        "form": data.form.name,
        "formula": data.form.formula,
        "units": {**{v: UNITS[v] for v in data.form.variables}, data.form.output: data.form.output_units},
        "runs": sorted(set(data.runs)),
        "requirement": data.requirement,
    }
    if not fit.fitted:
        return {**record, "status": "not fitted", "reason": fit.reason}
    result = fit.result
    record.update(
        status="fitted",
        parameters=dict(result.parameters),
        exponents=list(data.form.exponent_names),
        fit={**result.summary(), "huber_delta": data.delta, "usable": result.usable},
        points=[{**label, "value": float(v), "weight": float(w)}
                for label, v, w in zip(data.labels, data.observed[0], data.weights[0]) if w > 0],
        intervals={},
    )
    model = [name for name in result.on_bound if name not in result.guard_bounds]
    warnings = ([f"parameters ended on a guard bound of the optimiser (not identified): {', '.join(result.guard_bounds)}"]
                if result.guard_bounds else []) + (
        [f"parameters at a bound of the model (the constrained estimate): {', '.join(model)}"] if model else []) + (
        [] if result.converged else ["optimiser did not report convergence"])
    if warnings:
        record["warning"] = "; ".join(warnings)
    if fit.samples is not None:
        record.update(_bootstrap_record(fit, level))
    return record


def guard_bounds_of(fit_summary: dict | None, parameters: dict | None, form: str | None = None) -> list[str]:
    """The parameters of a recorded fit (a law's ``fit`` summary, or a recipe-curve cell's ``loss_law``) that ended on
    a guard bound of the optimiser, where the fit is not identified (``analysis.fitter``); a bound of the model itself
    (``L_inf = 0``, the constrained estimate) is none. A record written before ``guard_bounds`` existed names only
    ``on_bound``: a parameter there whose model bound is its lower one counts as on that bound when it is at 0 (the
    only such bound is a floor at 0), as on a guard bound otherwise (its upper end)."""
    fit_summary = fit_summary or {}
    if "guard_bounds" in fit_summary:
        return list(fit_summary["guard_bounds"])
    floors = {name for name, side in FORMS.get(form or LOSS_LAW.name, LOSS_LAW).constraint_bounds if side == "low"}
    values = parameters or {}
    return [name for name in fit_summary.get("on_bound") or []
            if not (name in floors and abs(values.get(name, np.inf)) <= BOUND_TOLERANCE)]


def _bootstrap_record(fit: LawFit, level: float) -> dict:
    """``bootstrap`` (counts, kept samples) and ``intervals`` (with the dropped resamples' bound) of a fitted law."""
    names = fit.data.form.parameter_names
    resamples = int(fit.data.observed.shape[0] - 1)
    bootstrap = {
        "resamples": resamples,
        "usable": int(len(fit.samples)),
        "failed": fit.failed,
        "on_bound": fit.on_bound,
        "at_constraint": dict(fit.at_constraint),
        "held_at_bound": list(fit.result.on_bound),
        "samples": [[float(f"{v:.10g}") for v in row] for row in fit.samples],
    }
    if len(fit.samples) < 2:
        bootstrap["no_interval_reason"] = (
            f"only {len(fit.samples)} of {resamples} resamples usable (2 needed): {fit.failed} refits did not converge, "
            f"{fit.on_bound} put a parameter on a bound the full-data fit is not on")
        return {"bootstrap": bootstrap, "intervals": {}}
    bootstrap["intervals_with_dropped"] = {n: bounds_with_dropped(fit.samples[:, i], fit.dropped, level) for i, n in enumerate(names)}
    if fit.result.on_bound:
        bootstrap["note"] = (
            f"the full-data fit holds {', '.join(fit.result.on_bound)} on its bound; the intervals are those of the "
            "bounded fit, conditional on that bound (they do not include the uncertainty of the bound itself)")
    intervals = {n: list(percentile_interval(fit.samples[:, i], level)) for i, n in enumerate(names)}
    return {"bootstrap": bootstrap, "intervals": intervals}
