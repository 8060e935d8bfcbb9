"""The results summary: what the paper claims, what reproduced at this scale, and the numbers behind it.

``python -m analysis.summary --laws results/laws.json --out results/summary.md [--runs results/runs.csv]
[--heldout results/heldout.json] [--protocol-spread FILE.json] [--caption-conditioning FILE.json]
[--benchmarks DIR] [--manifest FILE]``

Written for a reader who has not read the paper: an introduction to the claims and the terms, the
files every number comes from, a verdict per claim (reproduced / partly / not reproduced / not
tested, each with its numbers), then the laws beside the paper's, the precise-vs-conventional
comparison with bootstrap intervals, held-out checks, the sensitivity of the loss to batch size
and learning rate measured on the grid against the run-to-run noise, the validation protocol's
own spread, how often the runs repeat the training data, the caption-conditioning check and stage
timings. Inputs that are given but missing
are named in the file, not skipped silently.

Statistical rule for "sensitive": along one axis of the grid (the batch sizes at the best cell's
learning rate, or the learning rates at the best cell's batch size) the loss spread
``max / min - 1`` is compared with the largest spread that run-to-run noise alone produces among
that many runs in 95% of cases: ``q * sigma``, ``q`` the 95% point of the studentized range of
``k`` runs with the noise estimate's degrees of freedom, ``sigma`` the relative run-to-run noise.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
from pathlib import Path

import numpy as np

from dit.atomic import atomic_write_text
from dit.provenance import provenance

from analysis import paper
from analysis.law_set import LawsFileError, read_laws

#: Confidence of the "larger than noise" rule (module docstring).
NOISE_LEVEL = 0.95
#: A held-out prediction counts as "within noise" when its mean |error| is at most this many noise sigmas.
HELDOUT_NOISE_SIGMAS = 2.0


# ---------------------------------------------------------------------------------------------- formatting
def _read_json(path: str | None, notes: list[str], label: str) -> dict | None:
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        notes.append(f"{label} ({path}) could not be read: {error}")
        return None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _fmt(value, digits: int = 4) -> str:
    if not _finite(value):
        return "-"
    value = 0.0 if value == 0 else float(value)  # no "-0"
    return f"{value:.{digits}g}"


def _count(value) -> str:
    """A raw count (tokens, parameters) for reading: 16384 -> '16.4k', 1.389e7 -> '13.9M', 2.43e9 -> '2.43B'."""
    if not _finite(value):
        return "-"
    value = float(value)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _pct(value, digits: int = 1) -> str:
    """A fraction as a percentage: 0.0213 -> '2.1%' (no '-0.0%')."""
    if not _finite(value):
        return "-"
    text = f"{100 * float(value):.{digits}f}"
    if float(text) == 0:
        text = f"{0:.{digits}f}"
    return f"{text}%"


def _interval_values(estimate) -> tuple[float, float] | None:
    """``(low, high)`` of an estimate record (or a bare pair) when both ends are finite, else None."""
    interval = estimate.get("interval") if isinstance(estimate, dict) else estimate
    if not interval or len(interval) != 2 or not all(_finite(v) for v in interval):
        return None
    return float(interval[0]), float(interval[1])


def _interval(estimate, digits: int = 3) -> str:
    pair = _interval_values(estimate)
    return "" if pair is None else f" [{_fmt(pair[0], digits)}, {_fmt(pair[1], digits)}]"


def _pct_interval(estimate, digits: int = 1) -> str:
    pair = _interval_values(estimate)
    return "" if pair is None else f" [{_pct(pair[0], digits)}, {_pct(pair[1], digits)}]"


def _pct_estimate(estimate: dict | None, digits: int = 1) -> str:
    """'-2.1% [-4.6%, 7.9%]' or '-2.1% (no interval)'."""
    if not estimate or not _finite(estimate.get("value")):
        return "-"
    return _pct(estimate["value"], digits) + (_pct_interval(estimate, digits) or " (no interval)")


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def _fitted(document: dict, name: str) -> dict | None:
    record = document.get("laws", {}).get(name, {})
    return record if record.get("status") == "fitted" else None


# ---------------------------------------------------------------------------------------------- facts
def noise_estimate(document: dict) -> dict:
    """Relative run-to-run noise sigma, its source and approximate degrees of freedom."""
    noise = document.get("setup", {}).get("noise") or {}
    sigma = noise.get("relative_std")
    detail = noise.get("detail") or {}
    groups = detail.get("groups") or []
    if groups:
        budgets = sum(1 for b in detail.get("relative_std_by_budget", []) if b.get("relative_std") is not None) or 1
        dof = sum(max(int(g.get("seeds", 0)) - 1, 0) for g in groups) * budgets
        cells = ", ".join(f"{g['size']} at B = {g['batch_clips']} clips, LR = {g['learning_rate']:g} ({g['seeds']} seeds)" for g in groups)
        text = f"from noise-floor seeds: {cells}"
    else:
        law = _fitted(document, "loss_optimal")
        points = (law or {}).get("fit", {}).get("points", 0)
        dof = max(points - 5, 0)
        text = noise.get("source") or "no noise estimate"
    return {"sigma": float(sigma) if _finite(sigma) and sigma > 0 else None, "dof": dof, "text": text}


@functools.lru_cache(maxsize=None)
def noise_range_factor(cells: int, dof: float, level: float = NOISE_LEVEL) -> float:
    """95% point of the studentized range of ``cells`` runs with the noise estimated on ``dof`` degrees of freedom.

    Cached: a summary asks for the same few (cells, dof) pairs once per size and budget, and each
    ``studentized_range.ppf`` integrates numerically (about 0.1 s).
    """
    from scipy.stats import studentized_range

    if cells < 2:
        return float("nan")
    return float(studentized_range.ppf(level, cells, dof if dof and dof > 0 else np.inf))


def _spread(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.max(values) / np.min(values) - 1) if values.size >= 2 else float("nan")


def sensitivity(runs_path: str, document: dict, notes: list[str]) -> dict | None:
    """Loss spread over each fitting size's (B, LR) grid at each budget, overall and along each axis.

    Per (size, budget): ``spread`` over every cell; ``batch_spread`` over the batch sizes at the best
    cell's learning rate; ``learning_rate_spread`` over the learning rates at the best cell's batch
    size; each with the number of cells compared (module docstring for the noise rule).
    """
    from analysis.config import config_from_dict
    from analysis.runs import RunsTableError, load_runs

    try:
        table = load_runs(runs_path)
    except RunsTableError as error:
        notes.append(f"runs table: {error}")
        return None
    config = config_from_dict(document.get("config") or {})
    budgets = document["setup"]["budgets_tokens"]
    groups = []
    batch_values, rate_values = set(), set()
    for size in document["setup"]["fitting_sizes"]:
        runs = table.completed(series=["grid"], sizes=[size["size"]])
        if len(runs) < 2:
            continue
        losses = table.loss_matrix(list(runs.index), budgets, config.loss_column, config.token_match_tolerance)
        batch = runs["batch_clips"].to_numpy(float)
        rate = runs["learning_rate"].to_numpy(float)
        batch_values.update(batch.tolist())
        rate_values.update(rate.tolist())
        for t, tokens in enumerate(budgets):
            column = losses[:, t]
            present = np.isfinite(column)
            if present.sum() < 2:
                continue
            best = int(np.nanargmin(np.where(present, column, np.nan)))
            same_rate = present & np.isclose(rate, rate[best], rtol=1e-9)
            same_batch = present & (batch == batch[best])
            groups.append({
                "size": size["size"], "tokens": float(tokens), "cells": int(present.sum()), "spread": _spread(column),
                "batch_spread": _spread(column[same_rate]), "batch_cells": int(same_rate.sum()),
                "learning_rate_spread": _spread(column[same_batch]), "learning_rate_cells": int(same_batch.sum()),
            })
    if not groups:
        return None
    noise = noise_estimate(document)
    result = {"groups": groups, "noise": noise["sigma"], "noise_dof": noise["dof"], "noise_text": noise["text"],
              "batch_clips": sorted(batch_values), "learning_rates": sorted(rate_values),
              "tokens_per_clip": document["setup"].get("context_tokens")}
    for key, cells in (("spread", "cells"), ("batch_spread", "batch_cells"), ("learning_rate_spread", "learning_rate_cells")):
        values = np.array([g[key] for g in groups], dtype=float)
        finite = np.isfinite(values)
        result[f"median_{key}"] = float(np.median(values[finite])) if finite.any() else None
        result[f"max_{key}"] = float(np.max(values[finite])) if finite.any() else None
        if noise["sigma"] is not None:
            thresholds = np.array([noise["sigma"] * noise_range_factor(g[cells], noise["dof"]) for g in groups])
            for group, threshold, value in zip(groups, thresholds, values):
                group[f"{key}_noise_range"] = float(threshold)
                group[f"{key}_above_noise"] = bool(np.isfinite(value) and np.isfinite(threshold) and value > threshold)
            result[f"{key}_above_noise"] = int(sum(g[f"{key}_above_noise"] for g in groups))
            result[f"{key}_compared"] = int((finite & np.isfinite(thresholds)).sum())
            result[f"{key}_median_threshold"] = float(np.median(thresholds[np.isfinite(thresholds)])) if np.isfinite(thresholds).any() else None
    return result


def data_reuse(runs_path: str, manifest_path: str, document: dict, notes: list[str]) -> dict | None:
    """How often the grid's runs repeat the training clips, and whether their validation loss turns up.

    Epochs = tokens / (tokens per clip x training clips in the prepared set's manifest). A run's
    validation loss "turns up" when its value at the last milestone exceeds its lowest earlier value
    by more than the run-to-run noise (relative); it looks like overfitting when the training loss at
    the last milestone is still below all its earlier values. Also returns the training and validation curves of
    the best completed grid run of the largest fitting size at the largest milestone.
    """
    from analysis.runs import RunsTableError, load_runs

    manifest = _read_json(manifest_path, notes, "prepared data manifest")
    if manifest is None:
        return None
    train_clips = (manifest.get("counts") or {}).get("train_clips")
    if not train_clips:
        notes.append(f"prepared data manifest `{manifest_path}`: no counts.train_clips")
        return None
    try:
        table = load_runs(runs_path)
    except RunsTableError as error:
        notes.append(f"runs table: {error}")
        return None
    runs = table.completed(series=["grid"])
    if runs.empty:
        return None
    sigma = noise_estimate(document)["sigma"] or 0.0
    turned_up, overfitting, worst = [], [], 0.0
    for run_id in runs.index:
        _, losses = table.curve(run_id)
        _, train = table.curve(run_id, "train_loss")
        keep = np.isfinite(losses) & np.isfinite(train)
        losses, train = losses[keep], train[keep]
        if losses.size < 2:
            continue
        rise = float(losses[-1] / np.min(losses[:-1]) - 1)
        worst = max(worst, rise)
        if rise > sigma:
            turned_up.append(run_id)
            if train[-1] < np.min(train[:-1]):  # training loss still falling: the pattern of memorizing the data
                overfitting.append(run_id)
    sizes = [s["size"] for s in document["setup"]["fitting_sizes"]]
    largest = max(sizes, key=lambda name: float(runs[runs["size"] == name]["non_embedding_parameters"].max())
                  if (runs["size"] == name).any() else -1.0)
    candidates = runs[runs["size"] == largest]
    curve = None
    if not candidates.empty:
        final = {run_id: table.curve(run_id)[1][-1] for run_id in candidates.index}
        best = min(final, key=lambda run_id: final[run_id] if np.isfinite(final[run_id]) else np.inf)
        rows = table.rows[table.rows["run_id"] == best].sort_values("tokens")
        per_clip = float(candidates.loc[best, "tokens_per_clip"])
        curve = {"run_id": best, "points": [
            {"tokens": float(r.tokens), "epochs": float(r.tokens) / (per_clip * train_clips),
             "train_loss": float(r.train_loss), "validation_loss": float(r.validation_loss)}
            for r in rows.itertuples()]}
    max_epochs = float((runs["max_tokens"] / (runs["tokens_per_clip"] * train_clips)).max())
    return {"train_clips": int(train_clips), "validation_clips": (manifest.get("counts") or {}).get("validation_clips"),
            "max_epochs": max_epochs, "runs": int(len(runs)), "turned_up": turned_up, "overfitting": overfitting, "largest_rise": worst,
            "noise": sigma, "curve": curve}


def data_reuse_lines(reuse: dict, manifest_path: str) -> list[str]:
    out = [f"Source: `{manifest_path}` (training clips) and the runs table. The prepared set holds {reuse['train_clips']:,} "
           f"training clips ({reuse['validation_clips']} validation clips); the longest grid run sees them "
           f"{reuse['max_epochs']:.2f} times. Validation loss at the last milestone above its lowest earlier value by more "
           f"than the run-to-run noise ({_pct(reuse['noise'], 2)}): {len(reuse['turned_up'])} of {reuse['runs']} completed "
           f"grid runs (largest rise {_pct(reuse['largest_rise'], 2)})"
           + (": " + ", ".join(f"`{r}`" for r in reuse["turned_up"]) if reuse["turned_up"] else "") + "."
           + (f" In {len(reuse['overfitting'])} of them the training loss was still falling, the pattern that "
              "memorizing repeated data would produce (noise can too): " + ", ".join(f"`{r}`" for r in reuse["overfitting"]) + "." if reuse["overfitting"] else
              " In none of them was the training loss still falling: the rises come with rising training loss "
              "(unstable training), not from repeating the data." if reuse["turned_up"] else "")]
    curve = reuse.get("curve")
    if curve:
        out += ["", f"Training and validation loss of `{curve['run_id']}`, the best grid run of the largest fitting size "
                "(training loss: mean over the steps since the previous milestone):", ""]
        out += _table(["tokens", "epochs", "training loss", "validation loss"],
                      [[_count(p["tokens"]), f"{p['epochs']:.2f}", f"{p['train_loss']:.5f}", f"{p['validation_loss']:.5f}"]
                       for p in curve["points"]])
    return out


def _by_budget(sens: dict, key: str = "spread") -> list[dict]:
    """Per token budget: the range of ``key`` over sizes and how many sizes are above the noise range."""
    out = []
    for tokens in sorted({g["tokens"] for g in sens["groups"]}):
        rows = [g for g in sens["groups"] if g["tokens"] == tokens and _finite(g[key])]
        if rows:
            out.append({"tokens": tokens, "low": min(g[key] for g in rows), "high": max(g[key] for g in rows), "sizes": len(rows),
                        "above": sum(bool(g.get(f"{key}_above_noise")) for g in rows)})
    return out


def paper_heatmap_spreads() -> dict:
    """The same spreads on the paper's published 1.07B heatmaps (T -> spread, batch_spread, learning_rate_spread)."""
    out = {}
    for t_billions, values in paper.HEATMAPS.items():
        matrix = np.asarray(values, dtype=float)
        i, j = np.unravel_index(np.argmin(matrix), matrix.shape)
        out[t_billions] = {"spread": _spread(matrix.ravel()), "batch_spread": _spread(matrix[:, j]), "learning_rate_spread": _spread(matrix[i, :])}
    return out


def conventional_excess(document: dict) -> dict | None:
    """How far the fixed (conventional) cell is from the optimum: loss(cell) / loss(optimum) - 1 per (size, budget)."""
    optima = {(o["size"], float(o["tokens"])): o["loss"] for o in document.get("optima", [])}
    excess = []
    for curve in document.get("conventional_curves", []):
        for tokens, loss in zip(curve["tokens"], curve["loss"]):
            best = optima.get((curve["size"], float(tokens)))
            if _finite(loss) and _finite(best):
                excess.append(loss / best - 1)
    if not excess:
        return None
    return {"median": float(np.median(excess)), "max": float(np.max(excess)), "points": len(excess)}


# ---------------------------------------------------------------------------------------------- sections
def law_rows(document: dict) -> list[list[str]]:
    """Rows ``[quantity, ours [interval], paper, note]`` for the laws table."""
    rows = []
    mapping = [
        ("loss_optimal", "alpha", "L(N, T): T exponent alpha", paper.LOSS_OPTIMAL["alpha"]),
        ("loss_optimal", "beta", "L(N, T): N exponent beta", paper.LOSS_OPTIMAL["beta"]),
        ("loss_optimal", "L_inf", "L(N, T): irreducible loss L_inf", paper.LOSS_OPTIMAL["L_inf"]),
        ("batch_size", "b", "B_opt(N, T): T exponent", paper.BATCH_SIZE["b"]),
        ("batch_size", "c", "B_opt(N, T): N exponent", paper.BATCH_SIZE["c"]),
        ("learning_rate", "b", "LR_opt(N, T): T exponent", paper.LEARNING_RATE["b"]),
        ("learning_rate", "c", "LR_opt(N, T): N exponent", paper.LEARNING_RATE["c"]),
    ]
    for law, parameter, label, published in mapping:
        record = _fitted(document, law)
        if record is None:
            reason = document.get("laws", {}).get(law, {}).get("reason", "absent from the laws file")
            rows.append([label, "not fitted", _fmt(published), reason])
            continue
        interval = _interval_values((record.get("intervals") or {}).get(parameter))
        snap = (lambda v: 0.0 if abs(v) < 1e-9 else v)  # optimiser round-off around an exponent of exactly 0
        text = _fmt(snap(record["parameters"][parameter])) + ("" if interval is None else _interval([snap(v) for v in interval]))
        rows.append([label, text, _fmt(published), _law_note(record, parameter)])
    compute = document.get("compute_optimal", {})
    for key, label, published in (("precise", "N_opt = k C^a from the precise law: a", paper.COMPUTE_OPTIMAL_PRECISE["a"]),
                                  ("conventional", "N_opt = k C^a from the conventional law: a", None),
                                  ("empirical_precise", "N_opt = k C^a, empirical (isoFLOP): a", paper.COMPUTE_OPTIMAL_EMPIRICAL["a"])):
        record = compute.get(key, {})
        if record.get("status") == "fitted":
            interval = (record.get("intervals") or {}).get("a")
            note = record.get("warning", "")
            source = _fitted(document, "loss_conventional" if key == "conventional" else "loss_optimal") if key != "empirical_precise" else None
            if source and source.get("fit", {}).get("on_bound"):
                note = "; ".join(filter(None, [note, f"from a degenerate loss law ({', '.join(source['fit']['on_bound'])} on its bound)"]))
            if _interval_values(interval) is None:
                note = "; ".join(filter(None, [note, "no interval (the loss law's bootstrap gave none)"]))
            rows.append([label, _fmt(record["parameters"]["a"]) + _interval(interval), _fmt(published), note])
        else:
            rows.append([label, "not fitted", _fmt(published), record.get("reason", "absent from the laws file")])
    fits = [(_fitted(document, name) or {}).get("fit", {}).get("mse") for name in ("loss_optimal", "loss_conventional")]
    rows.append(["fit MSE of L, optimal / fixed hyperparameters", f"{_fmt(fits[0], 3)} / {_fmt(fits[1], 3)}",
                 f"{paper.FIT_MSE['optimal_hyperparameters']:.3g} / {paper.FIT_MSE['fixed_hyperparameters']:.3g}",
                 "mean squared error of the predicted loss (loss units squared)"])
    return rows


def _law_note(record: dict, parameter: str) -> str:
    """Bound, edge and interval caveats of one fitted parameter."""
    notes = []
    bootstrap = record.get("bootstrap") or {}
    on_bound = record.get("fit", {}).get("on_bound") or []
    if parameter in on_bound:
        notes.append("ended on its bound (not estimated)")
    elif on_bound:
        notes.append(f"fit degenerate: {', '.join(on_bound)} on its bound")
    edge = record.get("edge_points") or {}
    if edge.get("used") and edge.get("used_on_edge") == edge.get("used"):
        notes.append(f"all {edge['used']} optima on the grid's edge")
    elif edge.get("used_on_edge"):
        notes.append(f"{edge['used_on_edge']} of {edge['used']} optima on the grid's edge")
    if _interval_values((record.get("intervals") or {}).get(parameter)) is None:
        notes.append("no interval: " + bootstrap.get("no_interval_reason", "bootstrap disabled or not run"))
    elif bootstrap.get("held_at_bound"):
        notes.append(f"interval conditional on {', '.join(bootstrap['held_at_bound'])} at its bound")
    if bootstrap.get("resamples") and (bootstrap.get("failed") or bootstrap.get("on_bound")):
        notes.append(f"{bootstrap['usable']} of {bootstrap['resamples']} resamples usable")
    return "; ".join(notes)


def _extrapolation_note(document: dict, comparison: dict) -> str:
    """How far the comparison extrapolates beyond the runs (budget and size)."""
    setup = document.get("setup", {})
    sizes = setup.get("fitting_sizes") or []
    budgets = setup.get("budgets_tokens") or []
    if not sizes or not budgets:
        return ""
    largest_flops = max(s["flops_per_token"] for s in sizes) * max(budgets)
    largest_size = max(s["parameters"] for s in sizes)
    n_opt = comparison["precise"]["parameters"]["value"]
    source = "set in the fit config" if (document.get("config") or {}).get("target_flops") else "default: 100x the largest run's"
    return (f" The budget is {comparison['target_flops'] / largest_flops:.3g}x the largest fitting run's compute ({source}) and "
            f"N_opt is {n_opt / largest_size:.3g}x the largest fitting size: both laws are extrapolated that far.")


def comparison_rows(comparison: dict) -> list[list[str]]:
    p, c = comparison["precise"], comparison["conventional"]
    return [
        ["compute-optimal size N_opt, precise recipe (parameters)", _fmt(p["parameters"]["value"]) + _interval(p["parameters"]),
         _fmt(paper.OPTIMAL_SIZE_AT_TARGET)],
        ["compute-optimal size N_opt, conventional recipe (parameters)", _fmt(c["parameters"]["value"]) + _interval(c["parameters"]),
         _fmt(paper.CONVENTIONAL_SIZE_AT_TARGET)],
        ["model-size reduction 1 - N_precise / N_conventional", _pct_estimate(comparison["model_size_reduction"]),
         _pct(paper.MODEL_SIZE_REDUCTION)],
        ["inference-cost reduction (FLOPs to generate one video)", _pct_estimate(comparison["inference_flops_reduction"]),
         f"{_pct(paper.INFERENCE_COST_REDUCTION)} (definition not stated)"],
        ["predicted loss, precise / conventional", f"{_fmt(p['loss']['value'], 5)} / {_fmt(c['loss']['value'], 5)}", "-"],
        ["loss difference precise - conventional", _fmt(comparison["loss_difference_precise_minus_conventional"]["value"], 3)
         + _interval(comparison["loss_difference_precise_minus_conventional"]), "-"],
    ]


def sensitivity_lines(sens: dict) -> list[str]:
    lines = [
        f"Grid: batch size B in {{{', '.join(f'{b:g}' for b in sens['batch_clips'])}}} clips, learning rate in "
        f"{{{', '.join(f'{r:g}' for r in sens['learning_rates'])}}}, compared at each fitting size and token budget "
        f"({len(sens['groups'])} pairs). Spread = worst cell's loss / best cell's loss - 1.",
        "",
    ]
    rows = []
    for key, label in (("spread", "whole grid"), ("batch_spread", "along B (at the best cell's LR)"),
                       ("learning_rate_spread", "along LR (at the best cell's B)")):
        above = (f"{sens[f'{key}_above_noise']} of {sens[f'{key}_compared']}" if f"{key}_above_noise" in sens else "-")
        rows.append([label, _pct(sens[f"median_{key}"], 2), _pct(sens[f"max_{key}"], 2),
                     _pct(sens.get(f"{key}_median_threshold"), 2), above])
    lines += _table(["spread of the loss", "median", "max", "noise alone (95%)", "pairs above noise"], rows)
    reference = paper_heatmap_spreads()
    lines += ["", "Paper, 1.07B heatmaps (3 B x 6 LR): " + "; ".join(
        f"T = {t:g}B tokens: whole grid {_pct(v['spread'], 2)}, along B {_pct(v['batch_spread'], 2)}, along LR {_pct(v['learning_rate_spread'], 2)}"
        for t, v in sorted(reference.items())) + "."]
    return lines


def benchmark_rows(folder: str, notes: list[str]) -> list[list[str]]:
    path = Path(folder)
    if not path.is_dir():
        notes.append(f"benchmarks folder {folder} does not exist")
        return []
    groups: dict[str, dict] = {}
    for tsv in sorted(path.rglob("*.tsv")):
        try:
            with tsv.open() as handle:
                records = list(csv.DictReader(handle, delimiter="\t"))
        except OSError as error:
            notes.append(f"benchmark {tsv}: {error}")
            continue
        parts = tsv.relative_to(path).with_suffix("").parts
        stage = "/".join(parts[:2]) + "/*" if len(parts) > 2 else "/".join(parts)  # e.g. train/grid/* for every run
        group = groups.setdefault(stage, {"jobs": 0, "seconds": [], "rss": []})
        group["jobs"] += 1
        group["seconds"] += [float(r["s"]) for r in records if r.get("s") not in (None, "", "NA")]
        group["rss"] += [float(r["max_rss"]) for r in records if r.get("max_rss") not in (None, "", "NA", "-")]
    return [
        [stage, g["jobs"], _fmt(float(np.median(g["seconds"])) if g["seconds"] else None),
         _fmt(float(np.sum(g["seconds"])) if g["seconds"] else None), _fmt(max(g["rss"]) if g["rss"] else None)]
        for stage, g in groups.items()
    ]


# ---------------------------------------------------------------------------------------------- verdict
def verdict(document: dict, heldout: dict | None, sens: dict | None) -> list[str]:
    """One line per claim of the paper: reproduced / partly / not reproduced / not tested, with its numbers."""
    noise = noise_estimate(document)
    sigma = noise["sigma"]
    noise_text = f"run-to-run noise {_pct(sigma, 2)}" if sigma else "no noise estimate"
    lines = [_verdict_law(document, sigma, noise_text), _verdict_sensitivity(sens)]
    lines += _verdict_hyperparameters(document, heldout)
    lines.append(_verdict_comparison(document))
    lines.append(_verdict_extrapolation(document, heldout, sigma, noise_text))
    return lines


def _verdict_law(document: dict, sigma, noise_text: str) -> str:
    head = "- **Claim 1, a scaling law L(N, T) = a T^-alpha + b N^-beta + L_inf at the best (B, LR):"
    law = _fitted(document, "loss_optimal")
    if law is None:
        reason = document.get("laws", {}).get("loss_optimal", {}).get("reason", "absent from the laws file")
        return f"{head} not tested.** The law could not be fitted: {reason}."
    fit = law["fit"]
    p = law["parameters"]
    residual = fit.get("rmse_log")
    fits_well = residual is not None and sigma is not None and residual <= 2 * sigma
    text = (f"fitted to {fit['points']} optimal-loss points with RMS log residual {_pct(residual, 2)} ({noise_text}); "
            f"alpha = {_fmt(p['alpha'], 3)}, beta = {_fmt(p['beta'], 3)}, L_inf = {_fmt(p['L_inf'], 3)} "
            f"(paper: {paper.LOSS_OPTIMAL['alpha']}, {paper.LOSS_OPTIMAL['beta']}, {paper.LOSS_OPTIMAL['L_inf']}).")
    degenerate = fit.get("on_bound") or []
    edge = law.get("edge_points") or {}
    caveats = []
    if degenerate:
        caveats.append(f"the fit is degenerate: {', '.join(degenerate)} ended on its bound"
                       + (" (no irreducible loss), so the exponents describe the few budgets measured rather than an asymptote and "
                          "are not comparable with the paper's" if "L_inf" in degenerate else ""))
    if edge.get("used") and edge.get("used_on_edge") == edge.get("used"):
        caveats.append(f"every one of the {edge['used']} optima lies on the grid's edge, so each 'optimal' loss is only an upper bound")
    if degenerate or not fits_well:
        status = "partly" if fits_well or degenerate else "not reproduced"
        if not fits_well and residual is not None and sigma:
            caveats.append(f"the residuals are {residual / sigma:.1f}x the run-to-run noise")
        return f"{head} {status}.** The law is {text} But " + "; ".join(caveats) + "." if caveats else f"{head} {status}.** The law is {text}"
    return f"{head} yes.** The law is {text}" + (" Caveat: " + "; ".join(caveats) + "." if caveats else "")


def _verdict_sensitivity(sens: dict | None) -> str:
    head = "- **Claim 2, the loss is very sensitive to batch size B and learning rate LR:"
    if sens is None:
        return f"{head} not tested.** No runs table was given (--runs) or it holds fewer than two grid runs per size."
    grid = (f"B {_fmt(min(sens['batch_clips']))}-{_fmt(max(sens['batch_clips']))} clips x LR "
            f"{min(sens['learning_rates']):g}-{max(sens['learning_rates']):g}")
    whole = (f"Across each size's grid ({grid}) the worst cell's loss exceeds the best cell's by {_pct(sens['median_spread'], 2)} "
             f"(median over {len(sens['groups'])} size-budget pairs; up to {_pct(sens['max_spread'], 2)})")
    if sens.get("noise") is None:
        return f"{head} not judged.** {whole}, but there is no run-to-run noise estimate to compare it with."
    above, compared = sens.get("spread_above_noise", 0), sens.get("spread_compared", 0)
    status = "yes" if compared and above > compared / 2 else ("partly" if above else "not shown")
    budgets = "; ".join(f"at {_count(b['tokens'])} tokens {_pct(b['low'], 2)} to {_pct(b['high'], 2)} ({b['above']} of {b['sizes']} sizes above noise)"
                        for b in _by_budget(sens))
    axes = "; ".join(f"along {axis} alone {_pct(sens[f'median_{key}'], 2)} (median), above noise in "
                     f"{sens.get(f'{key}_above_noise', 0)} of {sens.get(f'{key}_compared', 0)} pairs"
                     for key, axis in (("batch_spread", "B"), ("learning_rate_spread", "LR")))
    noise = (f"{whole}, {sens['median_spread'] / sens['noise']:.1f}x the run-to-run noise of {_pct(sens['noise'], 2)}. By budget: "
             f"{budgets}. {axes[0].upper() + axes[1:]}. 'Above noise' means beyond the spread that noise alone stays under in "
             f"95% of cases for that many runs (studentized range; the noise estimate has only about {sens['noise_dof']} degrees "
             "of freedom, which widens it).")
    steps = _steps_note(sens)
    scope = ("Whether video DiTs are more sensitive than language models, as the paper says, is not tested here.")
    return f"{head} {status}.** {noise}{steps} {scope}"


def _steps_note(sens: dict) -> str:
    """At the smallest budget, larger batches have taken fewer optimizer steps: say how few."""
    tokens_per_clip = sens.get("tokens_per_clip")
    if not tokens_per_clip or not sens["groups"]:
        return ""
    smallest = min(g["tokens"] for g in sens["groups"])
    steps = [smallest / (b * tokens_per_clip) for b in sens["batch_clips"]]
    return (f" At {_count(smallest)} tokens the runs have taken only {_fmt(min(steps), 3)} to {_fmt(max(steps), 3)} optimizer steps, "
            "so part of the early batch-size effect is simply fewer steps for larger batches.")


def _verdict_hyperparameters(document: dict, heldout: dict | None) -> list[str]:
    lines = []
    for name, label, published in (("batch_size", "B_opt(N, T)", paper.BATCH_SIZE), ("learning_rate", "LR_opt(N, T)", paper.LEARNING_RATE)):
        head = f"- **Claim 3a, a law {label} = a T^b N^c for the best {'batch size' if name == 'batch_size' else 'learning rate'}:"
        law = _fitted(document, name)
        if law is None:
            reason = document.get("laws", {}).get(name, {}).get("reason", "absent from the laws file")
            lines.append(f"{head} not tested.** {reason}.")
            continue
        edge = law.get("edge_points") or {}
        p = law["parameters"]
        intervals = law.get("intervals") or {}
        if edge.get("used") and edge.get("used_on_edge") == edge.get("used"):
            lines.append(f"{head} not tested.** All {edge['used']} optima lie on the grid's edge, so the fitted law "
                         f"(b = {_fmt(p['b'], 3)}, c = {_fmt(p['c'], 3)}) describes the grid's boundary, not the optimum; "
                         "the grid must extend past the optimum along this axis.")
            continue
        consistent = []
        for key, axis in (("b", "T"), ("c", "N")):
            pair = _interval_values(intervals.get(key))
            if pair is None:
                consistent.append(f"{axis} exponent {_fmt(p[key], 3)} (no interval; paper {published[key]})")
            else:
                inside = pair[0] <= published[key] <= pair[1]
                consistent.append(f"{axis} exponent {_fmt(p[key], 3)} [{_fmt(pair[0], 3)}, {_fmt(pair[1], 3)}], paper {published[key]} "
                                  f"({'inside' if inside else 'outside'} our interval)")
        spread = law.get("fit", {}).get("rmse_log")
        on_edge = f"; {edge['used_on_edge']} of {edge['used']} optima on the grid's edge" if edge.get("used_on_edge") else ""
        inside = all(_interval_values(intervals.get(k)) is not None and
                     _interval_values(intervals.get(k))[0] <= published[k] <= _interval_values(intervals.get(k))[1] for k in ("b", "c"))
        status = "fitted, consistent with the paper's exponents" if inside else "fitted, exponents differ from the paper's"
        lines.append(f"{head} {status}.** " + "; ".join(consistent) + f"; the optima scatter around the law by {_pct(spread, 1)} "
                     f"(RMS of log LR or log B){on_edge}. Exponents at this scale need not equal the paper's.")
    groups = [g for g in (heldout or {}).get("groups", []) if g.get("predicted_cell_is_best") is not None]
    head = "- **Claim 3b, the laws pick the best (B, LR) for a size they were not fitted on:"
    if not groups:
        lines.append(f"{head} not tested.** No held-out hyperparameter runs were evaluated (--heldout).")
    else:
        best = sum(bool(g["predicted_cell_is_best"]) for g in groups)
        details = []
        for g in groups:
            cell = g.get("predicted_cell", {})
            others = [c["loss"] for c in g.get("cells", []) if _finite(c.get("loss"))]
            margin = ""
            if g["predicted_cell_is_best"] and len(others) >= 2 and _finite(cell.get("measured_loss")):
                runner_up = sorted(others)[1]
                margin = f", {_pct(runner_up / cell['measured_loss'] - 1, 2)} below the next best of {len(others)} cells"
            elif not g["predicted_cell_is_best"]:
                margin = f", {_pct(g.get('predicted_cell_excess_loss'), 2)} above the best cell"
            details.append(f"{g['size']} at {_count(g.get('tokens'))} tokens: predicted B = {_fmt(cell.get('batch_tokens'))} tokens, "
                           f"LR = {_fmt(cell.get('learning_rate'))}{margin}")
        sigma = noise_estimate(document)["sigma"]
        near = sum(1 for g in groups if not g["predicted_cell_is_best"] and sigma is not None
                   and _finite(g.get("predicted_cell_excess_loss")) and g["predicted_cell_excess_loss"] <= sigma)
        status = "yes" if best == len(groups) else ("partly" if best or near else "no")
        batch_edge = (_fitted(document, "batch_size") or {}).get("edge_points") or {}
        if batch_edge.get("used") and batch_edge.get("used_on_edge") == batch_edge.get("used"):
            caveat = (" The batch-size half of this is weak: B_opt is the grid's edge value (claim 3a), so only the learning "
                      "rate was really predicted.")
        elif batch_edge.get("used") and 2 * batch_edge.get("used_on_edge", 0) > batch_edge["used"]:
            caveat = (f" The batch-size half of this is weak: {batch_edge['used_on_edge']} of {batch_edge['used']} batch-size "
                      "optima the law was fitted to lie on the grid's edge.")
        else:
            caveat = ""
        noise_note = (f" In {near} of them the predicted cell's loss is within the run-to-run noise ({_pct(sigma, 2)}) of the "
                      "best cell's: one seed per cell cannot rank them." if near else "")
        lines.append(f"{head} {status}.** The predicted cell was the best in {best} of {len(groups)} held-out group(s) ("
                     + "; ".join(details) + ")." + noise_note + caveat)
    return lines


def _verdict_comparison(document: dict) -> str:
    head = ("- **Claim 3c, with the predicted (B, LR) ('precise' recipe) the compute-optimal model is smaller than with one fixed "
            "(B, LR) for all sizes ('conventional' recipe); paper: 39.9% smaller, 40.1% less inference cost at 1e22 FLOPs:")
    comparison = document.get("comparison", {})
    if comparison.get("status") != "computed":
        return f"{head} not tested.** {comparison.get('reason', 'no comparison in the laws file')}."
    reduction = comparison["model_size_reduction"]
    pair = _interval_values(reduction)
    value = reduction.get("value")
    resamples = comparison.get("paired_resamples", 0)
    numbers = (f"At C = {_fmt(comparison['target_flops'], 3)} FLOPs the model-size reduction 1 - N_precise / N_conventional is "
               f"{_pct_estimate(reduction)} and the inference-cost reduction {_pct_estimate(comparison['inference_flops_reduction'])}"
               + (f" (95% intervals from {resamples} paired bootstrap resamples)" if pair else ""))
    if pair is None:
        status, reading = "not judged", "there is no bootstrap interval to tell this from zero"
    elif pair[0] > 0:
        status, reading = "yes, in direction", "the interval excludes zero: the precise recipe's model is smaller"
    elif pair[1] < 0:
        status, reading = "no, the opposite", "the interval excludes zero: the precise recipe's model is larger"
    else:
        status, reading = "not reproduced", "the interval includes zero: no significant difference between the recipes"
    cell = comparison.get("conventional", {}).get("cell") or {}
    excess = conventional_excess(document)
    why = ""
    if excess is not None and cell:
        why = (f" The fixed cell (B = {cell.get('batch_clips')} clips, LR = {cell.get('learning_rate'):g}) is "
               f"{_pct(excess['median'], 2)} above the interpolated optimum (median over {excess['points']} size-budget points); "
               "the reduction can only be as large as the fixed cell is sub-optimal, so the paper's 39.9% is not a number to "
               "expect at another scale or with another fixed cell.")
    held = sorted({name for law in ("loss_optimal", "loss_conventional") for name in ((_fitted(document, law) or {}).get("bootstrap") or {}).get("held_at_bound", [])})
    conditional = f" The interval is conditional on {', '.join(held)} at its bound (as in the full-data fits)." if held and pair else ""
    return f"{head} {status}.** {numbers}: {reading}.{why}{conditional}"


def allowed_misses(points: int, level: float = 0.95) -> int:
    """Points outside their ``level`` prediction intervals that chance alone explains (99% binomial quantile)."""
    from scipy.stats import binom

    return int(binom.ppf(0.99, points, 1 - level)) if points else 0


def _verdict_extrapolation(document: dict, heldout: dict | None, sigma, noise_text: str) -> str:
    head = "- **Claim 4, the law predicts the loss of model sizes it was not fitted on (paper: 0.03% and 0.15% error):"
    summary = document.get("heldout", {}).get("summary", {})
    compute = [g for g in (heldout or {}).get("groups", []) if g.get("kind") == "compute_optimal" and g.get("status") == "evaluated"]
    if not summary.get("points") and not compute:
        return f"{head} not tested.** No held-out sizes were trained (heldout_sizes in the fit config) or evaluated (--heldout)."
    parts, errors = [], []
    points, covered, with_interval = 0, 0, 0
    if summary.get("points"):
        errors.append(summary["mean_absolute_relative_error"])
        points += summary["points"]
        coverage = summary.get("coverage")
        if coverage is not None:
            with_interval += summary["points"]
            covered += round(coverage * summary["points"])
        parts.append(f"{', '.join(document['heldout'].get('sizes', []))}: mean |error| {_pct(summary['mean_absolute_relative_error'], 2)} "
                     f"(max {_pct(summary['max_absolute_relative_error'], 2)}) over {summary['points']} budgets"
                     + (f", {round(coverage * summary['points'])} of {summary['points']} inside their 95% prediction intervals"
                        if coverage is not None else ""))
    for g in compute:
        errors.append(abs(g["relative_error"]))
        points += 1
        if g["predicted_loss"].get("prediction_interval") is not None:
            with_interval += 1
            covered += bool(g.get("covered"))
        parts.append(f"compute-optimal check {g['size']} at {_count(g.get('tokens'))} tokens: predicted "
                     f"{_fmt(g['predicted_loss']['value'], 4)}, measured {_fmt(g.get('measured_loss'), 4)} ({g['relative_error']:+.2%}"
                     + (", inside its 95% prediction interval)" if g.get("covered") else ", outside its 95% prediction interval)"
                        if g["predicted_loss"].get("prediction_interval") is not None else ")"))
    typical = float(np.mean(errors))
    ratio = f"; the typical error {_pct(typical, 2)} is {typical / sigma:.1f}x the {noise_text}" if sigma else ""
    if with_interval:
        misses = with_interval - covered
        allowed = allowed_misses(with_interval)
        status = "yes" if misses <= allowed else "not reproduced"
        reading = (f"{misses} of {with_interval} points fall outside their 95% prediction intervals (law uncertainty plus run-to-run "
                   f"noise), {'within' if misses <= allowed else 'more than'} the {allowed} that chance explains{ratio}")
    elif sigma:
        status = "yes" if typical <= HELDOUT_NOISE_SIGMAS * sigma else "not reproduced"
        reading = f"no prediction intervals{ratio} (within noise means at most {HELDOUT_NOISE_SIGMAS:g}x)"
    else:
        status, reading = "not judged", "no prediction intervals and no noise estimate to compare the errors with"
    return f"{head} {status}.** " + "; ".join(parts) + f". {reading[0].upper() + reading[1:]}."


# ---------------------------------------------------------------------------------------------- document
def _sources(document: dict, paths: dict) -> list[str]:
    origin = document.get("provenance") or {}
    commit = (origin.get("code_version") or {}).get("commit", "unknown")
    runs_hash = (origin.get("config") or {}).get("runs_sha256")
    lines = [f"- Fitted laws, optima, comparison, held-out predictions: `{paths.get('laws')}` (written by `python -m analysis.fit` "
             f"at commit {commit[:12]}{', from runs table ' + '`' + str(origin['config']['runs']) + '`' if (origin.get('config') or {}).get('runs') else ''}"
             f"{' with sha256 ' + runs_hash[:12] if runs_hash else ''})."]
    for key, label in (("runs", "Runs table (grid spreads for claim 2)"), ("heldout", "Held-out runs' evaluation (`python -m analysis.heldout`)"),
                       ("protocol_spread", "Validation-protocol spread (`python -m dit.evaluate spread`)"),
                       ("caption_conditioning", "Caption-conditioning check (`python -m dit.evaluate captions`)"),
                       ("benchmarks", "Stage timings (Snakemake benchmark TSV files)")):
        lines.append(f"- {label}: " + (f"`{paths[key]}`." if paths.get(key) else "not given."))
    lines.append(f"- The paper's numbers: `analysis/paper.py` ({paper.SOURCE}).")
    return lines


def _introduction(document: dict) -> list[str]:
    setup = document.get("setup", {})
    sizes = setup.get("fitting_sizes", [])
    heldout = setup.get("heldout_sizes", [])
    budgets = setup.get("budgets_tokens", [])
    boot = setup.get("bootstrap", {})
    scale = ""
    if sizes and budgets:
        scale = (f" Our fitting sizes are {', '.join(s['size'] for s in sizes)} ({_count(min(s['parameters'] for s in sizes))} to "
                 f"{_count(max(s['parameters'] for s in sizes))} parameters)"
                 + (f", held out {', '.join(s['size'] for s in heldout)}" if heldout else "")
                 + f", compared at {_count(min(budgets))} to {_count(max(budgets))} training tokens: orders of magnitude below the paper, "
                 "so coefficients cannot match and what can be compared is whether each claim holds at this scale.")
    level = boot.get("level", 0.95)
    intervals = (f"Intervals are {_pct(level, 0)} bootstrap percentile intervals ({boot.get('resamples')} resamples of the runs, "
                 "stratified by size)." if boot.get("resamples") else "No bootstrap was run, so there are no intervals.")
    return [
        "This file compares our runs with \"Towards Precise Scaling Laws for Video Diffusion Transformers\" (Yin et al., "
        "arXiv 2411.17470). The paper trains text-to-video diffusion transformers of N = 17M to 1.07B parameters on T = 2B "
        "to 140B video tokens, with a grid of batch sizes B and learning rates LR at every (N, T), and claims: (1) at the "
        "best (B, LR) the validation loss follows L(N, T) = a T^-alpha + b N^-beta + L_inf; (2) the loss is very "
        "sensitive to B and LR; (3) power laws B_opt(N, T) and LR_opt(N, T) predict the best B and LR, and choosing them "
        "(the 'precise' recipe) instead of one fixed (B, LR) for every size (the 'conventional' recipe) makes the "
        "compute-optimal model 39.9% smaller (40.1% less inference cost) at a budget of 1e22 FLOPs; (4) the law predicts "
        "the loss of sizes it was not fitted on." + scale,
        "",
        "Terms: N = non-embedding parameters; T = video tokens seen in training; B = tokens per batch (clips x tokens per "
        f"clip, {_fmt(setup.get('context_tokens'))} here); C = training FLOPs ({setup.get('flop_model_description', 'see laws.json')}); "
        "inside fitted laws N and T are in billions, as in the paper. The 'optimum' of a (size, budget) is the minimum of "
        "a quadratic fitted over its (log B, log LR) grid; an optimum 'on the grid's edge' may lie outside the grid. "
        "'Run-to-run noise' is the relative standard deviation of the loss between seeds of one configuration. " + intervals,
    ]


def render(document: dict, heldout: dict | None, spread: dict | None, captions: dict | None, runs: str | None,
           benchmarks: str | None, notes: list[str], sources: dict, manifest: str | None = None,
           performance: dict | None = None) -> str:
    record = provenance(sources)
    sens = sensitivity(runs, document, notes) if runs else None
    out = [
        "# Summary: video DiT scaling laws at this scale, beside the paper's",
        "",
        f"Generated by `python -m analysis.summary` (commit {record['code_version']['commit']}, {record['created_utc']}).",
        "",
        *_introduction(document),
        "",
        "## Where the numbers come from",
        "",
        *_sources(document, sources),
        "",
        "## Verdict per claim",
        "",
        *verdict(document, heldout, sens),
        "",
        "## Laws",
        "",
        "Source: `laws` and `compute_optimal` in the laws file.",
        "",
        *_table(["quantity", "ours [95% interval]", "paper", "note"], law_rows(document)),
        "",
        "## Precise vs conventional recipe",
        "",
    ]
    comparison = document.get("comparison", {})
    if comparison.get("status") == "computed":
        cell = comparison["conventional"].get("cell") or {}
        out += [
            f"Source: `comparison` in the laws file. Compute-optimal size at C = {_fmt(comparison['target_flops'], 3)} FLOPs "
            f"({comparison.get('flop_model', '')}), from the precise law (fitted to each size's optimal loss) and the "
            f"conventional law (fitted to the fixed cell B = {cell.get('batch_clips')} clips, LR = {_fmt(cell.get('learning_rate'))}). "
            f"Intervals pair the two laws' bootstrap resamples ({comparison.get('paired_resamples', 0)} kept by both)."
            + _extrapolation_note(document, comparison),
            "",
            *_table(["quantity", f"ours at {_fmt(comparison['target_flops'], 3)} FLOPs", "paper at 1e22 FLOPs"], comparison_rows(comparison)),
        ]
    else:
        out.append(f"Not computed: {comparison.get('reason', 'no comparison in the laws file')}")
    out += ["", "## Held-out checks", ""]
    inside = document.get("heldout", {}).get("summary", {})
    if inside.get("points"):
        out.append(
            f"Source: `heldout` in the laws file. Held-out sizes ({', '.join(document['heldout']['sizes'])}): {inside['points']} "
            f"(size, budget) optima, mean |error| {_pct(inside['mean_absolute_relative_error'], 2)}, max "
            f"{_pct(inside['max_absolute_relative_error'], 2)}"
            + (f", {round(inside['coverage'] * inside['points'])} of {inside['points']} inside their 95% prediction intervals"
               if inside.get("coverage") is not None else "")
            + " (paper: 0.03% at 1.07B and 10B tokens, 0.15% at 0.72B and 140B tokens).")
        out.append("")
    if heldout:
        out += [f"Source: `{sources.get('heldout')}`.", ""]
        rows = []
        for group in heldout.get("groups", []):
            if group.get("status") != "evaluated":
                rows.append([group["kind"], group["size"], "-", "-", "-", "-", "-", f"{group.get('status')}: missing {group.get('missing_runs')}"])
                continue
            measured = group.get("measured_optimum", {}).get("loss", group.get("measured_loss"))
            pi = group["predicted_loss"].get("prediction_interval")
            rows.append([
                group["kind"], group["size"], _count(group["tokens"]), f"{group['predicted_loss']['value']:.5f}", f"{measured:.5f}",
                f"{group['relative_error']:+.2%}", "-" if pi is None else ("yes" if group["covered"] else "no"),
                "-" if group.get("predicted_cell_is_best") is None else ("yes" if group["predicted_cell_is_best"] else
                                                                        f"no (excess loss {_pct(group.get('predicted_cell_excess_loss') or 0, 2)})"),
            ])
        out += _table(["group", "size", "tokens", "predicted loss", "measured", "error", "in 95% prediction interval", "predicted cell best"], rows)
    else:
        out.append("No held-out evaluation given (--heldout).")
    out += ["", "## Sensitivity to batch size and learning rate", ""]
    if sens:
        out += [f"Source: `{sources.get('runs')}` (completed grid runs of the fitting sizes). Run-to-run noise "
                f"{_pct(sens['noise'], 3) if sens['noise'] else '-'} ({sens['noise_text']}; about {sens['noise_dof']} degrees of "
                "freedom, so the noise itself is only roughly known). 'Noise alone (95%)': the spread that noise alone exceeds "
                "in only 5% of cases among that many runs (studentized range).", ""]
        out += sensitivity_lines(sens)
    else:
        out.append("Not computed: " + ("the runs table could not be read or has too few grid runs." if runs else "no runs table given (--runs)."))
    if manifest:
        out += ["", "## Data reuse", ""]
        reuse = data_reuse(runs, manifest, document, notes) if runs else None
        out += data_reuse_lines(reuse, manifest) if reuse else ["Not computed: the manifest or the runs table could not be read (see Notes)."]
    out += ["", "## Noise and validation protocol", ""]
    noise = document.get("setup", {}).get("noise", {})
    out.append(f"Run-to-run noise used in the prediction intervals: relative std {_pct(noise.get('relative_std'), 3)} "
               f"({noise.get('source', '-')}; laws file `setup.noise`).")
    if spread:
        out.append(f"Validation protocol: the same trained run evaluated with {len(spread.get('seeds', []))} noise seeds has a "
                   f"relative std of {_pct(spread.get('relative_std'), 3)} (mean loss {_fmt(spread.get('mean'), 5)}; "
                   f"`{sources.get('protocol_spread')}`). Run-to-run noise below this would be hidden by the protocol itself.")
        protocol, runs_noise = spread.get("relative_std"), noise.get("relative_std")
        if _finite(protocol) and _finite(runs_noise) and runs_noise > 0 and protocol >= 0.5 * runs_noise:
            out.append(f"The protocol's own spread is {protocol / runs_noise:.0%} of the run-to-run noise: much of that noise comes "
                       "from the validation protocol itself (its clips, timesteps and noise draws), so a larger validation set "
                       "would sharpen every comparison in this file.")
    if captions:
        gain = captions.get("differences", {}).get("null_minus_captions", {})
        out.append(f"Caption conditioning: loss with the empty caption minus loss with the clips' captions = {_fmt(gain.get('mean'), 3)} "
                   f"({_pct(gain.get('relative'), 3)} of the loss; `{sources.get('caption_conditioning')}`); positive means "
                   "the model uses the captions.")
    if benchmarks:
        rows = benchmark_rows(benchmarks, notes)
        if rows:
            out += ["", "## Stage timings (Snakemake benchmark files)", "", f"Source: `{benchmarks}`.", "",
                    *_table(["stage", "jobs", "seconds per job (median)", "seconds (total)", "max RSS (MB)"], rows)]
    if performance:
        out += ["", "Grid training jobs, all together (`performance.json`): model FLOPs are the term-by-term count of every "
                "matrix product of their training steps and validation passes; job seconds are Snakemake's wall time of each "
                "job, start-up included; the matmul rate is this machine's float32 `torch.mm` rate at the threads of one job, "
                "measured in the same run.", "",
                *_table(["model FLOPs", "job seconds", "model FLOP/s", "matmul FLOP/s", "fraction of matmul", "jobs",
                         "runs per job (median)"],
                        [[_fmt(performance["grid_model_flops"]), _fmt(performance["grid_job_seconds"]),
                          _fmt(performance["grid_model_flops"] / performance["grid_job_seconds"]),
                          _fmt(performance["matmul_flops_per_s"]), _fmt(performance["grid_fraction_of_matmul"], 3),
                          performance["jobs"], _fmt(performance["members_per_job"])]])]
    if notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--laws", required=True, help="laws.json from analysis.fit")
    parser.add_argument("--out", required=True, help="Markdown file to write")
    parser.add_argument("--runs", help="runs table (for the sensitivity to B and LR)")
    parser.add_argument("--heldout", help="heldout.json from analysis.heldout")
    parser.add_argument("--protocol-spread", help="JSON from python -m dit.evaluate spread")
    parser.add_argument("--caption-conditioning", help="JSON from python -m dit.evaluate captions")
    parser.add_argument("--benchmarks", help="folder of Snakemake benchmark TSV files")
    parser.add_argument("--manifest", help="manifest.json of the prepared data (for how often runs repeat it)")
    parser.add_argument("--performance", help="performance.json from python -m dit.performance grid")
    args = parser.parse_args(argv)
    notes: list[str] = []
    try:
        document = read_laws(args.laws)
    except LawsFileError as error:
        print(f"analysis.summary: error: {error}", file=sys.stderr)
        return 2
    heldout = _read_json(args.heldout, notes, "held-out evaluation")
    spread = _read_json(args.protocol_spread, notes, "protocol spread")
    captions = _read_json(args.caption_conditioning, notes, "caption conditioning")
    performance = _read_json(args.performance, notes, "grid performance")
    text = render(document, heldout, spread, captions, args.runs, args.benchmarks, notes, vars(args), args.manifest,
                  performance)
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
