"""Every fit of the analysis, from a validated runs table to the ``results/laws.json`` document.

Order of work:

1. Select runs: completed runs only (diverged/failed are listed with their reasons); grid runs of
   the fitting sizes; the conventional cell's runs (grid or ``conventional`` series); noise-floor
   seeds; held-out sizes' grid and ``heldout`` runs. Losses are interpolated to common budgets.
2. Optimal (B, LR, loss) per (fitting size, budget) (``analysis.optima``).
3. Laws fitted on full data (``analysis.fitting``: Huber on log residuals, L-BFGS-B from the starts
   each form proposes, e.g. variable projection over exponents for L(N, T)): L(N, T) at optimal
   hyperparameters, the same form on the conventional cell, B_opt(N, T), LR_opt(N, T), and
   baselines (Kaplan's form, Chinchilla's form on every grid run regardless of B and LR, DeepSeek's
   B_opt(C) and LR_opt(C)).
4. Compute-optimal allocation: N_opt at the target budget and ``N_opt = k C^a`` from each loss law
   (precise and conventional), and from the empirical isoFLOP optima of the measured curves.
5. Bootstrap over runs (stratified by size: each size's grid runs drawn with replacement; a size
   with a single conventional-cell run gets that run's curve scaled by ``1 + sigma z``, sigma the
   run-to-run noise): every law refitted from the full-data optimum, every derived quantity
   recomputed; percentile intervals (``bootstrap_law`` says which resamples count).
6. Held-out sizes: measured optima vs predictions with prediction intervals; baselines table.

A law that cannot be fitted is recorded as ``{"status": "not fitted", "reason": ...}`` naming what
is missing; ``analysis.fit`` turns missing core laws into an error unless asked not to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dit.sizes import SIZES

from analysis.allocation import (
    BILLION,
    AllocationSolver,
    FlopModel,
    SizeCurve,
    WidthRule,
    empirical_flops_grid,
    empirical_optimal_sizes,
    inference_flops,
    loss_law_callable,
    power_law_through,
)
from analysis.config import FitConfig
from analysis.fitting import FitResult, InsufficientDataError, batched_refit, fit_law, percentile_interval
from analysis.laws import (
    BATCH_SIZE_LAW,
    BATCH_SIZE_OF_COMPUTE_LAW,
    KAPLAN_LAW,
    LEARNING_RATE_LAW,
    LEARNING_RATE_OF_COMPUTE_LAW,
    LOSS_LAW,
    LawForm,
)
from analysis.optima import METHOD_NAMES, SizeGrid, find_optima, near_optimal_band
from analysis.runs import RunsTable, run_to_run_noise

SCHEMA = "analysis.laws/1"
#: Laws without which the downstream commands cannot run.
CORE_LAWS = ("loss_optimal", "batch_size", "learning_rate")
UNITS = {
    "N": "billions of non-embedding parameters (raw count / 1e9)",
    "T": "billions of video tokens",
    "B": "tokens per batch (batch_clips x tokens_per_clip)",
    "C": "training FLOPs",
    "LR": "learning rate (constant schedule)",
    "L": "loss (the configured loss column)",
    "N_opt": "non-embedding parameters (raw count)",
}


class AnalysisError(ValueError):
    """The runs and the config do not allow the analysis; the message says what is missing."""


@dataclass
class Prepared:
    """Runs and settings after selection (step 1)."""

    config: FitConfig
    table: RunsTable
    budgets: np.ndarray  # tokens
    fitting: list[SizeGrid]
    heldout: list[SizeGrid]
    conventional_cell: dict
    conventional_losses: dict  # size -> (runs, budgets) losses at the cell
    conventional_runs: dict  # size -> run ids
    flop_model: FlopModel
    noise: dict | None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- selection
def _size_grid(table: RunsTable, runs, size: str, budgets, config: FitConfig, convention: str) -> SizeGrid | None:
    if runs.empty:
        return None
    run_ids = list(runs.index)
    losses = table.loss_matrix(run_ids, budgets, config.loss_column, config.token_match_tolerance)
    per_token = table.flops_per_token(run_ids, convention)
    first = runs.iloc[0]
    return SizeGrid(
        size=size,
        parameters=float(first["non_embedding_parameters"]),
        run_ids=run_ids,
        learning_rates=runs["learning_rate"].to_numpy(float),
        batch_tokens=runs["batch_tokens"].to_numpy(float),
        batch_clips=runs["batch_clips"].to_numpy(float),
        losses=losses,
        flops_per_token=float(np.nanmedian(per_token)),
        width=int(first["width"]),
        depth=int(first["depth"]),
    )


def _matches_cell(runs, cell: dict):
    return (runs["batch_clips"] == cell["batch_clips"]) & np.isclose(runs["learning_rate"], cell["learning_rate"], rtol=1e-6)


def prepare(table: RunsTable, config: FitConfig) -> Prepared:
    notes: list[str] = []
    completed = table.completed()
    grid_runs = completed[completed["series"] == "grid"]
    sizes_by_n = (
        grid_runs.groupby("size")["non_embedding_parameters"].first().sort_values().index.tolist()
        if not grid_runs.empty
        else []
    )
    heldout_names = list(config.heldout_sizes)
    fitting_names = config.fitting_sizes if config.fitting_sizes is not None else [s for s in sizes_by_n if s not in heldout_names]
    missing = [s for s in fitting_names if s not in sizes_by_n]
    if missing:
        notes.append(f"fitting size(s) without completed grid runs: {', '.join(missing)}")
    fitting_names = [s for s in fitting_names if s in sizes_by_n]

    budgets = config.token_budgets or table.default_budgets(config.token_match_tolerance, sizes=fitting_names or None)
    budgets = np.asarray(budgets, dtype=float)
    if budgets.size == 0:
        raise AnalysisError("no token budgets: there are no completed grid runs with milestones (series=grid, status=completed)")

    tokens_per_clip = sorted(set(completed["tokens_per_clip"].astype(int))) if not completed.empty else []
    if config.context_tokens is not None:
        context_tokens = int(config.context_tokens)
    elif len(tokens_per_clip) == 1:
        context_tokens = tokens_per_clip[0]
    elif not tokens_per_clip:
        raise AnalysisError("no completed runs: cannot infer context_tokens (tokens per clip); set context_tokens in the fit config")
    else:
        raise AnalysisError(f"runs have different tokens_per_clip {tokens_per_clip}; set context_tokens in the fit config")
    width_rule = _width_rule(table, config, notes)
    flop_model = FlopModel(config.flop_convention, float(context_tokens), width_rule)

    fitting = []
    for size in sorted(fitting_names, key=lambda s: float(grid_runs[grid_runs["size"] == s]["non_embedding_parameters"].iloc[0])):
        grid = _size_grid(table, grid_runs[grid_runs["size"] == size], size, budgets, config, config.flop_convention)
        if grid is not None:
            fitting.append(grid)
    heldout = []
    for size in heldout_names:
        runs = completed[(completed["size"] == size) & completed["series"].isin(["grid", "heldout"])]
        grid = _size_grid(table, runs, size, budgets, config, config.flop_convention)
        if grid is None:
            notes.append(f"held-out size {size} has no completed grid or heldout runs")
        else:
            heldout.append(grid)

    cell = config.conventional_cell or _default_conventional_cell(fitting)
    candidates = completed[completed["series"].isin(["grid", "conventional"])]
    conventional_losses, conventional_runs = {}, {}
    if cell is not None:
        for grid in fitting:
            runs = candidates[(candidates["size"] == grid.size) & _matches_cell(candidates, cell)]
            if not runs.empty:
                ids = list(runs.index)
                conventional_runs[grid.size] = ids
                conventional_losses[grid.size] = table.loss_matrix(ids, budgets, config.loss_column, config.token_match_tolerance)
    noise = run_to_run_noise(table, budgets, config.loss_column, config.token_match_tolerance)
    return Prepared(config, table, budgets, fitting, heldout, cell or {}, conventional_losses, conventional_runs, flop_model, noise, notes)


def _width_rule(table: RunsTable, config: FitConfig, notes: list[str]) -> WidthRule:
    runs = table.runs()
    sizes = runs.groupby("size")[["non_embedding_parameters", "width"]].first()
    if config.width_rule == "fitted":
        try:
            return WidthRule.fit(sizes["non_embedding_parameters"], sizes["width"])
        except ValueError as error:
            if not all(s in SIZES for s in sizes.index):
                raise AnalysisError(f"width_rule: fitted: {error}") from None
            notes.append(f"width_rule: fitted: {error}; using the size registry's rule instead")
    family = config.size_family
    if family is None:
        families = {SIZES[s].family for s in sizes.index if s in SIZES}
        unregistered = [s for s in sizes.index if s not in SIZES]
        if len(families) != 1 or unregistered:
            raise AnalysisError(
                "width_rule: registry needs every size in one registered family; "
                f"families {sorted(families)}, unregistered sizes {unregistered}: set size_family or width_rule: fitted"
            )
        family = families.pop()
    return WidthRule("registry", family)


def _default_conventional_cell(fitting: list[SizeGrid]) -> dict | None:
    """The (batch_clips, LR) cell present for every fitting size with the lowest mean loss rank."""
    if not fitting:
        return None
    common = None
    for grid in fitting:
        cells = {(int(b), float(r)) for b, r in zip(grid.batch_clips, grid.learning_rates)}
        common = cells if common is None else common & cells
    if not common:
        return None
    ranks = {cell: [] for cell in common}
    for grid in fitting:
        with np.errstate(invalid="ignore"):
            rank = np.argsort(np.argsort(np.where(np.isfinite(grid.losses), grid.losses, np.inf), axis=0), axis=0)
        for i, (b, r) in enumerate(zip(grid.batch_clips, grid.learning_rates)):
            if (int(b), float(r)) in ranks:
                ranks[(int(b), float(r))].append(float(np.mean(rank[i])))
    best = min(ranks, key=lambda cell: (np.mean(ranks[cell]), cell))
    return {"batch_clips": best[0], "learning_rate": best[1]}


# ---------------------------------------------------------------------------------------------- fits
@dataclass
class LawData:
    """Points of one law for R+1 weightings (row 0: the full data)."""

    name: str
    form: LawForm
    inputs: dict  # variable -> (n,) published units
    observed: np.ndarray  # (R+1, n)
    weights: np.ndarray  # (R+1, n)
    delta: float
    labels: list  # per point: dict describing it
    runs: list[str]
    requirement: str  # what the law needs, for the "not fitted" reason
    minimum_distinct: dict  # variable -> distinct values needed


@dataclass
class LawFit:
    data: LawData
    result: FitResult | None
    reason: str = ""
    samples: np.ndarray | None = None  # (R_usable, p) published units
    resample_index: np.ndarray | None = None  # which resamples (1..R) the samples came from
    failed: int = 0  # resamples whose refit did not converge
    on_bound: int = 0  # converged resamples with a parameter on a bound the full-data fit is not on


def _check_points(data: LawData) -> str:
    use = data.weights[0] > 0
    counts = {v: len(np.unique(np.round(np.log(data.inputs[v][use]), 9))) for v in data.form.variables}
    short = [f"{counts[v]} distinct {v} (need {need})" for v, need in data.minimum_distinct.items() if counts[v] < need]
    needed = len(data.form.parameter_names) + 1
    if int(use.sum()) < needed or short:
        have = f"{int(use.sum())} usable points" + (f", {', '.join(short)}" if short else "")
        return f"not enough data: {data.requirement}; have {have}"
    return ""


def fit_point(data: LawData) -> LawFit:
    reason = _check_points(data)
    if reason:
        return LawFit(data, None, reason)
    use = data.weights[0] > 0
    try:
        result = fit_law(
            data.form, {k: v[use] for k, v in data.inputs.items()}, data.observed[0, use], data.delta,
            weights=data.weights[0, use], scales=data.form.reference_scales({k: v[use] for k, v in data.inputs.items()}),
        )
    except InsufficientDataError as error:
        return LawFit(data, None, f"not enough data: {error}")
    if not result.finite:
        return LawFit(data, result, "the fit did not reach finite parameters")
    return LawFit(data, result)


def bootstrap_law(fit: LawFit) -> None:
    """Refit resamples 1..R from the full-data optimum (vectorised) and keep the usable ones.

    A resample is kept when its refit converged and it put no parameter on a bound that the
    full-data fit is not on. When the full-data fit itself holds a parameter on a bound (e.g.
    ``L_inf = 0`` on degenerate data), resamples holding it there too are kept: the intervals are
    then those of the bounded estimator, conditional on that bound (``law_record`` says so).
    """
    data = fit.data
    if fit.result is None or data.observed.shape[0] <= 1:
        return
    observed = data.observed[1:]
    weights = data.weights[1:]
    theta, usable, bound_hits = batched_refit(data.form, data.inputs, observed, data.delta, fit.result, weights=weights)
    names = data.form.parameter_names
    held = np.array([name in fit.result.on_bound for name in names])
    new_bound = np.any(bound_hits & ~held, axis=1)
    ok = usable & ~new_bound
    fit.failed = int(np.sum(~usable))
    fit.on_bound = int(np.sum(usable & new_bound))
    rows = [data.form.to_parameters(t, fit.result.scales) for t in theta[ok]]
    fit.samples = np.array([[row[n] for n in names] for row in rows]) if rows else np.empty((0, len(names)))
    fit.resample_index = np.flatnonzero(ok) + 1


def _estimate(value, samples, level) -> dict:
    record = {"value": None if value is None or not np.isfinite(value) else float(value)}
    if samples is not None and np.size(samples) >= 2:
        record["interval"] = list(percentile_interval(np.asarray(samples, float), level))
        record["resamples"] = int(np.sum(np.isfinite(samples)))
    else:
        record["interval"] = None
    return record


def law_record(fit: LawFit, level: float, extra: dict | None = None) -> dict:
    data = fit.data
    record = {
        "form": data.form.name,
        "formula": data.form.formula,
        "units": {**{v: UNITS[v] for v in data.form.variables}, data.form.output: data.form.output_units},
        "runs": sorted(set(data.runs)),
        "requirement": data.requirement,
    }
    if fit.result is None or fit.reason:
        record.update({"status": "not fitted", "reason": fit.reason})
        return record
    result = fit.result
    record.update(
        {
            "status": "fitted",
            "parameters": dict(result.parameters),
            "exponents": list(data.form.exponent_names),
            "fit": {**result.summary(), "huber_delta": data.delta, "usable": result.usable},
            "points": [
                {**label, "value": float(v), "weight": float(w)}
                for label, v, w in zip(data.labels, data.observed[0], data.weights[0])
                if w > 0
            ],
        }
    )
    if result.on_bound:
        record["warning"] = f"parameters ended on a bound: {', '.join(result.on_bound)}"
    if not result.converged:
        record["warning"] = (record.get("warning", "") + "; " if "warning" in record else "") + "optimiser did not report convergence"
    if fit.samples is not None:
        names = data.form.parameter_names
        resamples = int(data.observed.shape[0] - 1)
        record["bootstrap"] = {
            "resamples": resamples,
            "usable": int(len(fit.samples)),
            "failed": fit.failed,
            "on_bound": fit.on_bound,
            "held_at_bound": list(result.on_bound),
            "samples": [[float(f"{v:.10g}") for v in row] for row in fit.samples],
        }
        if len(fit.samples) >= 2:
            record["intervals"] = {n: list(percentile_interval(fit.samples[:, i], level)) for i, n in enumerate(names)}
        else:
            record["intervals"] = {}
            record["bootstrap"]["no_interval_reason"] = (
                f"only {len(fit.samples)} of {resamples} resamples usable (2 needed): {fit.failed} refits did not converge, "
                f"{fit.on_bound} put a parameter on a bound the full-data fit is not on"
            )
        if result.on_bound and len(fit.samples) >= 2:
            record["bootstrap"]["note"] = (
                f"the full-data fit holds {', '.join(result.on_bound)} on its bound; the intervals are those of the "
                "bounded fit, conditional on that bound (they do not include the uncertainty of the bound itself)"
            )
    else:
        record["intervals"] = {}
    if extra:
        record.update(extra)
    return record


# ---------------------------------------------------------------------------------------------- main
def _weights(rng, count: int, resamples: int) -> np.ndarray:
    weights = np.ones((resamples + 1, count))
    if resamples:
        weights[1:] = rng.multinomial(count, np.full(count, 1.0 / count), size=resamples)
    return weights


def fit_all(table: RunsTable, config: FitConfig, log: Callable[[str], None] | None = None) -> dict:
    """Run steps 1-6 (module docstring) and return the ``laws.json`` document (without provenance)."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    prep = prepare(table, config)
    R = config.bootstrap_resamples
    level = config.confidence_level
    rng = np.random.default_rng(config.seed)
    budgets = prep.budgets
    T_b = budgets / BILLION
    S = len(prep.fitting)
    nT = budgets.size

    # --- step 2: optima ---------------------------------------------------------------------
    grid_weights = [_weights(rng, len(g.run_ids), R) for g in prep.fitting]
    optima = [find_optima(g, w, config.optimum_method, config.optimum_band, config.optimum_max_gain) for g, w in zip(prep.fitting, grid_weights)]
    log(f"optima: {S} fitting sizes x {nT} budgets, {R} resamples ({time.perf_counter() - started:.1f} s)")

    def stack(attribute):
        if not optima:
            return np.empty((R + 1, 0))
        return np.stack([getattr(o, attribute) for o in optima], axis=1).reshape(R + 1, S * nT)

    point_N = np.repeat([g.parameters / BILLION for g in prep.fitting], nT)
    point_T = np.tile(T_b, S)
    point_C = np.repeat([g.flops_per_token for g in prep.fitting], nT) * np.tile(budgets, S)
    labels = [
        {"size": g.size, "N": g.parameters / BILLION, "T": t / BILLION, "tokens": float(t), "flops": float(t * g.flops_per_token)}
        for g in prep.fitting
        for t in budgets
    ]
    opt_loss, opt_lr, opt_b = stack("loss"), stack("learning_rate"), stack("batch_tokens")
    edge_lr, edge_b = stack("edge_learning_rate").astype(bool), stack("edge_batch").astype(bool)
    finite = np.isfinite(opt_loss)
    grid_run_ids = [r for g in prep.fitting for r in g.run_ids]

    # run-to-run noise: seeds, else grid residuals after the loss fit (set below)
    noise_std = prep.noise["relative_std"] if prep.noise else None

    # --- conventional curves -------------------------------------------------------------------
    conv = np.full((R + 1, S * nT), np.nan)
    conv_noise_draws = rng.standard_normal((R, S))
    for s, grid in enumerate(prep.fitting):
        losses = prep.conventional_losses.get(grid.size)
        if losses is None:
            continue
        k = losses.shape[0]
        weights = _weights(rng, k, R) if k >= 2 else np.ones((R + 1, 1))
        with np.errstate(invalid="ignore"):
            numerator = np.einsum("rk,kt->rt", weights, np.nan_to_num(losses, nan=0.0))
            count = np.einsum("rk,kt->rt", weights, np.isfinite(losses).astype(float))
            mean = np.where(count > 0, numerator / np.maximum(count, 1e-300), np.nan)
        conv[:, s * nT : (s + 1) * nT] = mean
    conv_single = np.array([len(prep.conventional_runs.get(g.size, [])) == 1 for g in prep.fitting])

    def law_data(name, form, inputs, observed, weights, delta, runs, requirement, distinct, point_labels=None):
        return LawData(name, form, inputs, observed, weights, delta, point_labels or labels, runs, requirement, distinct)

    exclude_edges = config.edge_optima == "exclude"
    weights_b = (finite & ~(edge_b & exclude_edges)).astype(float)
    weights_lr = (finite & ~(edge_lr & exclude_edges)).astype(float)
    hp_requirement = "optima off the grid's edge at >= 2 sizes and >= 2 budgets (4 points at least)"

    datasets = {
        "loss_optimal": law_data(
            "loss_optimal", LOSS_LAW, {"N": point_N, "T": point_T}, opt_loss, finite.astype(float), config.huber_delta,
            grid_run_ids, "optimal-hyperparameter losses at >= 2 fitting sizes and >= 2 token budgets (6 points at least)",
            {"N": 2, "T": 2},
        ),
        "batch_size": law_data(
            "batch_size", BATCH_SIZE_LAW, {"N": point_N, "T": point_T}, opt_b, weights_b,
            config.huber_delta_hyperparameters, grid_run_ids, hp_requirement, {"N": 2, "T": 2},
        ),
        "learning_rate": law_data(
            "learning_rate", LEARNING_RATE_LAW, {"N": point_N, "T": point_T}, opt_lr, weights_lr,
            config.huber_delta_hyperparameters, grid_run_ids, hp_requirement, {"N": 2, "T": 2},
        ),
        "kaplan": law_data(
            "kaplan", KAPLAN_LAW, {"N": point_N, "T": point_T}, opt_loss, finite.astype(float), config.huber_delta,
            grid_run_ids, "optimal-hyperparameter losses at >= 2 sizes and >= 2 budgets (5 points at least)", {"N": 2, "T": 2},
        ),
        "deepseek_batch_size": law_data(
            "deepseek_batch_size", BATCH_SIZE_OF_COMPUTE_LAW, {"C": point_C}, opt_b, weights_b,
            config.huber_delta_hyperparameters, grid_run_ids, "optima off the grid's edge at >= 2 budgets C", {"C": 2},
        ),
        "deepseek_learning_rate": law_data(
            "deepseek_learning_rate", LEARNING_RATE_OF_COMPUTE_LAW, {"C": point_C}, opt_lr, weights_lr,
            config.huber_delta_hyperparameters, grid_run_ids, "optima off the grid's edge at >= 2 budgets C", {"C": 2},
        ),
    }
    conv_runs = [r for ids in prep.conventional_runs.values() for r in ids]
    cell_text = (
        f"batch_clips={prep.conventional_cell['batch_clips']}, learning_rate={prep.conventional_cell['learning_rate']:g}"
        if prep.conventional_cell
        else "no cell common to all fitting sizes"
    )
    conv_weights = np.isfinite(conv).astype(float)
    datasets["loss_conventional"] = law_data(
        "loss_conventional", LOSS_LAW, {"N": point_N, "T": point_T}, conv, conv_weights, config.huber_delta, conv_runs,
        f"runs at the conventional cell ({cell_text}) at >= 2 fitting sizes and >= 2 budgets (6 points at least)",
        {"N": 2, "T": 2},
    )
    # Chinchilla's form on every grid run, whatever its (B, LR)
    all_N, all_T, all_L, all_labels, all_weight_blocks = [], [], [], [], []
    for s, grid in enumerate(prep.fitting):
        for i, run_id in enumerate(grid.run_ids):
            for t, tokens in enumerate(budgets):
                all_N.append(grid.parameters / BILLION)
                all_T.append(tokens / BILLION)
                all_L.append(grid.losses[i, t])
                all_labels.append({"size": grid.size, "run_id": run_id, "N": grid.parameters / BILLION, "T": tokens / BILLION, "tokens": float(tokens)})
        all_weight_blocks.append(np.repeat(grid_weights[s], nT, axis=1))
    if all_L:
        all_L = np.array(all_L)
        all_weights = np.concatenate(all_weight_blocks, axis=1) * np.isfinite(all_L)[None, :]
        datasets["chinchilla_all_runs"] = law_data(
            "chinchilla_all_runs", LOSS_LAW, {"N": np.array(all_N), "T": np.array(all_T)},
            np.broadcast_to(all_L, all_weights.shape), all_weights, config.huber_delta, grid_run_ids,
            "completed grid runs at >= 2 sizes and >= 2 budgets", {"N": 2, "T": 2}, all_labels,
        )

    fits = {}
    for name, data in datasets.items():
        fits[name] = fit_point(data)
        log(f"fit {name}: {'ok' if not fits[name].reason else fits[name].reason} ({time.perf_counter() - started:.1f} s)")

    if noise_std is None and fits["loss_optimal"].result is not None and not fits["loss_optimal"].reason:
        noise_std = fits["loss_optimal"].result.rmse_log
        noise_source = "residuals of the loss_optimal fit (no noise-floor seeds)"
    else:
        noise_source = prep.noise["source"] if prep.noise else "none"
    noise_std = float(noise_std or 0.0)
    if R and conv_single.any():
        for s in np.flatnonzero(conv_single):
            block = slice(s * nT, (s + 1) * nT)
            conv[1:, block] = conv[1:, block] * (1 + noise_std * conv_noise_draws[:, s : s + 1])
        datasets["loss_conventional"].observed = conv

    if R:
        for name, fit in fits.items():
            bootstrap_law(fit)
        log(f"bootstrap refits: {R} resamples ({time.perf_counter() - started:.1f} s)")

    # --- step 4: compute-optimal allocation ------------------------------------------------------
    target = config.target_flops or (100.0 * float(np.nanmax(point_C)) if point_C.size else None)
    all_parameters = [g.parameters for g in prep.fitting + prep.heldout] or [1e6]
    solver = AllocationSolver(prep.flop_model, (min(all_parameters) / 1e4, max(all_parameters) * 1e7))
    compute_range = config.compute_range_flops or ([float(np.nanmin(point_C)), float(target)] if point_C.size else None)
    compute_grid = np.geomspace(*compute_range, 25) if compute_range else np.array([])
    compute = {}
    allocation_samples = {}
    for which in ("optimal", "conventional"):
        fit = fits[f"loss_{which}"]
        label = "precise" if which == "optimal" else "conventional"
        if fit.reason or target is None:
            compute[label] = {"status": "not fitted", "reason": f"loss_{which}: {fit.reason or 'no target budget'}"}
            continue
        p0 = np.array([[fit.result.parameters[k] for k in LOSS_LAW.parameter_names]])
        rows = [p0] + ([fit.samples] if fit.samples is not None and len(fit.samples) else [])
        params = np.concatenate(rows, axis=0)
        flops = np.concatenate([[target], compute_grid])[None, :]
        n_opt, loss_at, interior = solver.optimal(loss_law_callable(params), np.broadcast_to(flops, (len(params), flops.size)))
        k, a = power_law_through(compute_grid, n_opt[:, 1:])
        allocation_samples[label] = {"parameters": params, "n_opt": n_opt[:, 0], "loss": loss_at[:, 0], "interior": interior[:, 0], "k": k, "a": a, "resample_index": fit.resample_index}
        ratio = n_opt[0, 1:] / (k[0] * compute_grid ** a[0])
        compute[label] = {
            "status": "fitted",
            "formula": "N_opt = k * C^a",
            "method": f"minimise loss_{which} L(N, T) subject to {prep.flop_model.describe()}; power law fitted over the range",
            "parameters": {"k": float(k[0]), "a": float(a[0])},
            "intervals": {"k": list(percentile_interval(k[1:], level)) if len(k) > 2 else None, "a": list(percentile_interval(a[1:], level)) if len(a) > 2 else None},
            "fit_range_flops": list(compute_range),
            "power_law_max_relative_deviation": float(np.max(np.abs(ratio - 1))),
            "units": {"N_opt": UNITS["N_opt"], "C": UNITS["C"]},
            "optimum_interior": bool(interior[0, 0]),
        }
        if not interior[0, 0]:
            compute[label]["warning"] = "the optimum at the target budget lies at the end of the search range (the law has no interior optimum there)"

    # empirical isoFLOP laws
    for label, source, mask in (("empirical_precise", opt_loss, finite), ("empirical_conventional", conv, np.isfinite(conv))):
        curves = []
        for s, grid in enumerate(prep.fitting):
            block = source[:, s * nT : (s + 1) * nT]
            usable = np.isfinite(block[0])
            if usable.sum() >= 2:
                per_token = (
                    float(prep.flop_model.flops_per_token(grid.parameters))
                    if config.empirical_flops == "model"
                    else grid.flops_per_token
                )
                curves.append(SizeCurve(grid.size, grid.parameters, budgets[usable] * per_token, block[:, usable]))
        if len(curves) < 3:
            compute[label] = {"status": "not fitted", "reason": f"isoFLOP optima need curves of >= 3 sizes; have {len(curves)}"}
            continue
        c_grid = empirical_flops_grid(curves)
        n_emp, interior = empirical_optimal_sizes(curves, c_grid, config.empirical_method)
        k, a = power_law_through(c_grid, n_emp, interior)
        usable_points = int(interior[0].sum())
        points = [
            {"flops": float(c), "parameters": float(n), "interior": bool(i)}
            for c, n, i in zip(c_grid, n_emp[0], interior[0])
            if np.isfinite(n)
        ]
        if usable_points < 3 or not np.isfinite(a[0]):
            compute[label] = {
                "status": "not fitted",
                "reason": f"isoFLOP optima with a size on both sides at {usable_points} budgets C (need 3 or more): "
                "the compute-optimal size lies outside the fitting sizes over most of the range",
                "points": points,
            }
            continue
        compute[label] = {
            "status": "fitted",
            "formula": "N_opt = k * C^a",
            "method": f"isoFLOP: at each C the size with the lowest loss on the measured curves ({config.empirical_method}; "
            f"C counted as {'the FLOP model' if config.empirical_flops == 'model' else 'each run measured'})",
            "parameters": {"k": float(k[0]), "a": float(a[0])},
            "intervals": {"k": list(percentile_interval(k[1:], level)) if R else None, "a": list(percentile_interval(a[1:], level)) if R else None},
            "points": points,
            "units": {"N_opt": UNITS["N_opt"], "C": UNITS["C"]},
        }
        allocation_samples[label] = {"k": k, "a": a}
    gaps = {}
    for version, precise_label, empirical_label in (("optimal", "precise", "empirical_precise"), ("conventional", "conventional", "empirical_conventional")):
        if precise_label in allocation_samples and empirical_label in allocation_samples:
            a_law = allocation_samples[precise_label]["a"]
            a_emp = allocation_samples[empirical_label]["a"]
            value = abs(a_law[0] - a_emp[0]) / abs(a_emp[0])
            paired = None
            index = allocation_samples[precise_label]["resample_index"]
            if R and index is not None and len(index):
                paired = np.abs(a_law[1:] - a_emp[index]) / np.abs(a_emp[index])
            gaps[version] = {**_estimate(value, paired, level), "law_exponent": float(a_law[0]), "empirical_exponent": float(a_emp[0]),
                             "definition": "|a_law - a_empirical| / a_empirical"}
    compute["exponent_gap"] = gaps

    comparison = _comparison(prep, fits, allocation_samples, target, level, R)
    log(f"compute-optimal allocation ({time.perf_counter() - started:.1f} s)")

    # --- document --------------------------------------------------------------------------------
    laws = {name: law_record(fit, level) for name, fit in fits.items()}
    for name, edge in (("batch_size", edge_b), ("deepseek_batch_size", edge_b), ("learning_rate", edge_lr),
                       ("deepseek_learning_rate", edge_lr), ("loss_optimal", edge_b | edge_lr)):
        if laws.get(name, {}).get("status") != "fitted":
            continue
        used = datasets[name].weights[0] > 0
        on_edge = int(np.sum(edge[0] & used))
        laws[name]["edge_points"] = {"used_on_edge": on_edge, "used": int(used.sum()), "policy": config.edge_optima}
        if on_edge and on_edge == int(used.sum()):
            note = (
                "every optimum used lies on the grid's edge in B or LR: each loss is an upper bound of the optimal loss"
                if name == "loss_optimal"
                else "every optimum used lies on the grid's edge: the law describes the grid's boundary, not the optimum"
            )
            laws[name]["warning"] = (laws[name]["warning"] + "; " if "warning" in laws[name] else "") + note
    descriptions = {
        "loss_optimal": "L(N, T) at the interpolated optimal (B, LR) of each (size, budget): the precise law",
        "loss_conventional": f"the same form on the runs at one fixed cell ({cell_text}) for all sizes: the conventional law",
        "batch_size": "B_opt(N, T) = a T^b N^c fitted to the interpolated optima (tokens)",
        "learning_rate": "LR_opt(N, T) = a T^b N^c fitted to the interpolated optima",
        "kaplan": "baseline: Kaplan et al. (2020) form on the optimal-hyperparameter losses",
        "chinchilla_all_runs": "baseline: Chinchilla's form E + A/N^alpha + B/D^beta on every completed grid run, ignoring B and LR",
        "deepseek_batch_size": "baseline: DeepSeek LLM's B_opt = a C^b of compute alone",
        "deepseek_learning_rate": "baseline: DeepSeek LLM's LR_opt = a C^b of compute alone",
    }
    for name, text in descriptions.items():
        if name in laws:
            laws[name]["description"] = text
    if "loss_conventional" in laws:
        laws["loss_conventional"]["conventional_cell"] = prep.conventional_cell

    document = {
        "schema": SCHEMA,
        "origin": "fitted",
        "units": UNITS,
        "config": config.to_dict(),
        "setup": {
            "flop_model": prep.flop_model.to_dict(),
            "flop_model_description": prep.flop_model.describe(),
            "context_tokens": prep.flop_model.context_tokens,
            "inference": config.inference.resolved(int(prep.flop_model.context_tokens)).__dict__,
            "budgets_tokens": [float(b) for b in budgets],
            "fitting_sizes": [_size_record(g) for g in prep.fitting],
            "heldout_sizes": [_size_record(g) for g in prep.heldout],
            "conventional_cell": prep.conventional_cell,
            "conventional_cell_source": "config" if config.conventional_cell else "lowest mean rank over the fitting sizes",
            "noise": {"relative_std": noise_std, "source": noise_source, **({"detail": prep.noise} if prep.noise else {})},
            "bootstrap": {
                "resamples": R,
                "seed": config.seed,
                "scheme": "runs resampled with replacement within each fitting size; single conventional-cell runs scaled by 1 + sigma z (sigma: noise.relative_std)",
                "level": level,
            },
            "notes": prep.notes,
        },
        "runs": {
            "excluded": table.exclusions(),
            "grid": grid_run_ids,
            "conventional": conv_runs,
            "noise": [r for g in (prep.noise or {}).get("groups", []) for r in g["runs"]],
            "heldout": [r for g in prep.heldout for r in g.run_ids],
        },
        "laws": laws,
        "optima": _optima_records(prep, optima, level),
        "conventional_curves": [
            {"size": g.size, "N": g.parameters / BILLION, "tokens": [float(b) for b in budgets],
             "loss": [None if not np.isfinite(v) else float(v) for v in conv[0, s * nT : (s + 1) * nT]],
             "runs": prep.conventional_runs.get(g.size, [])}
            for s, g in enumerate(prep.fitting)
        ],
        "compute_optimal": compute,
        "comparison": comparison,
    }
    from analysis.heldout import baselines_table, evaluate_heldout_grids

    document["heldout"] = evaluate_heldout_grids(document, prep.heldout, budgets, config)
    document["baselines"] = baselines_table(document)
    document["timing_seconds"] = round(time.perf_counter() - started, 2)
    return document


