"""Every fit of the analysis, from a validated runs table to the ``results/laws.json`` document.

Order of work (``fit_laws``):

1. Select runs (``analysis.selection``) and the run-to-run noise: from the noise-floor seeds, or,
   without seeds, from the residuals of a least-squares fit of L(N, T) to the measured optima.
2. Draw the bootstrap resamples over the noise unit, the run (``analysis.resampling``): every law
   below is refitted on the same resampled runs.
3. Optimal (B, LR, loss) per (fitting size, budget) for the measured runs and every resample
   (``analysis.law_datasets``, ``analysis.optima``).
4. Laws (``analysis.law_fits``): L(N, T) at optimal hyperparameters, the same form at the fixed
   conventional cell, B_opt(N, T), LR_opt(N, T), and baselines (Kaplan's form, Chinchilla's form on
   every grid run regardless of B and LR, DeepSeek's B_opt(C) and LR_opt(C)); each fitted to the
   measured data and refitted to every resample.
5. Compute-optimal allocation (``analysis.recipe_comparison``): N_opt at the target budget and
   ``N_opt = k C^a`` from each loss law, and from the empirical isoFLOP optima; the precise recipe
   against the conventional one at the target budget, and the reduction curve over budgets for
   every grid cell run at all fitting sizes taken as the fixed cell (claim 3c).
6. Held-out sizes: measured optima vs predictions with prediction intervals; baselines table.

A law that cannot be fitted is recorded as ``{"status": "not fitted", "reason": ...}`` naming what
is missing; ``analysis.fit`` turns missing core laws into an error unless asked not to.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from analysis.allocation import BILLION, AllocationSolver, SizeCurve
from analysis.config import FitConfig
from analysis.heldout import baselines_table, evaluate_heldout_grids
from analysis.intervals import estimate, percentile_interval
from analysis.law_datasets import (
    OptimumPoints,
    all_runs_dataset,
    cell_curves,
    cell_dataset,
    loss_delta,
    optimum_datasets,
)
from analysis.law_fits import UNITS, LawFit, bootstrap_law, fit_full_data, law_record
from analysis.law_set import LAWS_SCHEMA
from analysis.optima import METHOD_NAMES, near_optimal_band
from analysis.recipe_comparison import (
    REDUCTION_DEFINITIONS,
    allocate,
    comparison_at_target,
    empirical_allocation,
    law_allocation_record,
    reduction_curve,
)
from analysis.resampling import SCHEME, RunNoise
from analysis.runs import RunsTable, mean_noise, noise_degrees_of_freedom, noise_std_interval
from analysis.selection import Selection, select_runs

#: Laws without which the downstream commands cannot run. A batch-size law that cannot be fitted because its
#: optima sit on the grid's edge is a finding, not an error: its record then names the edge
#: (``edge_points.edge_batch_tokens``), which the held-out proposal takes as its batch size.
CORE_LAWS = ("loss_optimal", "learning_rate")
#: Budgets of the N_opt = k C^a fits and of the claim-3c reduction curves.
COMPUTE_POINTS = 25
CURVE_POINTS = 13
#: The default target budget and the curves' end, as multiples of the largest fitting run's compute.
TARGET_MULTIPLE = 100.0
DESCRIPTIONS = {
    "loss_optimal": "L(N, T) at the interpolated optimal (B, LR) of each (size, budget): the precise law",
    "loss_conventional": "the same form on the runs at one fixed cell for all sizes: the conventional law",
    "batch_size": "B_opt(N, T) = a T^b N^c fitted to the interpolated optima (tokens)",
    "learning_rate": "LR_opt(N, T) = a T^b N^c fitted to the interpolated optima",
    "kaplan": "baseline: Kaplan et al. (2020) form on the optimal-hyperparameter losses",
    "chinchilla_all_runs": "baseline: Chinchilla's form E + A/N^alpha + B/D^beta on every completed grid run, ignoring B and LR",
    "deepseek_batch_size": "baseline: DeepSeek LLM's B_opt = a C^b of compute alone",
    "deepseek_learning_rate": "baseline: DeepSeek LLM's LR_opt = a C^b of compute alone",
}


def fit_laws(table: RunsTable, config: FitConfig, log: Callable[[str], None] | None = None) -> dict:
    """Run steps 1-6 (module docstring) and return the ``laws.json`` document (without provenance)."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    selection = select_runs(table, config)
    noise = RunNoise.draw(selection.resampled_run_ids(), config.bootstrap_resamples, config.seed)
    relative_std, noise_source, noise_dof = _relative_noise(selection, config)
    noise.set_std(relative_std, noise_dof, config.seed)
    cell_std = mean_noise(noise.relative_std, selection.seeds_per_cell)
    points = OptimumPoints.find(selection, noise, config)
    log(f"optima: {len(selection.fitting)} fitting sizes x {selection.budgets.size} budgets, {noise.resamples} resamples "
        f"({time.perf_counter() - started:.1f} s)")
    delta = loss_delta(config, cell_std)
    datasets = optimum_datasets(points, selection.grid_run_ids, config, delta)
    curves, conventional_runs = cell_curves(selection, selection.conventional_cell, noise)
    datasets["loss_conventional"] = cell_dataset("loss_conventional", points, selection.conventional_cell, curves,
                                                 conventional_runs, delta)
    all_runs = all_runs_dataset(selection, noise, delta)
    if all_runs is not None:
        datasets["chinchilla_all_runs"] = all_runs
    fits = {name: _fit(data, log, started) for name, data in datasets.items()}
    measured = points.measured_flops  # the (size, budget) pairs run, not every size at every budget of any size
    target = config.target_flops or (TARGET_MULTIPLE * float(measured.max()) if measured.size else None)
    compute, comparison = _compute_optimal(selection, points, fits, curves, target)
    recipe_curves = _recipe_curves(selection, points, fits, noise, delta, log, started)
    log(f"compute-optimal allocation and recipe curves ({time.perf_counter() - started:.1f} s)")
    document = {
        "schema": LAWS_SCHEMA, "origin": "fitted", "units": UNITS, "config": config.to_dict(),
        "setup": _setup_record(selection, noise, noise_source),
        "runs": _runs_record(selection, conventional_runs),
        "laws": _law_records(fits, points, selection),
        "optima": _optima_records(selection, points),
        "grids": [_grid_record(g, role) for role, grids in (("fitting", selection.fitting), ("heldout", selection.heldout)) for g in grids],
        "conventional_curves": [
            {"size": g.size, "N": g.parameters / BILLION, "tokens": [float(b) for b in selection.budgets],
             "loss": [None if not np.isfinite(v) else float(v) for v in curves[0, s * selection.budgets.size : (s + 1) * selection.budgets.size]],
             "runs": conventional_runs.get(g.size, [])}
            for s, g in enumerate(selection.fitting)],
        "compute_optimal": compute,
        "comparison": comparison,
        "recipe_curves": recipe_curves,
    }
    document["heldout"] = evaluate_heldout_grids(document, selection.heldout, selection.budgets, config)
    document["baselines"] = baselines_table(document)
    document["timing_seconds"] = round(time.perf_counter() - started, 2)
    return document


