"""The measured facts of the experiment beside the claims: its design, the noise, the laws' coefficients beside the
paper's, held-out errors, the empirical compute-optimal sizes, data reuse, the caption checks, performance, timings.

Every function returns plain numbers, flags and short labels for ``results/facts.json``; none writes prose.
Rates, errors and noise are fractions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import binom

from analysis import paper
from analysis.intervals import basic_interval
from analysis.law_fits import guard_bounds_of
from analysis.runs import RunsTable, noise_quantile, run_relative_std
from analysis.sensitivity import grid_column
from analysis.verdicts import from_interval
from pipeline.formats import benchmark_rows

#: Published value of each coefficient the summary sets beside ours: (law, parameter) -> value.
PAPER_COEFFICIENTS = {
    ("loss_optimal", "alpha"): paper.LOSS_OPTIMAL["alpha"], ("loss_optimal", "beta"): paper.LOSS_OPTIMAL["beta"],
    ("loss_optimal", "L_inf"): paper.LOSS_OPTIMAL["L_inf"], ("batch_size", "b"): paper.BATCH_SIZE["b"],
    ("batch_size", "c"): paper.BATCH_SIZE["c"], ("learning_rate", "b"): paper.LEARNING_RATE["b"],
    ("learning_rate", "c"): paper.LEARNING_RATE["c"], ("precise", "a"): paper.COMPUTE_OPTIMAL_PRECISE["a"],
    ("empirical_precise", "a"): paper.COMPUTE_OPTIMAL_EMPIRICAL["a"], ("conventional", "a"): None,
}
INTERIOR_RULE = ("interior along an axis: the best measured cell has a measured cell on each side along that axis, and the "
                 "interpolated optimum lies strictly inside the grid along it; a cell at which a run diverged before the budget "
                 "counts as measured, with a loss above every stable cell's")
#: Target of the caption gain: the caption-conditioning gain at least this many times the protocol's own spread.
CAPTION_GAIN_TARGET = 5.0
#: Points outside their prediction intervals that chance alone explains: this quantile of the binomial count.
CHANCE_QUANTILE = 0.99


def design(document: dict) -> dict:
    """What the grid spans and how often its optima fall on its edge (``INTERIOR_RULE``)."""
    setup = document["setup"]
    sizes = setup["fitting_sizes"]
    optima = document.get("optima", [])
    spans = []
    for size in sizes:
        tokens = [o["tokens"] for o in optima if o["size"] == size["size"]]
        if len(tokens) >= 2:
            spans.append(max(tokens) / min(tokens))
    parameters = [s["parameters"] for s in sizes]
    cells = setup.get("grid_cells") or []
    return {
        "fitting_sizes": [s["size"] for s in sizes], "fitting_parameters": parameters,
        "heldout_sizes": [s["size"] for s in setup.get("heldout_sizes", [])],
        "n_span": max(parameters) / min(parameters) if parameters else None,
        "t_span_min": min(spans) if spans else None,
        "budgets_tokens": setup["budgets_tokens"],
        "batch_clips": sorted({c["batch_clips"] for c in cells}), "learning_rates": sorted({c["learning_rate"] for c in cells}),
        "extra_learning_rates": extra_learning_rates(document, {c["learning_rate"] for c in cells}),
        "context_tokens": setup.get("context_tokens"), "flop_model": setup.get("flop_model_description"),
        "b_edge_fraction": _edge_fraction(optima, "interior_batch"),
        "lr_edge_fraction": _edge_fraction(optima, "interior_learning_rate"),
        "lr_edges": learning_rate_edges(document),
        "lr_unstable_bound": sum(bool(o.get("unstable_bound_learning_rate")) for o in optima),
        "b_unstable_bound": sum(bool(o.get("unstable_bound_batch")) for o in optima),
        "optima": len(optima), "interior_rule": INTERIOR_RULE,
        "steps_at_smallest_budget": [min(setup["budgets_tokens"]) / (b * setup["context_tokens"]) for b in
                                     (max(c["batch_clips"] for c in cells), min(c["batch_clips"] for c in cells))] if cells else None,
        "conventional_cell": setup.get("conventional_cell"), "conventional_cell_source": setup.get("conventional_cell_source"),
        "bootstrap_resamples": setup.get("bootstrap", {}).get("resamples"), "bootstrap_scheme": setup.get("bootstrap", {}).get("scheme"),
    }


def extra_learning_rates(document: dict, common: set[float]) -> dict[str, list[float]]:
    """Fitting size -> the learning rates of its grid beyond those every fitting size has (``grid.extra_learning_rates``)."""
    extra = {}
    for grid in document.get("grids", []):
        rates = sorted({c["learning_rate"] for c in grid["cells"]} - common)
        if grid.get("role") == "fitting" and rates:
            extra[grid["size"]] = rates
    return extra


def _edge_fraction(optima: list[dict], key: str) -> float | None:
    return sum(not o[key] for o in optima) / len(optima) if optima else None


#: Where the best measured cell of an optimum on the learning-rate edge sits (``learning_rate_edges``).
LR_EDGE_PLACES = ("highest_rate", "lowest_rate", "next_to_left_out", "interpolated_to_edge")


def learning_rate_edges(document: dict) -> dict[str, int]:
    """Optima on the learning-rate edge, counted by where their best measured cell sits along LR (same batch).

    ``highest_rate``/``lowest_rate``: at the grid's highest or lowest rate; ``next_to_left_out``: the cell at the next
    rate above or below has no loss at that budget and is not unstable there (left out: a seed failed, or none reached
    the budget); ``interpolated_to_edge``: both neighbours measured (a loss, or unstable), the interpolated optimum on the
    boundary of the cells measured. The rates are those of the fitting sizes' cells together; a fitting cell's loss is
    its row of the grid's losses.
    """
    grids = {g["size"]: g for g in document.get("grids", []) if g.get("role") == "fitting"}
    budgets = [float(b) for b in document["setup"]["budgets_tokens"]]
    rates = sorted({float(c["learning_rate"]) for g in grids.values() for c in g["cells"]})
    counts = dict.fromkeys(LR_EDGE_PLACES, 0)
    for optimum in document.get("optima", []):
        grid = grids.get(optimum["size"])
        if optimum["interior_learning_rate"] or grid is None:
            continue
        budget = budgets.index(float(optimum["tokens"]))
        losses, batch, rate = grid_column(grid, budget)
        if not np.isfinite(losses).any():
            continue
        unstable = np.array([row[budget] for row in grid["unstable"]], dtype=bool) if grid.get("unstable") \
            else np.zeros(len(losses), dtype=bool)
        best = int(np.nanargmin(losses))
        level = rates.index(rate[best])
        measured = set(rate[(np.isfinite(losses) | unstable) & (batch == batch[best])])
        if level == len(rates) - 1:
            counts["highest_rate"] += 1
        elif level == 0:
            counts["lowest_rate"] += 1
        elif rates[level + 1] not in measured or rates[level - 1] not in measured:
            counts["next_to_left_out"] += 1
        else:
            counts["interpolated_to_edge"] += 1
    return counts


def noise(document: dict, validation_weights: str, dof: int | None, protocol_spread: dict | None) -> dict:
    """The run-to-run noise: what it measures, its size and source, and the validation protocol's own share of it."""
    setup = document["setup"]
    measured = setup.get("noise") or {}
    sigma = measured.get("relative_std")
    run_sigma = run_relative_std(measured)
    detail = measured.get("detail") or {}
    record = {
        "relative_std": sigma, "run_relative_std": run_sigma, "seeds_per_cell": int(measured.get("seeds_per_cell", 1)),
        "source": measured.get("source"), "degrees_of_freedom": dof,
        "degrees_of_freedom_range": detail.get("degrees_of_freedom_range"),
        "relative_std_interval": measured.get("relative_std_interval"),
        "run_relative_std_interval": measured.get("run_relative_std_interval"), "level": measured.get("level"),
        "loss_column": document["config"].get("loss_column"), "validation_weights": validation_weights,
        "seed_cells": [{k: g[k] for k in ("size", "batch_clips", "learning_rate", "seeds")} for g in detail.get("groups", [])],
        "huber_delta_loss": setup.get("huber_delta_loss"),
    }
    protocol = (protocol_spread or {}).get("relative_std")
    if protocol is not None:
        record["protocol_relative_std"] = protocol
        record["protocol_seeds"] = len(protocol_spread.get("seeds", []))
        record["protocol_share"] = protocol / run_sigma if run_sigma else None
    return record