def _size_record(grid: SizeGrid) -> dict:
    return {
        "size": grid.size, "N": grid.parameters / BILLION, "parameters": grid.parameters, "width": grid.width,
        "depth": grid.depth, "runs": len(grid.run_ids), "flops_per_token": grid.flops_per_token,
    }


def _optima_records(prep: Prepared, optima, level) -> list[dict]:
    records = []
    for grid, opt in zip(prep.fitting, optima):
        for t, tokens in enumerate(prep.budgets):
            if opt.method[0, t] < 0:
                continue
            record = _optimum_record(grid, opt, t, tokens, prep, "fitting")
            if opt.loss.shape[0] > 2:
                for key, array in (("learning_rate", opt.learning_rate), ("batch_tokens", opt.batch_tokens), ("loss", opt.loss)):
                    record[f"{key}_interval"] = list(percentile_interval(array[1:, t], level))
            records.append(record)
    return records


def _optimum_record(grid: SizeGrid, opt, t: int, tokens: float, prep: Prepared, role: str) -> dict:
    tokens_per_clip = prep.flop_model.context_tokens
    return {
        "size": grid.size,
        "role": role,
        "N": grid.parameters / BILLION,
        "tokens": float(tokens),
        "T": float(tokens) / BILLION,
        "flops": float(tokens) * grid.flops_per_token,
        "learning_rate": float(opt.learning_rate[0, t]),
        "batch_tokens": float(opt.batch_tokens[0, t]),
        "batch_clips": float(opt.batch_tokens[0, t]) / tokens_per_clip,
        "loss": float(opt.loss[0, t]),
        "method": METHOD_NAMES[int(opt.method[0, t])],
        "edge_learning_rate": bool(opt.edge_learning_rate[0, t]),
        "edge_batch": bool(opt.edge_batch[0, t]),
        "near_optimal": near_optimal_band(grid, t, prep.config.near_optimal_tolerance),
        "cells": int(np.isfinite(grid.losses[:, t]).sum()),
    }