def _fit(data, log, started) -> LawFit:
    fit = fit_full_data(data)
    bootstrap_law(fit)
    log(f"fit {data.name}: {'ok' if fit.fitted else fit.reason} ({time.perf_counter() - started:.1f} s)")
    return fit


def _relative_noise(selection: Selection, config: FitConfig) -> tuple[float, str, float | None]:
    """The run-to-run relative std, where it comes from and the degrees of freedom of its estimate: the
    noise-floor seeds, else the loss law's residuals (those of cells, scaled by the square root of the
    seeds per cell to one run's; points minus the law's parameters)."""
    if selection.noise:
        return float(selection.noise["relative_std"]), selection.noise["source"], noise_degrees_of_freedom({"detail": selection.noise})
    points = OptimumPoints.find(selection, None, config)
    least_squares = 1.0  # a Huber delta far above any log residual: plain least squares
    fit = fit_full_data(optimum_datasets(points, selection.grid_run_ids, config, least_squares)["loss_optimal"])
    if not fit.fitted:
        return 0.0, "none: no noise-floor seeds, and L(N, T) could not be fitted to estimate it from residuals", None
    dof = fit.result.points - len(fit.result.parameters)
    return (float(fit.result.rmse_log) * float(np.sqrt(selection.seeds_per_cell)),
            "RMS log residual of a least-squares fit of L(N, T) to the optima (no noise-floor seeds)",
            float(dof) if dof > 0 else None)


