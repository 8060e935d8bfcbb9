"""How much the loss depends on batch size and learning rate, against the run-to-run noise (claim 2).

For each fitting size and token budget the grid's *spread* is the worst cell's loss over the best
cell's, minus 1: over every cell (``whole``), over the batch sizes at the best cell's learning rate
(``batch``), and over the learning rates at the best cell's batch size (``learning_rate``). One run
per cell carries relative noise ``sigma``, so by Tukey's studentized range the spread of ``k``
cells lies within ``q sigma`` of the true spread with the configured confidence, ``q`` the
studentized range quantile of ``k`` means with the noise estimate's degrees of freedom. The
interval ``[spread - q sigma, spread + q sigma]`` lies above 0 exactly when noise alone is unlikely
to have made the spread. Over all (size, budget) pairs, the claim's interval runs from the median
lower end to the median upper end: it lies above 0 when more than half the pairs do.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import studentized_range

from analysis.runs import noise_degrees_of_freedom, same_learning_rate

KINDS = ("whole", "batch", "learning_rate")


@functools.lru_cache(maxsize=None)
def noise_range_factor(cells: int, dof: float | None, level: float) -> float:
    """``q``: the ``level`` quantile of the studentized range of ``cells`` runs, the noise known on ``dof`` degrees
    of freedom (None: exactly). Cached: each quantile integrates numerically (about 0.1 s)."""
    if cells < 2:
        return float("nan")
    return float(studentized_range.ppf(level, cells, dof if dof and dof > 0 else np.inf))


def spread(values: np.ndarray) -> float:
    """``max / min - 1`` over the finite values; NaN for fewer than two."""
    values = values[np.isfinite(values)]
    return float(np.max(values) / np.min(values) - 1) if values.size >= 2 else float("nan")


def grid_column(grid: dict, budget_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One size's grid (a ``laws.json`` ``grids`` record) at one budget: each cell's loss (NaN where it has none), batch
    size in clips and learning rate."""
    losses = np.array([np.nan if row[budget_index] is None else row[budget_index] for row in grid["losses"]], dtype=float)
    batch = np.array([c["batch_clips"] for c in grid["cells"]], dtype=float)
    rate = np.array([c["learning_rate"] for c in grid["cells"]], dtype=float)
    return losses, batch, rate


def grid_spreads(grid: dict, budget_index: int) -> dict | None:
    """The three spreads of one size's grid (a ``laws.json`` ``grids`` record) at one budget, with their cell counts."""
    losses, batch, rate = grid_column(grid, budget_index)
    present = np.isfinite(losses)
    if present.sum() < 2:
        return None
    best = int(np.nanargmin(losses))
    along = {"whole": present, "batch": present & same_learning_rate(rate, rate[best]),
             "learning_rate": present & (batch == batch[best])}
    return {kind: {"spread": spread(losses[mask]), "cells": int(mask.sum())} for kind, mask in along.items()}


def sensitivity(document: dict, level: float) -> dict | None:
    """Spreads of every fitting size's grid at every budget, with Tukey intervals and the claim-level interval."""
    noise = (document.get("setup") or {}).get("noise") or {}
    sigma = noise.get("relative_std") or None
    dof = noise_degrees_of_freedom(noise)
    budgets = document["setup"]["budgets_tokens"]
    pairs = []
    for grid in (g for g in document.get("grids", []) if g["role"] == "fitting"):
        for t, tokens in enumerate(budgets):
            spreads = grid_spreads(grid, t)
            if spreads is None:
                continue
            for kind, record in spreads.items():
                half = sigma * noise_range_factor(record["cells"], dof, level) if sigma else float("nan")
                record["interval"] = [record["spread"] - half, record["spread"] + half] if np.isfinite(half) else None
            pairs.append({"size": grid["size"], "tokens": float(tokens), **spreads})
    if not pairs:
        return None
    return {"pairs": pairs, "noise_relative_std": sigma, "noise_degrees_of_freedom": dof, "level": level,
            "summary": {kind: _summary(pairs, kind) for kind in KINDS}, "by_budget": _by_budget(pairs)}


def _summary(pairs: list[dict], kind: str) -> dict:
    values = np.array([p[kind]["spread"] for p in pairs], dtype=float)
    finite = np.isfinite(values)
    intervals = [p[kind]["interval"] for p in pairs if p[kind]["interval"] is not None and np.isfinite(p[kind]["spread"])]
    record = {"median": float(np.median(values[finite])) if finite.any() else None,
              "max": float(np.max(values[finite])) if finite.any() else None,
              "pairs": int(finite.sum()), "above_noise": sum(1 for low, _ in intervals if low > 0), "compared": len(intervals)}
    if intervals:
        record["interval"] = [float(np.median([i[0] for i in intervals])), float(np.median([i[1] for i in intervals]))]
        record["noise_half_width_median"] = float(np.median([(i[1] - i[0]) / 2 for i in intervals]))
    else:
        record["interval"] = None
    return record


def _by_budget(pairs: list[dict]) -> list[dict]:
    """Per budget: the range of the whole-grid spread over the sizes and how many sizes lie above the noise."""
    out = []
    for tokens in sorted({p["tokens"] for p in pairs}):
        rows = [p["whole"] for p in pairs if p["tokens"] == tokens and np.isfinite(p["whole"]["spread"])]
        if rows:
            out.append({"tokens": tokens, "low": min(r["spread"] for r in rows), "high": max(r["spread"] for r in rows),
                        "sizes": len(rows), "above_noise": sum(1 for r in rows if r["interval"] and r["interval"][0] > 0)})
    return out


def heatmap_spreads(heatmaps: dict) -> list[dict]:
    """The same spreads on published heatmaps (budget -> rows of batch sizes x columns of learning rates)."""
    out = []
    for budget, values in sorted(heatmaps.items()):
        matrix = np.asarray(values, dtype=float)
        i, j = np.unravel_index(np.argmin(matrix), matrix.shape)
        out.append({"t_billions": float(budget), "whole": spread(matrix.ravel()), "batch": spread(matrix[:, j]),
                    "learning_rate": spread(matrix[i, :])})
    return out