def laws_table(document: dict) -> list[dict]:
    """The coefficients the summary compares with the paper's, each with its interval and caveat flags."""
    rows = []
    for law, parameter in (("loss_optimal", "alpha"), ("loss_optimal", "beta"), ("loss_optimal", "L_inf"),
                           ("batch_size", "b"), ("batch_size", "c"), ("learning_rate", "b"), ("learning_rate", "c")):
        record = document["laws"].get(law, {})
        row = {"law": law, "parameter": parameter, "paper": PAPER_COEFFICIENTS[(law, parameter)], "fitted": record.get("status") == "fitted"}
        if row["fitted"]:
            bootstrap = record.get("bootstrap") or {}
            edge = record.get("edge_points") or {}
            guard = guard_bounds_of(record["fit"], record["parameters"], record.get("form"))
            row.update(value=record["parameters"][parameter], interval=(record.get("intervals") or {}).get(parameter),
                       on_bound=parameter in record["fit"]["on_bound"], degenerate=guard,  # guard bounds: not identified
                       at_model_bound=parameter in record["fit"]["on_bound"] and parameter not in guard,  # L_inf at 0
                       edge_optima=edge.get("on_edge"), optima=edge.get("optima"), held_at_bound=bootstrap.get("held_at_bound", []),
                       usable=bootstrap.get("usable"), resamples=bootstrap.get("resamples"),
                       at_constraint=(bootstrap.get("at_constraint") or {}).get(parameter, 0),
                       no_interval_reason=bootstrap.get("no_interval_reason"))
        else:
            row["reason"] = record.get("reason", "absent from the laws file")
        rows.append(row)
    for key in ("precise", "conventional", "empirical_precise"):
        record = document.get("compute_optimal", {}).get(key, {})
        row = {"law": key, "parameter": "a", "paper": PAPER_COEFFICIENTS[(key, "a")], "fitted": record.get("status") == "fitted"}
        if row["fitted"]:
            source = document["laws"].get("loss_conventional" if key == "conventional" else "loss_optimal", {})
            row.update(value=record["parameters"]["a"], interval=(record.get("intervals") or {}).get("a"),
                       degenerate=guard_bounds_of(source.get("fit"), source.get("parameters"), source.get("form"))
                       if key != "empirical_precise" else [])
        else:
            row["reason"] = record.get("reason", "absent from the laws file")
        rows.append(row)
    return rows