def _compute_optimal(selection: Selection, points: OptimumPoints, fits: dict, curves: np.ndarray, target) -> tuple[dict, dict]:
    """``compute_optimal`` (law-derived and empirical N_opt laws, exponent gaps) and ``comparison`` at the target."""
    config, level = selection.config, selection.config.confidence_level
    compute, exponents = {}, {}
    measured = points.measured_flops
    compute_range = config.compute_range_flops or ([float(measured.min()), float(target)] if target and measured.size else None)
    solver = _solver(selection)
    allocations = {}
    for which, label in (("optimal", "precise"), ("conventional", "conventional")):
        fit = fits[f"loss_{which}"]
        if not fit.fitted or target is None:
            compute[label] = {"status": "not fitted", "reason": f"loss_{which}: {fit.reason or 'no target budget'}"}
            continue
        grid = np.geomspace(*compute_range, COMPUTE_POINTS)
        allocations[label] = allocate(fit, solver, np.concatenate([[target], grid]))
        compute[label], exponents[label] = law_allocation_record(allocations[label], which, selection.flop_model, grid, level)
    accounting = "the FLOP model" if config.empirical_flops == "model" else "each run measured"
    for label, source in (("empirical_precise", points.loss), ("empirical_conventional", curves)):
        compute[label], exponents[label] = empirical_allocation(_size_curves(selection, source), config.empirical_method,
                                                                level, accounting)
    compute["exponent_gap"] = _exponent_gaps(exponents, allocations, level)
    if "precise" in allocations and "conventional" in allocations:
        comparison = comparison_at_target(allocations["precise"], allocations["conventional"], selection.flop_model,
                                          config.inference.resolved(int(selection.flop_model.context_tokens)), target, level)
        comparison["conventional"]["cell"] = selection.conventional_cell
        comparison["precise"].update(_predicted_hyperparameters(fits, comparison))
    else:
        missing = [k for k in ("precise", "conventional") if k not in allocations]
        comparison = {"status": "not computed", "reason": f"needs the {' and '.join(missing)} compute-optimal law(s)",
                      "target_flops": target}
    return compute, comparison


def _exponent_gaps(exponents: dict, allocations: dict, level: float) -> dict:
    """``|a_law - a_empirical| / a_empirical`` with optimal and with fixed hyperparameters, paired by resample."""
    gaps = {}
    for version, law, empirical in (("optimal", "precise", "empirical_precise"), ("conventional", "conventional", "empirical_conventional")):
        if exponents.get(law) is None or exponents.get(empirical) is None:
            continue
        a_law, a_emp = exponents[law], exponents[empirical]
        index = allocations[law].resample_index
        paired = np.abs(a_law[1:] - a_emp[index]) / np.abs(a_emp[index]) if len(index) else None
        gaps[version] = {**estimate(abs(a_law[0] - a_emp[0]) / abs(a_emp[0]), paired, level),
                         "law_exponent": float(a_law[0]), "empirical_exponent": float(a_emp[0]),
                         "definition": "|a_law - a_empirical| / a_empirical"}
    return gaps


