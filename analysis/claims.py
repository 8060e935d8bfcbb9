"""The paper's claims, each tested through one quantity and its interval by ``analysis.verdicts``.

Each function returns ``{"verdict", "tests": [...], ...evidence}``: a test names the quantity, its
value, its interval (the dropped-resample bound when the bootstrap dropped some, so a dropped
resample can only widen it), the reference it is compared with and its own verdict. What each
claim tests:

1. L(N, T) = a T^-alpha + b N^-beta + L_inf at the best (B, LR): the exponents alpha and beta
   (positive: the loss falls with T and with N). Untestable when a parameter ends on a guard bound of the
   optimiser (the law is not identified there; ``analysis.law_fits.guard_bounds_of``) or every optimum lies on the
   grid's edge. L_inf at 0, its floor, is a bound of the model itself: the constrained estimate, tested as any fit.
2. The loss is sensitive to B and LR: the grid's spread against the noise (``analysis.sensitivity``).
3a. B_opt(N, T) and LR_opt(N, T) = a T^b N^c: each exponent, with the sign the paper found.
   Untestable when most optima lie on the grid's edge along that axis. Beside the batch-size law: where
   the paper's own B_opt(N, T) falls at the grid's (size, budget) pairs, against the grid's batches.
3b. The laws pick the best (B, LR) of a held-out size: the best other measured cell's loss over the
   predicted cell's, minus 1 (positive: the predicted cell is the best), its basic bootstrap interval
   over resampled held-out runs with the best other cell found again in each resample (a minimum over
   noisy cells lies low: the interval takes that winner's curse off). Each group's ``comparison`` reads the
   interval: ``better`` (above 0: better than every other cell beyond the noise), ``within`` (contains 0: within
   the noise of the best other cell), ``worse`` (below 0).
3c. The precise recipe's compute-optimal model is smaller: the paired interval of
   1 - N_precise / N_conventional at the target budget. Untestable when either loss law ends on a guard bound;
   so is each fixed cell's row whose loss law does.
4. The law predicts held-out sizes: over the held-out sizes' points (a compute-optimal run at a fitting size is a
   budget extrapolation, checked apart: ``analysis.measurements.heldout``), the mean relative error lies within +-sigma
   (the run-to-run noise) with the configured confidence (two one-sided tests; the interval of the mean
   over resampled runs, so points measured by the same runs are not counted as independent); points outside
   their prediction intervals are shown beside chance's count.
"""

from __future__ import annotations

import numpy as np

from analysis import paper
from analysis.intervals import basic_interval, finite_values
from analysis.law_fits import guard_bounds_of
from analysis.runs import mean_noise, same_learning_rate
from analysis.verdicts import all_of, flipped, from_interval, not_tested

#: Claim 3a is untestable when more than this fraction of the optima lie on the grid's edge along the law's axis.
MOSTLY_ON_EDGE = 0.5


def _interval(estimate: dict | None, key: str | None = None) -> list | None:
    """The interval a verdict uses: the dropped-resample bound when resamples were dropped, else the interval."""
    if not estimate:
        return None
    bounded = estimate.get("interval_with_dropped") if estimate.get("dropped") else None
    return bounded if bounded is not None else estimate.get("interval")


def _test(quantity: str, value, interval, reference: float = 0.0, unit: str = "number") -> dict:
    """One tested quantity (``unit``: number, or fraction when it reads as a percentage) and its verdict."""
    return {"quantity": quantity, "value": value, "interval": interval, "reference": reference, "unit": unit,
            "verdict": from_interval(interval, reference)}


def _not_tested(reason: str, **evidence) -> dict:
    return {"verdict": not_tested(), "reason": reason, "tests": [], **evidence}


def _law_interval(record: dict, parameter: str) -> list | None:
    bounded = (record.get("bootstrap") or {}).get("intervals_with_dropped", {}).get(parameter)
    dropped = (record.get("bootstrap") or {}).get("failed", 0) + (record.get("bootstrap") or {}).get("on_bound", 0)
    return bounded if dropped and bounded is not None else (record.get("intervals") or {}).get(parameter)