def fit_errors(document: dict) -> dict:
    """Mean squared error of the predicted loss, ours and the paper's, with optimal and with fixed hyperparameters."""
    ours = {name: ((document["laws"].get(name) or {}).get("fit") or {}).get("mse") for name in ("loss_optimal", "loss_conventional")}
    return {"ours_optimal": ours["loss_optimal"], "ours_fixed": ours["loss_conventional"],
            "paper_optimal": paper.FIT_MSE["optimal_hyperparameters"], "paper_fixed": paper.FIT_MSE["fixed_hyperparameters"]}


def allowed_misses(points: int, level: float) -> int:
    """Points outside their ``level`` prediction intervals that chance alone explains (``CHANCE_QUANTILE`` binomial quantile)."""
    return int(binom.ppf(CHANCE_QUANTILE, points, 1 - level)) if points else 0


def heldout(document: dict, heldout_runs: dict | None, level: float) -> dict:
    """Held-out points (the fit's held-out sizes at each budget and the trained compute-optimal run): errors, coverage
    and where each point's optimum sits among its cells (``heldout_place``). A compute-optimal run at a *fitting* size
    is a budget extrapolation at a size the law was fitted on (its runs are that grid cell's seeds trained further), not
    a held-out size: it is checked apart (``fitting_size_checks``) and left out of every statistic here, claim 4's."""
    fitting = {s["size"] for s in document.get("setup", {}).get("fitting_sizes", [])}
    context = document.get("setup", {}).get("context_tokens")
    places = {(h["size"], h["tokens"]): h for h in document.get("heldout", {}).get("hyperparameters", [])}
    records = [r for r in document.get("heldout", {}).get("loss", []) if r.get("relative_error") is not None]
    points = [{"kind": "heldout size", "size": r["size"], "tokens": r["tokens"], "predicted": r.get("predicted_loss"),
               "measured": r["measured_loss"], "relative_error": r.get("relative_error"), "covered": r.get("covered"),
               "prediction_interval": r.get("prediction_interval"), "replicates": r.get("replicates", 1),
               **heldout_place(places.get((r["size"], r["tokens"])), r, context)} for r in records]
    resamples = [r.get("relative_error_resamples") for r in records]
    groups, checks = list((heldout_runs or {}).get("groups", [])), []
    for g in (g for g in groups if g.get("kind") == "compute_optimal" and g.get("status") == "evaluated"):
        if g["size"] in fitting:
            checks.append(_fitting_size_check(_compute_optimal_point(g), g, document, level))
        else:
            points.append(_compute_optimal_point(g))
            resamples.append(g.get("relative_error_resamples"))
    errors = np.array([abs(p["relative_error"]) for p in points])
    with_interval = [p for p in points if p["covered"] is not None]
    misses = sum(not p["covered"] for p in with_interval)
    expected = expected_abs_errors(points, level)
    return {
        **mean_relative_error(points, resamples, level),
        "sizes": sorted({p["size"] for p in points}), "points": len(points), "level": level,
        "replicates": min((p["replicates"] for p in points), default=1),  # runs behind each measured point (the fewest)
        "mean_abs_error": float(errors.mean()) if errors.size else None, "max_abs_error": float(errors.max()) if errors.size else None,
        "expected_mean_abs_error": float(np.mean(expected)) if expected else None, "expected_points": len(expected),
        "with_interval": len(with_interval), "covered": len(with_interval) - misses, "misses": misses,
        "allowed_misses": allowed_misses(len(with_interval), level), "chance_quantile": CHANCE_QUANTILE,
        "edges": heldout_edge_counts(points), "table": points, "fitting_size_checks": checks,
        "groups": [_heldout_group(g) for g in groups],
    }