def _size_curves(selection: Selection, source: np.ndarray) -> list[SizeCurve]:
    """Each fitting size's loss-vs-compute curve (rows: resamples) where it has at least two budgets."""
    budgets, config, curves = selection.budgets, selection.config, []
    for s, grid in enumerate(selection.fitting):
        block = source[:, s * budgets.size : (s + 1) * budgets.size]
        usable = np.isfinite(block[0])
        if usable.sum() >= 2:
            per_token = (float(selection.flop_model.flops_per_token(grid.parameters)) if config.empirical_flops == "model"
                         else grid.flops_per_token)
            curves.append(SizeCurve(grid.size, grid.parameters, budgets[usable] * per_token, block[:, usable]))
    return curves


def _predicted_hyperparameters(fits: dict, comparison: dict) -> dict:
    """The laws' B_opt and LR_opt at the precise recipe's size and tokens, where those laws are fitted."""
    n_b = comparison["precise"]["parameters"]["value"] / BILLION
    t_b = comparison["precise"]["tokens"]["value"] / BILLION
    return {key: float(fits[name].result.predict(N=n_b, T=t_b)) for key, name in
            (("batch_tokens", "batch_size"), ("learning_rate", "learning_rate")) if fits[name].fitted}


def _solver(selection: Selection) -> AllocationSolver:
    sizes = [g.parameters for g in selection.fitting + selection.heldout] or [1e6]
    return AllocationSolver(selection.flop_model, (min(sizes) / 1e4, max(sizes) * 1e7))


def _recipe_curves(selection: Selection, points: OptimumPoints, fits: dict, noise: RunNoise, delta: float, log, started) -> dict:
    """Claim 3c: the reductions over budgets with every common grid cell (and the configured cell) as the fixed one."""
    measured = points.measured_flops  # the (size, budget) pairs run
    if not fits["loss_optimal"].fitted or not measured.size:
        return {"status": "not computed", "reason": f"loss_optimal: {fits['loss_optimal'].reason or 'no fitting runs'}"}
    flops = np.geomspace(float(measured.min()), TARGET_MULTIPLE * float(measured.max()), CURVE_POINTS)
    solver = _solver(selection)
    precise = allocate(fits["loss_optimal"], solver, flops)
    inference = selection.config.inference.resolved(int(selection.flop_model.context_tokens))
    conventional = selection.conventional_cell
    cells = selection.cells + ([conventional] if conventional and conventional not in selection.cells else [])
    records = []
    for cell in cells:
        if cell == conventional:
            fit = fits["loss_conventional"]
        else:
            curves, runs = cell_curves(selection, cell, noise)
            fit = fit_full_data(cell_dataset("loss_at_cell", points, cell, curves, runs, delta))
            bootstrap_law(fit)
        record = {**cell, "conventional": cell == conventional}
        if fit.fitted:
            record.update(reduction_curve(precise, allocate(fit, solver, flops), flops, selection.flop_model, inference,
                                          selection.config.confidence_level))
            record["loss_law"] = {"parameters": dict(fit.result.parameters), "on_bound": list(fit.result.on_bound),
                                  "guard_bounds": list(fit.result.guard_bounds)}
        else:
            record.update(status="not computed", reason=fit.reason)
        records.append(record)
    log(f"recipe curves: {len(records)} fixed cells ({time.perf_counter() - started:.1f} s)")
    return {"status": "computed", "flops": [float(c) for c in flops], "cells": records, "definitions": REDUCTION_DEFINITIONS,
            "range": f"from the smallest fitting run's compute to {TARGET_MULTIPLE:g}x the largest, over the (size, budget) pairs run"}