def _comparison(prep: Prepared, fits, samples, target, level, R) -> dict:
    """Precise vs conventional recipe at the target budget, with bootstrap intervals."""
    if target is None or "precise" not in samples or "conventional" not in samples:
        missing = [k for k in ("precise", "conventional") if k not in samples]
        return {"status": "not computed", "reason": f"needs the {' and '.join(missing) or 'target'} compute-optimal law(s)", "target_flops": target}
    width_rule = prep.flop_model.width_rule
    inference = prep.config.inference.resolved(int(prep.flop_model.context_tokens))
    precise, conventional = samples["precise"], samples["conventional"]
    # pair resamples that both laws kept
    common = np.intersect1d(precise["resample_index"], conventional["resample_index"]) if R else np.array([], int)
    p_rows = np.concatenate([[0], 1 + np.searchsorted(precise["resample_index"], common)]) if R else np.array([0])
    c_rows = np.concatenate([[0], 1 + np.searchsorted(conventional["resample_index"], common)]) if R else np.array([0])
    n_p = precise["n_opt"][p_rows]
    n_c = conventional["n_opt"][c_rows]
    t_p = target / prep.flop_model.flops_per_token(n_p)
    t_c = target / prep.flop_model.flops_per_token(n_c)
    loss_p = precise["loss"][p_rows]
    loss_c = conventional["loss"][c_rows]
    loss_c_optimal = loss_law_callable(precise["parameters"][p_rows])(n_c[:, None] / BILLION, t_c[:, None] / BILLION)[:, 0]
    f_p = inference_flops(n_p, width_rule, inference)
    f_c = inference_flops(n_c, width_rule, inference)

    def est(values):
        return _estimate(values[0], values[1:] if len(values) > 2 else None, level)

    record = {
        "status": "computed",
        "target_flops": float(target),
        "flop_model": prep.flop_model.describe(),
        "inference_setup": inference.__dict__,
        "precise": {
            "parameters": est(n_p), "tokens": est(t_p), "loss": est(loss_p), "inference_flops_per_video": est(f_p),
            "optimum_interior": bool(precise["interior"][0]),
        },
        "conventional": {
            "parameters": est(n_c), "tokens": est(t_c), "loss": est(loss_c),
            "loss_with_optimal_hyperparameters": est(loss_c_optimal), "inference_flops_per_video": est(f_c),
            "cell": prep.conventional_cell, "optimum_interior": bool(conventional["interior"][0]),
        },
        "model_size_reduction": est(1 - n_p / n_c),
        "inference_flops_reduction": est(1 - f_p / f_c),
        "loss_difference_precise_minus_conventional": est(loss_p - loss_c),
        "paired_resamples": int(len(common)),
        "definitions": {
            "model_size_reduction": "1 - N_opt(precise) / N_opt(conventional) at the target budget",
            "inference_flops_reduction": "1 - F(N_precise) / F(N_conventional), F = FLOPs to generate one video (dit.flops.inference_flops_per_video, attention included)",
            "loss": "precise: loss_optimal at its optimum; conventional: loss_conventional at its optimum (the fixed cell's loss)",
        },
    }
    if fits["batch_size"].result is not None and not fits["batch_size"].reason:
        n_b, t_bn = n_p[0] / BILLION, t_p[0] / BILLION
        record["precise"]["batch_tokens"] = float(BATCH_SIZE_LAW.predict(fits["batch_size"].result.parameters, N=n_b, T=t_bn))
    if fits["learning_rate"].result is not None and not fits["learning_rate"].reason:
        n_b, t_bn = n_p[0] / BILLION, t_p[0] / BILLION
        record["precise"]["learning_rate"] = float(LEARNING_RATE_LAW.predict(fits["learning_rate"].result.parameters, N=n_b, T=t_bn))
    return record