def heldout_place(optimum: dict | None, loss: dict, context_tokens: float | None) -> dict:
    """Where a held-out size's measured optimum (``optimum``: its record in the laws file's ``heldout.hyperparameters``)
    sits among its held-out cells at that budget (``INTERIOR_RULE``): interior along B and along LR, at one clip per step
    (the smallest batch there is, where the loss is the best feasible one, as claim 1 counts it), and ``on_edge``:
    off the interior along LR, or along B short of one clip, where the measured loss is only an upper bound of the
    optimum."""
    if optimum is None:  # no location recorded: the loss record's flag for both axes
        interior, batch = {"batch": bool(loss.get("measured_interior")), "learning_rate": bool(loss.get("measured_interior"))}, None
    else:
        interior, batch = dict(optimum["measured_interior"]), optimum.get("measured_batch_tokens")
    one_clip = bool(not interior["batch"] and batch is not None and context_tokens and batch <= context_tokens * (1 + 1e-9))
    return {"cells": loss.get("cells"), "single_cell": False, "interior": interior, "at_one_clip_batch": one_clip,
            "on_edge": bool(not interior["learning_rate"] or (not interior["batch"] and not one_clip))}


def heldout_edge_counts(points: list[dict]) -> dict:
    """How many held-out points have their optimum on the edge of their cells (``heldout_place``), and along which axis;
    a point measured at a single cell (the compute-optimal run) has no neighbours and counts as on the edge."""
    grids = [p for p in points if not p.get("single_cell")]
    return {"on_edge": sum(bool(p.get("on_edge")) for p in points),
            "learning_rate": sum(not p["interior"]["learning_rate"] for p in grids),
            "batch": sum(not p["interior"]["batch"] and not p["at_one_clip_batch"] for p in grids),
            "one_clip_batch": sum(bool(p.get("at_one_clip_batch")) for p in points),
            "single_cell": sum(bool(p.get("single_cell")) for p in points)}