def _setup_record(selection: Selection, noise: RunNoise, noise_source: str) -> dict:
    config, flop_model = selection.config, selection.flop_model
    return {
        "flop_model": flop_model.to_dict(),
        "flop_model_description": flop_model.describe(),
        "context_tokens": flop_model.context_tokens,
        "inference": config.inference.resolved(int(flop_model.context_tokens)).__dict__,
        "budgets_tokens": [float(b) for b in selection.budgets],
        "fitting_sizes": [_size_record(g) for g in selection.fitting],
        "heldout_sizes": [_size_record(g) for g in selection.heldout],
        "grid_cells": selection.cells,
        "conventional_cell": selection.conventional_cell,
        "conventional_cell_source": selection.conventional_cell_source,
        "noise": _noise_record(selection, noise, noise_source),
        "huber_delta_loss": loss_delta(config, mean_noise(noise.relative_std, selection.seeds_per_cell)),
        "bootstrap": {"resamples": noise.resamples, "seed": config.seed, "scheme": SCHEME, "level": config.confidence_level},
        "notes": selection.notes,
    }


def _noise_record(selection: Selection, noise: RunNoise, source: str) -> dict:
    """``setup.noise``: ``relative_std`` is the noise of the loss the laws are fitted to, a cell's (the mean of its
    ``seeds_per_cell`` replicates): ``run_relative_std / sqrt(seeds_per_cell)``; ``run_relative_std`` is one run's."""
    seeds, level = selection.seeds_per_cell, selection.config.confidence_level
    dof = noise.degrees_of_freedom
    interval = noise_std_interval(noise.relative_std, dof, level)
    return {"relative_std": mean_noise(noise.relative_std, seeds),
            "run_relative_std": noise.relative_std, "seeds_per_cell": seeds, "source": source,
            "degrees_of_freedom": dof, "level": level, "run_relative_std_interval": interval,
            "relative_std_interval": None if interval is None else [mean_noise(v, seeds) for v in interval],
            **({"detail": selection.noise} if selection.noise else {})}


def _runs_record(selection: Selection, conventional_runs: dict) -> dict:
    counted = set(selection.grid_run_ids + selection.heldout_run_ids)  # a diverged run counts at the budgets it reached
    return {
        "excluded": [{**e, "counted_before_divergence": e["run_id"] in counted} for e in selection.table.exclusions()],
        "grid": selection.grid_run_ids,
        "conventional": [r for ids in conventional_runs.values() for r in ids],
        "noise": [r for g in (selection.noise or {}).get("groups", []) for r in g["runs"]],
        "heldout": selection.heldout_run_ids,
    }


def _law_records(fits: dict, points: OptimumPoints, selection: Selection) -> dict:
    """Every law's record, with its description and how many of its optima lie on the grid's edge."""
    level, policy = selection.config.confidence_level, selection.config.edge_optima
    laws = {name: {**law_record(fit, level), "description": DESCRIPTIONS[name]} for name, fit in fits.items()}
    # An optimum at one clip per step sits at the smallest batch there is, not at an edge of our choosing: its loss
    # is the best feasible loss, so the loss law counts it as found (the batch-size law cannot locate it, though).
    at_floor = ~points.interior_batch & (points.batch_tokens <= selection.flop_model.context_tokens * (1 + 1e-9))
    edges = {"batch_size": ~points.interior_batch, "deepseek_batch_size": ~points.interior_batch,
             "learning_rate": ~points.interior_learning_rate, "deepseek_learning_rate": ~points.interior_learning_rate,
             "loss_optimal": ~points.interior_learning_rate | (~points.interior_batch & ~at_floor)}
    for name, edge in edges.items():
        record = {"optima": int(points.finite[0].sum()), "on_edge": int(np.sum(edge[0] & points.finite[0])), "policy": policy}
        if laws[name]["status"] == "fitted":
            used = fits[name].data.weights[0] > 0
            record.update(used=int(used.sum()), used_on_edge=int(np.sum(edge[0] & used)))
        laws[name]["edge_points"] = record
    laws["batch_size"]["edge_points"].update(_batch_edge(points, selection))
    laws["loss_optimal"]["edge_points"]["at_one_clip_batch"] = int(np.sum(at_floor[0] & points.finite[0]))
    laws["loss_conventional"]["conventional_cell"] = selection.conventional_cell
    return laws