def loss_law(document: dict, noise_std: float | None) -> dict:
    """Claim 1 (module docstring)."""
    record = document["laws"].get("loss_optimal", {})
    if record.get("status") != "fitted":
        return _not_tested(f"the law could not be fitted: {record.get('reason', 'absent from the laws file')}")
    p, fit, bootstrap = record["parameters"], record["fit"], record.get("bootstrap") or {}
    interval = (record.get("intervals") or {}).get("L_inf")
    edge = record.get("edge_points") or {}
    guard = guard_bounds_of(fit, p, record.get("form"))
    evidence = {
        "points": fit["points"], "rms_log_residual": fit["rmse_log"], "noise_relative_std": noise_std,
        "residual_over_noise": fit["rmse_log"] / noise_std if noise_std else None,
        "parameters": p, "intervals": record.get("intervals") or {}, "on_bound": fit["on_bound"], "guard_bounds": guard,
        "l_inf": {"value": p["L_inf"], "interval": interval, "on_bound": "L_inf" in fit["on_bound"],
                  "at_floor": "L_inf" in fit["on_bound"] and "L_inf" not in guard,  # 0: a bound of the model, kept
                  "excludes_zero": bool(interval and interval[0] > 0)},
        "all_optima_on_edge": bool(edge.get("optima") and edge.get("on_edge") == edge.get("optima")),
        "edge_optima": edge.get("on_edge"), "optima": edge.get("optima"), "one_clip_optima": edge.get("at_one_clip_batch"),
        "resamples": bootstrap.get("resamples"), "dropped_resamples": bootstrap.get("failed", 0) + bootstrap.get("on_bound", 0),
        "failed_resamples": bootstrap.get("failed", 0), "on_bound_resamples": bootstrap.get("on_bound", 0),
        "l_inf_zero_resamples": (bootstrap.get("at_constraint") or {}).get("L_inf", 0),
    }
    if guard:
        return _not_tested(f"degenerate fit: {', '.join(guard)} ended on a guard bound of the optimiser, where the law is not "
                           "identified", **evidence)
    if evidence["all_optima_on_edge"]:
        return _not_tested("every optimum lies on the grid's edge: each optimal loss is only an upper bound", **evidence)
    tests = [_test(f"exponent {name}", p[name], _law_interval(record, name)) for name in ("alpha", "beta")]
    return {"verdict": all_of(t["verdict"] for t in tests), "tests": tests, **evidence}


def sensitivity(sens: dict | None) -> dict:
    """Claim 2: the whole grid's spread against the noise (``analysis.sensitivity``)."""
    if sens is None:
        return _not_tested("fewer than two completed grid runs per fitting size and budget")
    summary = sens["summary"]["whole"]
    if sens["noise_relative_std"] is None or summary["interval"] is None:
        return _not_tested("no run-to-run noise estimate to compare the spread with", sensitivity=sens)
    test = _test("median spread of the loss over each grid (worst / best - 1)", summary["median"], summary["interval"], unit="fraction")
    return {"verdict": test["verdict"], "tests": [test], "sensitivity": sens}


def paper_batch_optima_on_grid(document: dict) -> dict | None:
    """The paper's B_opt(N, T) (tokens) at each (size, budget) pair of the grid, against the grid's batch range.

    Where the published law puts the optimum below the grid's smallest batch, the grid cannot bracket
    it at this scale even if the paper's law holds here: an optimum at the smallest batch is then what
    the paper predicts, not a defect of the fit. ``None`` without optima or grid cells.
    """
    optima = document.get("optima") or []
    batches = [cell["batch_tokens"] for grid in document.get("grids") or [] for cell in grid["cells"]]
    if not optima or not batches:
        return None
    values = paper.optimal_batch_tokens([o["N"] for o in optima], [o["T"] for o in optima])
    low, high = float(min(batches)), float(max(batches))
    return {"pairs": int(values.size), "min_tokens": float(values.min()), "max_tokens": float(values.max()),
            "below_grid": int((values < low).sum()), "above_grid": int((values > high).sum()),
            "grid_batch_tokens": [low, high]}