def _compute_optimal_point(group: dict) -> dict:
    """The compute-optimal run of ``heldout.json``: one cell, the laws' predicted one, with no neighbours to bound it."""
    return {"kind": "compute-optimal size", "size": group["size"], "tokens": group["tokens"],
            "predicted": group["predicted_loss"]["value"], "measured": group.get("measured_loss"),
            "relative_error": group["relative_error"], "covered": group.get("covered"),
            "prediction_interval": group["predicted_loss"].get("prediction_interval"), "replicates": group.get("replicates", 1),
            "cells": 1, "single_cell": True, "interior": {"batch": False, "learning_rate": False}, "at_one_clip_batch": False,
            "on_edge": True}


def _fitting_size_check(point: dict, group: dict, document: dict, level: float) -> dict:
    """A compute-optimal run at a fitting size: the law's error at that size beyond its largest fitted budget (the
    largest budget with an optimum of that size in the fit), with the error's basic interval over resampled runs."""
    fitted = [o["tokens"] for o in document.get("optima", []) if o["size"] == group["size"]]
    largest = max(fitted) if fitted else None
    return {**point, "kind": "compute-optimal run at a fitting size", "largest_fitted_tokens": largest,
            "budget_multiple": group["tokens"] / largest if largest else None,
            "relative_error_interval": basic_interval(group["relative_error"], group.get("relative_error_resamples"), level)}


def mean_relative_error(points: list[dict], resamples: list, level: float) -> dict:
    """The held-out points' mean relative error and its interval over the noise unit, the run.

    Each point's measurement is resampled with its runs (``analysis.heldout.measurement_noise``: every run's
    curve scaled by one draw, the optimum found again on the resampled cells), so points measured by the same
    runs, at several budgets of one size, move together as they do in the data; a t interval over the points
    would count each as independent and be too narrow. The interval is the basic (reverse percentile) one,
    ``[2 e - q_high, 2 e - q_low]``: an optimum found again among resampled cells lies below the measured one on
    average (the winner's curse, ``resample_bias``), as the measured one lies below the valley's true floor, and
    the basic interval takes that shift off where a percentile interval would add it. A resample in which some
    point has no measurement is dropped (counted). Without resamples for every point (a laws file written before
    them) there is no interval.
    """
    if not points:
        return {"mean_relative_error": None, "mean_relative_error_interval": None}
    record = {"mean_relative_error": float(np.mean([p["relative_error"] for p in points])), "mean_relative_error_interval": None}
    lengths = {len(r) for r in resamples if r is not None}
    if len(resamples) != len(points) or any(r is None for r in resamples) or len(lengths) != 1:
        record["mean_relative_error_reason"] = "the held-out points carry no resampled measurements"
        return record
    matrix = np.array([[np.nan if v is None else v for v in r] for r in resamples], dtype=float)  # (points, R)
    complete = np.all(np.isfinite(matrix), axis=0)
    means = matrix[:, complete].mean(axis=0)
    record.update(mean_relative_error_resamples=int(complete.sum()), mean_relative_error_dropped=int((~complete).sum()))
    if means.size >= 2:
        record.update(mean_relative_error_interval=basic_interval(record["mean_relative_error"], list(means), level),
                      mean_relative_error_resample_bias=float(means.mean() - record["mean_relative_error"]))
    return record