def _batch_edge(points: OptimumPoints, selection: Selection) -> dict:
    """How many measured batch-size optima sit at the fitting grids' smallest and largest batch, and the edge
    batch (tokens) that holds more than half of all optima (None when no edge does)."""
    batches = np.concatenate([grid.batch_tokens for grid in selection.fitting]) if selection.fitting else np.empty(0)
    finite = points.finite[0]
    if not batches.size or not finite.any():
        return {"at_smallest_batch": 0, "at_largest_batch": 0, "edge_batch_tokens": None}
    optima, on_edge = points.batch_tokens[0][finite], ~points.interior_batch[0][finite]
    low, high = float(batches.min()), float(batches.max())
    nearer_low = np.log(optima / low) < np.log(high / optima)
    at_low, at_high = int(np.sum(on_edge & nearer_low)), int(np.sum(on_edge & ~nearer_low))
    edge = low if at_low > optima.size / 2 else high if at_high > optima.size / 2 else None
    return {"at_smallest_batch": at_low, "at_largest_batch": at_high, "edge_batch_tokens": edge}


def _grid_record(grid, role: str) -> dict:
    """One size's measured grid: its cells and their losses at the budgets (``setup.budgets_tokens``; null: not reached),
    and at which budgets each cell is unstable (a run of it diverged before: ``analysis.optima``)."""
    unstable = np.zeros(grid.losses.shape, dtype=bool) if grid.unstable is None else np.asarray(grid.unstable, dtype=bool)
    return {
        "size": grid.size, "role": role, "N": grid.parameters / BILLION,
        "cells": [{"run_id": r, "batch_clips": int(b), "batch_tokens": float(t), "learning_rate": float(lr)}
                  for r, b, t, lr in zip(grid.run_ids, grid.batch_clips, grid.batch_tokens, grid.learning_rates)],
        "losses": [[None if not np.isfinite(v) else float(v) for v in row] for row in grid.losses],
        "unstable": [[bool(v) for v in row] for row in unstable],
    }


def _size_record(grid) -> dict:
    return {"size": grid.size, "N": grid.parameters / BILLION, "parameters": grid.parameters, "width": grid.width,
            "depth": grid.depth, "runs": len(grid.run_ids), "flops_per_token": grid.flops_per_token}


def _optima_records(selection: Selection, points: OptimumPoints) -> list[dict]:
    """One record per (fitting size, budget) with an optimum: where it is, how it was found, its interval."""
    records, level = [], selection.config.confidence_level
    for grid, optimum in zip(selection.fitting, points.per_size):
        for t, tokens in enumerate(selection.budgets):
            if optimum.method[0, t] < 0:
                continue
            record = {
                "size": grid.size, "N": grid.parameters / BILLION, "tokens": float(tokens), "T": float(tokens) / BILLION,
                "flops": float(tokens) * grid.flops_per_token, "learning_rate": float(optimum.learning_rate[0, t]),
                "batch_tokens": float(optimum.batch_tokens[0, t]),
                "batch_clips": float(optimum.batch_tokens[0, t]) / selection.flop_model.context_tokens,
                "loss": float(optimum.loss[0, t]), "method": METHOD_NAMES[int(optimum.method[0, t])],
                "interior_learning_rate": bool(optimum.interior_learning_rate[0, t]),
                "interior_batch": bool(optimum.interior_batch[0, t]),
                "unstable_bound_learning_rate": bool(optimum.unstable_bound_learning_rate[0, t]),
                "unstable_bound_batch": bool(optimum.unstable_bound_batch[0, t]),
                "near_optimal": near_optimal_band(grid, t, selection.config.near_optimal_tolerance),
                "cells": int(np.isfinite(grid.losses[:, t]).sum()),
            }
            if optimum.loss.shape[0] > 2:
                for key, array in (("learning_rate", optimum.learning_rate), ("batch_tokens", optimum.batch_tokens), ("loss", optimum.loss)):
                    record[f"{key}_interval"] = list(percentile_interval(array[1:, t], level))
            records.append(record)
    return records