def hyperparameter_law(document: dict, name: str, edge_fraction: float | None) -> dict:
    """Claim 3a for ``batch_size`` or ``learning_rate`` (module docstring)."""
    record = document["laws"].get(name, {})
    published = paper.BATCH_SIZE if name == "batch_size" else paper.LEARNING_RATE
    mostly_on_edge = edge_fraction is None or edge_fraction > MOSTLY_ON_EDGE
    on_grid = {"paper_on_grid": paper_batch_optima_on_grid(document)} if name == "batch_size" else {}
    if record.get("status") != "fitted":
        return _not_tested(f"the law could not be fitted: {record.get('reason', 'absent from the laws file')}",
                           fitted=False, mostly_on_edge=mostly_on_edge, edge_fraction=edge_fraction,
                           edge_points=record.get("edge_points"), **on_grid)
    evidence = {"parameters": record["parameters"], "intervals": record.get("intervals") or {}, "paper": published,
                "edge_fraction": edge_fraction, "scatter_rms_log": record["fit"]["rmse_log"], **on_grid}
    if mostly_on_edge:
        return _not_tested("most optima lie on the grid's edge along this axis: the law would describe the grid's boundary",
                           fitted=True, mostly_on_edge=True, **evidence)
    tests = []
    for key, axis in (("b", "T"), ("c", "N")):
        interval = _law_interval(record, key)
        sign = np.sign(published[key])
        test = _test(f"{axis} exponent, signed as the paper's ({published[key]:+g})", record["parameters"][key] * sign,
                     interval if sign > 0 else flipped(interval))
        tests.append({**test, "exponent": record["parameters"][key], "exponent_interval": interval, "axis": axis})
    return {"verdict": all_of(t["verdict"] for t in tests), "tests": tests, "fitted": True, "mostly_on_edge": False, **evidence}


def heldout_cells(heldout_runs: dict | None, noise_std: float | None, level: float, tokens_per_clip: float) -> dict:
    """Claim 3b (module docstring), over every held-out hyperparameter group with the predicted cell measured."""
    groups = [g for g in (heldout_runs or {}).get("groups", []) if g.get("kind") == "hyperparameters" and g.get("status") == "evaluated"]
    if not groups:
        return _not_tested("no held-out hyperparameter runs were evaluated")
    if not noise_std:
        return _not_tested("no run-to-run noise estimate to compare the cells with")
    tests, details = [], []
    for group in groups:
        cell = group["predicted_cell"]

        def is_predicted(other):
            return bool(other["batch_clips"] * tokens_per_clip == cell["batch_tokens"]
                        and same_learning_rate(other["learning_rate"], cell["learning_rate"]))

        others = [c["loss"] for c in group.get("cells", []) if not is_predicted(c) and c["loss"] is not None]  # not unstable
        detail = {"size": group["size"], "tokens": group["tokens"], "predicted_cell": cell, "best_cell": group.get("best_cell"),
                  "cells": len(group.get("cells", [])), "replicates": group.get("replicates") or 1}
        if cell.get("measured_loss") is None or not others:
            details.append({**detail, "margin": None, "within_noise_of_best": None})
            continue
        margin = min(others) / cell["measured_loss"] - 1
        interval = basic_interval(margin, group.get("margin_resamples"), level)
        if interval is None:
            details.append({**detail, "margin": margin, "within_noise_of_best": None,
                            "reason": "the group carries no resampled margins"})
            continue
        tests.append(_test(f"{group['size']}: best other cell's loss / predicted cell's - 1", margin, interval, unit="fraction"))
        resampled = finite_values(group["margin_resamples"])
        details.append({**detail, "margin": margin, "margin_interval": interval, **_margin_comparison(interval),
                        "noise_half_width": (interval[1] - interval[0]) / 2, "resamples": int(resampled.size),
                        "resample_shift": float(resampled.mean()) - margin})
    if not tests:
        return _not_tested("the predicted cell or its neighbours were not run", groups=details)
    halves = {d["noise_half_width"] for d in details if d.get("noise_half_width") is not None}
    return {"verdict": all_of(t["verdict"] for t in tests), "tests": tests, "groups": details,
            "noise_half_width": max(halves)}


def _margin_comparison(interval: list) -> dict:
    """Where the predicted cell stands against the best other cell, read from the margin's interval (module docstring)."""
    low, high = interval
    comparison = "better" if low > 0 else "worse" if high < 0 else "within"
    return {"comparison": comparison, "within_noise_of_best": comparison == "within"}