def expected_abs_errors(points: list[dict], level: float) -> list[float]:
    """The |relative error| each point would show on average if its error were only what its prediction interval
    holds (the law's uncertainty and one measurement's noise): sqrt(2/pi) s, with s the interval's half-width over
    the normal quantile of ``level``, relative to the prediction (the interval read as a normal one)."""
    z = noise_quantile(level, None)
    return [float(np.sqrt(2 / np.pi) * (p["prediction_interval"][1] - p["prediction_interval"][0]) / (2 * z) / p["predicted"])
            for p in points if p.get("prediction_interval") and p.get("predicted")]


def _heldout_group(group: dict) -> dict:
    """One proposal group of ``heldout.json`` as the summary's table shows it."""
    record = {"kind": group["kind"], "size": group["size"], "status": group.get("status"), "missing_runs": group.get("missing_runs", [])}
    if group.get("status") == "evaluated":
        measured = group.get("measured_optimum", {}).get("loss", group.get("measured_loss"))
        record.update(tokens=group["tokens"], predicted=group["predicted_loss"]["value"], measured=measured,
                      relative_error=group["relative_error"], covered=group.get("covered"),
                      has_interval=group["predicted_loss"].get("prediction_interval") is not None,
                      predicted_cell_is_best=group.get("predicted_cell_is_best"),
                      predicted_cell_excess_loss=group.get("predicted_cell_excess_loss"))
    return record


def empirical_compute_optimal(document: dict) -> dict:
    """Whether the compute-optimal size is bracketed by measured sizes at each isoFLOP budget, and the fitted law."""
    record = document.get("compute_optimal", {}).get("empirical_precise", {})
    out = {"fitted": record.get("status") == "fitted", "points": record.get("points", []),
           "bracketed_budgets": record.get("bracketed_budgets", 0), "budgets": record.get("budgets", 0),
           "rule": record.get("rule"), "reason": record.get("reason")}
    if out["fitted"]:
        out.update(k=record["parameters"]["k"], a=record["parameters"]["a"], a_interval=record["intervals"].get("a"),
                   k_interval=record["intervals"].get("k"))
    gap = document.get("compute_optimal", {}).get("exponent_gap", {}).get("optimal")
    if gap:
        out["exponent_gap"] = gap
    return out


def captions(conditioning: dict | None, match: dict | None, protocol_spread: dict | None) -> dict:
    """The caption-conditioning gain against the protocol's spread, and the caption-match rates against chance,
    of one trained model (the three records' run); ``run``: which run, its size and training tokens."""
    out = {}
    described = (conditioning or {}).get("run") or (protocol_spread or {}).get("run")
    if described:
        tokens, parameters = described.get("tokens"), described.get("non_embedding_parameters")
        out["run"] = {"run_id": described.get("run_id"), "size": described.get("size"), "non_embedding_parameters": parameters,
                      "tokens": tokens, "tokens_per_parameter": tokens / parameters if tokens and parameters else None}
    if conditioning:
        gain = conditioning.get("differences", {}).get("null_minus_captions", {})
        out["gain"] = {"absolute": gain.get("mean"), "relative": gain.get("relative"), "target_multiple": CAPTION_GAIN_TARGET}
        protocol = (protocol_spread or {}).get("relative_std")
        if protocol and gain.get("relative") is not None:
            out["gain"].update(protocol_relative_std=protocol, multiple=gain["relative"] / protocol,
                               meets_target=bool(gain["relative"] >= CAPTION_GAIN_TARGET * protocol))
        out["contrasts"] = caption_contrasts(conditioning, protocol)
    if match:
        out["match"] = {"level": match.get("confidence_level"), "rates": {}, "reference": {}}
        for which in ("colour", "direction"):
            for block in ("samples", "reference"):
                rate = (match.get(block) or {}).get(which)
                if rate:
                    out["match"]["rates" if block == "samples" else "reference"][which] = {
                        **{k: rate[k] for k in ("rate", "interval", "chance", "count", "of")},
                        "verdict": from_interval(rate["interval"], rate["chance"])}
    return out


def caption_contrasts(conditioning: dict, protocol_relative_std: float | None) -> list[dict]:
    """Which caption words the model uses: per contrast of ``dit.evaluate captions`` (``swapped``: word pairs swapped in
    every caption; ``exchanged``: the first two words of a set trade places), its words, the validation clips whose
    caption it changed, and the loss it adds (absolute; relative to the contrast's loss; as a multiple of the
    protocol's spread; as a share of the whole caption gain, the null caption's)."""
    rows, differences, contrasts = [], conditioning.get("differences", {}), conditioning.get("contrasts") or {}
    gain = (differences.get("null_minus_captions") or {}).get("mean")
    for name in sorted(contrasts, key=lambda name: (name != "swapped", name)):
        record, difference = contrasts[name], differences.get(f"{name}_minus_captions")
        if difference:
            rows.append({"condition": name, "pairs": record.get("pairs"), "words": record.get("words"),
                         "clips_changed": record.get("clips_changed"), "clips": (conditioning.get("validation") or {}).get("clips"),
                         "absolute": difference["mean"], "relative": difference["relative"],
                         **({"share_of_gain": difference["mean"] / gain} if gain else {}),
                         **({"multiple": difference["relative"] / protocol_relative_std} if protocol_relative_std else {})})
    return rows


def performance(record: dict | None) -> dict | None:
    """The scorecard's performance section, from ``performance.json``."""
    if not record:
        return None
    if record.get("status") == "not measured":
        return {"status": "not measured", "reason": record.get("reason"), "jobs": record.get("jobs")}
    keys = ("grid_model_flops", "grid_job_seconds", "matmul_flops_per_s", "grid_fraction_of_matmul", "members_per_job")
    out = {key: record.get(key) for key in keys}
    out["jobs"] = record.get("jobs")
    matmul = record.get("matmul") or {}
    out["matmul_jobs"] = matmul.get("jobs")
    out["matmul_min_flops_per_s"], out["matmul_max_flops_per_s"] = matmul.get("min_flops_per_s"), matmul.get("max_flops_per_s")
    out["grid_model_flops_per_s"] = record["grid_model_flops"] / record["grid_job_seconds"] if record.get("grid_job_seconds") else None
    parts = record.get("parts")  # training steps and validation passes (absent from records of older code)
    if parts:
        out["parts"] = [{"part": name, **part, "model_flops_per_s": part["model_flops"] / part["seconds"] if part["seconds"] else None}
                        for name, part in parts.items()]
        out["other_seconds"] = record["grid_job_seconds"] - sum(part["seconds"] for part in parts.values())
    if record.get("by_shape"):  # per model shape (absent from records of older code)
        out["by_shape"] = [dict(shape) for shape in record["by_shape"]]
    return out