def recipe_comparison(document: dict) -> dict:
    """Claim 3c (module docstring)."""
    comparison = document.get("comparison", {})
    if comparison.get("status") != "computed":
        return _not_tested(comparison.get("reason", "no comparison in the laws file"))
    reduction = comparison["model_size_reduction"]
    interval = _interval(reduction)
    evidence = {"target_flops": comparison["target_flops"], "model_size_reduction": reduction,
                "inference_flops_reduction": comparison["inference_flops_reduction"],
                "paired_resamples": comparison.get("paired_resamples"), "dropped_resamples": comparison.get("dropped_resamples"),
                "by_cell": _reductions_by_cell(document.get("recipe_curves", {}))}
    laws = document.get("laws", {})
    guarded = {name: guard_bounds_of(laws.get(name, {}).get("fit"), laws.get(name, {}).get("parameters"), laws.get(name, {}).get("form"))
               for name in ("loss_optimal", "loss_conventional")}
    guarded = {name: bounds for name, bounds in guarded.items() if bounds}
    if guarded:
        return _not_tested("a loss law is not identified: " + "; ".join(f"{name} has {', '.join(bounds)} on a guard bound of the "
                                                                          "optimiser" for name, bounds in guarded.items()), **evidence)
    if interval is None:
        return _not_tested("no bootstrap interval (bootstrap_resamples is 0 or too few resamples were kept)", **evidence)
    test = _test("model-size reduction 1 - N_precise / N_conventional at the target budget", reduction["value"], interval,
                 unit="fraction")
    return {"verdict": test["verdict"], "tests": [test], **evidence}


def _reductions_by_cell(curves: dict) -> list[dict]:
    """Each fixed cell's model-size reduction at the curves' largest budget, with its verdict: untestable where the cell's
    loss law ended on a guard bound of the optimiser (not identified there)."""
    rows = []
    for record in curves.get("cells", []):
        row = {"batch_clips": record["batch_clips"], "learning_rate": record["learning_rate"], "conventional": record["conventional"]}
        if record.get("status") == "computed":
            last = record["points"][-1]
            interval = _interval(last["model_size_reduction"])
            law = record.get("loss_law") or {}
            guard = guard_bounds_of(law, law.get("parameters"))
            row.update(flops=last["flops"], model_size_reduction=last["model_size_reduction"], verdict=from_interval(interval),
                       inference_flops_reduction=last["inference_flops_reduction"], dropped_resamples=record["dropped_resamples"],
                       guard_bounds=guard)
            if guard:
                row.update(verdict=not_tested(), reason=f"the cell's loss law is not identified: {', '.join(guard)} ended on a "
                                                        "guard bound of the optimiser")
            elif interval is None:
                row["reason"] = f"no bootstrap interval ({record['dropped_resamples']} resamples dropped)"
        else:
            row.update(verdict=not_tested(), reason=record.get("reason"))
        rows.append(row)
    return rows


def heldout_losses(heldout: dict, noise_std: float | None, level: float) -> dict:
    """Claim 4 (module docstring): two one-sided tests of the mean relative error against +-sigma, its interval over
    resampled runs (points measured by the same runs move together)."""
    errors = np.array([p["relative_error"] for p in heldout["table"]], dtype=float)
    if errors.size < 2:
        return _not_tested("fewer than two held-out points (heldout_sizes in the fit config, or no held-out runs trained)")
    if not noise_std:
        return _not_tested("no run-to-run noise estimate to set the tolerance")
    noise_std = mean_noise(noise_std, min(p.get("replicates") or 1 for p in heldout["table"]))  # a measured point's noise
    mean = float(errors.mean())
    if heldout.get("mean_relative_error_interval") is None:
        return _not_tested(f"no interval of the mean relative error: {heldout.get('mean_relative_error_reason', 'none given')}")
    low, high = heldout["mean_relative_error_interval"]  # over resampled runs (analysis.measurements.mean_relative_error)
    tests = [_test("noise minus the mean relative error (prediction not too high)", noise_std - mean, [noise_std - high, noise_std - low],
                   unit="fraction"),
             _test("noise plus the mean relative error (prediction not too low)", noise_std + mean, [noise_std + low, noise_std + high],
                   unit="fraction")]
    return {"verdict": all_of(t["verdict"] for t in tests), "tests": tests, "mean_relative_error": mean,
            "mean_relative_error_interval": [low, high], "tolerance": noise_std}