def stage_timings(folder: str | None, notes: list[str], files: list[str] | None = None) -> list[dict]:
    """Snakemake benchmark files grouped by stage (``train/grid/*`` for every grid job): jobs, seconds, max RSS.

    ``files``: the files to read, each under ``folder``, in their order (the facts rule names those of the jobs
    upstream of it, so that files other workflows or earlier runs left in the folder do not count); a named
    file that cannot be read is noted. Without ``files``, every TSV under ``folder``, sorted.
    """
    if not folder:
        return []
    root = Path(folder)
    if files is None and not root.is_dir():
        notes.append(f"benchmarks folder {folder} does not exist")
        return []
    groups: dict[str, dict] = {}
    for tsv in [Path(name) for name in files] if files is not None else sorted(root.rglob("*.tsv")):
        try:
            parts = tsv.relative_to(root).with_suffix("").parts
            records = benchmark_rows(tsv)
        except (OSError, ValueError) as error:
            notes.append(f"benchmark {tsv}: {error}")
            continue
        stage = "/".join(parts[:2]) + "/*" if len(parts) > 2 else "/".join(parts)
        group = groups.setdefault(stage, {"jobs": 0, "seconds": [], "rss": []})
        group["jobs"] += 1
        group["seconds"] += [float(r["s"]) for r in records if r.get("s") not in (None, "", "NA")]
        group["rss"] += [float(r["max_rss"]) for r in records if r.get("max_rss") not in (None, "", "NA", "-")]
    return [{"stage": stage, "jobs": g["jobs"], "median_seconds": float(np.median(g["seconds"])) if g["seconds"] else None,
             "total_seconds": float(np.sum(g["seconds"])) if g["seconds"] else None, "max_rss_mb": max(g["rss"]) if g["rss"] else None}
            for stage, g in groups.items()]


def data_reuse(table: RunsTable, manifest: dict, document: dict) -> dict | None:
    """How often the grid's runs repeat the training clips, and whether their validation loss turns up.

    Epochs = tokens / (tokens per clip x training clips in the manifest). A run's validation loss
    *turns up* when its value at the last milestone exceeds its lowest earlier value by more than the
    run-to-run noise (relative); the *pattern of memorising* is a rise while the training loss at the last
    milestone is still below all its earlier values. Also the curves of the best completed grid run of the
    largest fitting size.
    """
    train_clips = (manifest.get("counts") or {}).get("train_clips")
    runs = table.completed(series=["grid"])
    if not train_clips or runs.empty:
        return None
    sigma = run_relative_std(document["setup"].get("noise")) or 0.0  # each run's curve is judged on its own
    turned_up, memorising, largest_rise = [], [], 0.0
    for run_id in runs.index:
        _, validation = table.curve(run_id)
        _, train = table.curve(run_id, "train_loss")
        keep = np.isfinite(validation) & np.isfinite(train)
        validation, train = validation[keep], train[keep]
        if validation.size < 2:
            continue
        rise = float(validation[-1] / np.min(validation[:-1]) - 1)
        largest_rise = max(largest_rise, rise)
        if rise > sigma:
            turned_up.append(run_id)
            if train[-1] < np.min(train[:-1]):
                memorising.append(run_id)
    return {"train_clips": int(train_clips), "validation_clips": (manifest.get("counts") or {}).get("validation_clips"),
            "max_epochs": float((runs["max_tokens"] / (runs["tokens_per_clip"] * train_clips)).max()), "runs": int(len(runs)),
            "turned_up": turned_up, "memorising": memorising, "largest_rise": largest_rise, "noise_relative_std": sigma,
            "curve": _best_run_curve(table, runs, document, train_clips)}


def _best_run_curve(table: RunsTable, runs, document: dict, train_clips: int) -> dict | None:
    sizes = [s["size"] for s in document["setup"]["fitting_sizes"] if (runs["size"] == s["size"]).any()]
    if not sizes:
        return None
    largest = max(sizes, key=lambda name: float(runs[runs["size"] == name]["non_embedding_parameters"].max()))
    candidates = runs[runs["size"] == largest]
    final = {run_id: table.curve(run_id)[1][-1] for run_id in candidates.index}
    best = min(final, key=lambda run_id: final[run_id] if np.isfinite(final[run_id]) else np.inf)
    tokens, validation = table.curve(best)
    _, train = table.curve(best, "train_loss")
    per_clip = float(candidates.loc[best, "tokens_per_clip"])
    return {"run_id": best, "points": [{"tokens": float(t), "epochs": float(t) / (per_clip * train_clips), "train_loss": float(tr),
                                        "validation_loss": float(v)} for t, tr, v in zip(tokens, train, validation)]}
