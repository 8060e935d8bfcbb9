"""Optimal (B, LR) of one model size at each token budget, from its grid of runs.

Method ``quadratic`` (default): a weighted least-squares quadratic
``q(u, v) = c0 + c1 u + c2 v + c3 u^2 + c4 v^2 + c5 u v`` in ``u ~ log LR`` and ``v ~ log B`` fitted to
the log loss of the size's grid cells within ``band`` (relative) of the best cell's loss, minimised
over the box spanned by the cells present (so the optimum never leaves the grid); the interpolated
loss is ``exp(q)`` at that point. Cells far above the best one (a learning rate at which a model
stopped learning, say) say nothing about the shape of the valley and would drag a global quadratic
below every measured loss, so they are left out; and an interpolated loss more than ``max_gain``
below the best cell's is not trusted: that (size, budget) falls back as below. The optimum is flagged *on the edge* of an
axis when it sits on the box's boundary there (the true optimum may lie outside the grid).
When the cells do not determine a full quadratic (fewer than three distinct values on an axis, or a
rank-deficient design, e.g. the plus-shaped neighbourhoods of held-out proposals) the cross term is
dropped, then each axis with three levels gets a 1-D parabola through the best cell's row/column,
and otherwise the best cell is used; ``method`` records which.

Method ``best_cell``: the lowest-loss cell and its loss.

Weights are run multiplicities (bootstrap resamples draw runs with replacement); everything is
vectorised over resamples and budgets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD_QUADRATIC = 0
METHOD_SEPARABLE = 1
METHOD_BEST_CELL = 2
METHOD_NAMES = {METHOD_QUADRATIC: "quadratic", METHOD_SEPARABLE: "separable", METHOD_BEST_CELL: "best_cell", -1: "no data"}


@dataclass
class SizeGrid:
    """The completed grid runs of one model size and their losses at the common budgets."""

    size: str
    parameters: float  # N, raw count
    run_ids: list[str]
    learning_rates: np.ndarray  # (k,)
    batch_tokens: np.ndarray  # (k,)
    batch_clips: np.ndarray  # (k,)
    losses: np.ndarray  # (k, budgets)
    flops_per_token: float  # measured C_token of this size (FLOPs per token)
    width: int = 0
    depth: int = 0


@dataclass
class Optima:
    """Optima for ``R`` weightings (resamples) x ``budgets``; arrays of shape ``(R, budgets)``."""

    learning_rate: np.ndarray
    batch_tokens: np.ndarray
    loss: np.ndarray
    edge_learning_rate: np.ndarray  # bool
    edge_batch: np.ndarray  # bool
    method: np.ndarray  # int codes (METHOD_NAMES); -1 when no cell has data


def _levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    levels, index = np.unique(np.round(values, 12), return_inverse=True)
    return levels, index


DEFAULT_BAND = 0.5
DEFAULT_MAX_GAIN = 0.1


def find_optima(
    grid: SizeGrid,
    weights: np.ndarray,
    method: str = "quadratic",
    band: float = DEFAULT_BAND,
    max_gain: float = DEFAULT_MAX_GAIN,
) -> Optima:
    """Optimum per (weighting, budget). ``weights``: ``(R, k)`` run multiplicities.

    ``band``: cells whose loss exceeds the best cell's by more than this fraction are left out of
    the quadratic; ``max_gain``: an interpolated loss more than this fraction below the best cell's
    is rejected (the module docstring says what happens then).
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    x = np.log(grid.learning_rates)
    y = np.log(grid.batch_tokens)
    x_levels, x_index = _levels(x)
    y_levels, y_index = _levels(y)
    x_center, y_center = x_levels.mean(), y_levels.mean()
    x_scale = max((x_levels[-1] - x_levels[0]) / 2, 1e-12)
    y_scale = max((y_levels[-1] - y_levels[0]) / 2, 1e-12)
    u = (x - x_center) / x_scale
    v = (y - y_center) / y_scale
    u_levels = (x_levels - x_center) / x_scale
    v_levels = (y_levels - y_center) / y_scale

    finite = np.isfinite(grid.losses)  # (k, T)
    values = np.where(finite, grid.losses, 0.0)
    w = weights[:, None, :] * finite.T[None, :, :]  # (R, T, k)
    present = w > 0
    R, T = w.shape[:2]
    u_present = np.einsum("rtk,kl->rtl", present.astype(float), np.eye(len(u_levels))[x_index]) > 0
    v_present = np.einsum("rtk,kl->rtl", present.astype(float), np.eye(len(v_levels))[y_index]) > 0
    u_min = np.where(u_present, u_levels, np.inf).min(-1)
    u_max = np.where(u_present, u_levels, -np.inf).max(-1)
    v_min = np.where(v_present, v_levels, np.inf).min(-1)
    v_max = np.where(v_present, v_levels, -np.inf).max(-1)

    best_index = np.argmin(np.where(present, values.T[None], np.inf), axis=-1)  # (R, T)
    best_loss = np.take_along_axis(np.where(present, values.T[None], np.inf), best_index[..., None], -1)[..., 0]
    result_u = u[best_index]
    result_v = v[best_index]
    result_loss = best_loss.copy()
    codes = np.full((R, T), METHOD_BEST_CELL)
    codes[~present.any(-1)] = -1

    if method == "quadratic":
        if not band > 0 or not 0 < max_gain < 1:
            raise ValueError(f"band must be positive and max_gain in (0, 1), got band={band}, max_gain={max_gain}")
        near = values.T[None] <= best_loss[..., None] * (1 + band)  # (R, T, k)
        w_fit = w * near
        fitted = w_fit > 0
        log_values = np.log(np.where(finite & (values > 0), values, 1.0))
        fit_u = np.einsum("rtk,kl->rtl", fitted.astype(float), np.eye(len(u_levels))[x_index]) > 0
        fit_v = np.einsum("rtk,kl->rtl", fitted.astype(float), np.eye(len(v_levels))[y_index]) > 0
        features = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=1)  # (k, 6)
        full = (fit_u.sum(-1) >= 3) & (fit_v.sum(-1) >= 3) & (fitted.sum(-1) >= 6)
        matrix = np.einsum("rtk,ki,kj->rtij", w_fit, features, features)
        vector = np.einsum("rtk,ki,kt->rti", w_fit, features, log_values)
        trace = np.einsum("rtii->rt", matrix)[..., None, None]
        eigen = np.linalg.eigvalsh(matrix / np.maximum(trace, 1e-300))
        full &= eigen[..., 0] > 1e-10
        if full.any():
            coefficients = np.linalg.solve(matrix[full], vector[full][..., None])[..., 0]
            qu, qv, ql = _minimise_on_box(coefficients, u_min[full], u_max[full], v_min[full], v_max[full])
            ql = np.exp(ql)
            trusted = ql >= best_loss[full] * (1 - max_gain)
            rows = tuple(index[trusted] for index in np.nonzero(full))
            result_u[rows], result_v[rows], result_loss[rows] = qu[trusted], qv[trusted], ql[trusted]
            codes[rows] = METHOD_QUADRATIC
            full[tuple(index[~trusted] for index in np.nonzero(full))] = False
        for r, t in zip(*np.nonzero(~full & present.any(-1))):
            fallback = _separable_optimum(u, v, log_values[:, t], w_fit[r, t], x_index, y_index)
            if fallback is not None and np.exp(fallback[2]) >= best_loss[r, t] * (1 - max_gain):
                result_u[r, t], result_v[r, t], result_loss[r, t] = fallback[0], fallback[1], np.exp(fallback[2])
                codes[r, t] = METHOD_SEPARABLE
    elif method != "best_cell":
        raise ValueError(f"unknown optimum method {method!r}; use 'quadratic' or 'best_cell'")

    tolerance = 1e-9
    edge_u = (result_u <= u_min + tolerance) | (result_u >= u_max - tolerance)
    edge_v = (result_v <= v_min + tolerance) | (result_v >= v_max - tolerance)
    missing = codes < 0
    learning_rate = np.exp(x_center + x_scale * result_u)
    batch = np.exp(y_center + y_scale * result_v)
    for array in (learning_rate, batch, result_loss):
        array[missing] = np.nan
    return Optima(learning_rate, batch, result_loss, edge_u & ~missing, edge_v & ~missing, codes)


def _quadratic(c: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return c[..., 0] + c[..., 1] * u + c[..., 2] * v + c[..., 3] * u * u + c[..., 4] * v * v + c[..., 5] * u * v


def _minimise_on_box(c, u_min, u_max, v_min, v_max):
    """Minimum of the quadratic ``c`` (batch, 6) over the box: the stationary point if it is an interior
    minimum, otherwise the best point on the four edges."""
    candidates_u = []
    candidates_v = []
    det = 4 * c[:, 3] * c[:, 4] - c[:, 5] ** 2
    convex = (c[:, 3] > 0) & (det > 0)
    safe = np.where(convex, det, 1.0)
    su = -(2 * c[:, 4] * c[:, 1] - c[:, 5] * c[:, 2]) / safe
    sv = -(2 * c[:, 3] * c[:, 2] - c[:, 5] * c[:, 1]) / safe
    inside = convex & (su >= u_min) & (su <= u_max) & (sv >= v_min) & (sv <= v_max)
    candidates_u.append(np.where(inside, su, u_min))
    candidates_v.append(np.where(inside, sv, v_min))
    for fixed_u in (u_min, u_max):
        slope = c[:, 2] + c[:, 5] * fixed_u
        vertex = np.where(c[:, 4] > 0, -slope / np.where(c[:, 4] > 0, 2 * c[:, 4], 1.0), v_min)
        for candidate in (v_min, v_max, np.clip(vertex, v_min, v_max)):
            candidates_u.append(fixed_u)
            candidates_v.append(candidate)
    for fixed_v in (v_min, v_max):
        slope = c[:, 1] + c[:, 5] * fixed_v
        vertex = np.where(c[:, 3] > 0, -slope / np.where(c[:, 3] > 0, 2 * c[:, 3], 1.0), u_min)
        for candidate in (u_min, u_max, np.clip(vertex, u_min, u_max)):
            candidates_u.append(candidate)
            candidates_v.append(fixed_v)
    cu = np.stack(candidates_u, -1)
    cv = np.stack(candidates_v, -1)
    q = _quadratic(c[:, None, :], cu, cv)
    pick = np.argmin(q, axis=-1)
    rows = np.arange(len(pick))
    return cu[rows, pick], cv[rows, pick], q[rows, pick]


def _parabola_vertex(position: np.ndarray, loss: np.ndarray, weight: np.ndarray):
    """Weighted parabola through >= 3 distinct positions: ``(vertex clipped to range, value there)`` or None."""
    if len(np.unique(position)) < 3:
        return None
    design = np.stack([np.ones_like(position), position, position**2], 1)
    sw = np.sqrt(weight)
    coefficients, *_ = np.linalg.lstsq(design * sw[:, None], loss * sw, rcond=None)
    low, high = position.min(), position.max()
    if coefficients[2] > 0:
        vertex = float(np.clip(-coefficients[1] / (2 * coefficients[2]), low, high))
    else:
        vertex = float(low if coefficients[1] * (high - low) > 0 else high)
    return vertex, float(coefficients @ [1.0, vertex, vertex**2])


def _separable_optimum(u, v, loss, weight, x_index, y_index):
    """Fallback when a full quadratic is not determined (see module docstring); None: use the best cell."""
    keep = weight > 0
    if not keep.any():
        return None
    indices = np.flatnonzero(keep)
    best = indices[np.argmin(loss[indices])]
    if len(np.unique(x_index[keep])) >= 3 and len(np.unique(y_index[keep])) >= 3:
        features = np.stack([np.ones_like(u), u, v, u * u, v * v], 1)[keep]
        sw = np.sqrt(weight[keep])
        design = features * sw[:, None]
        if np.linalg.matrix_rank(design) == 5:
            c, *_ = np.linalg.lstsq(design, loss[keep] * sw, rcond=None)
            if c[3] > 0 and c[4] > 0:
                cu = float(np.clip(-c[1] / (2 * c[3]), u[keep].min(), u[keep].max()))
                cv = float(np.clip(-c[2] / (2 * c[4]), v[keep].min(), v[keep].max()))
                return cu, cv, float(c @ [1.0, cu, cv, cu * cu, cv * cv])
    best_u, best_v, best_loss = float(u[best]), float(v[best]), float(loss[best])
    changed = False
    row = keep & (y_index == y_index[best])
    along_u = _parabola_vertex(u[row], loss[row], weight[row]) if row.sum() >= 3 else None
    column = keep & (x_index == x_index[best])
    along_v = _parabola_vertex(v[column], loss[column], weight[column]) if column.sum() >= 3 else None
    total = best_loss
    if along_u is not None:
        best_u, total, changed = along_u[0], total + (along_u[1] - best_loss), True
    if along_v is not None:
        best_v, total, changed = along_v[0], total + (along_v[1] - best_loss), True
    if not changed:
        return None
    return best_u, best_v, total


def near_optimal_band(grid: SizeGrid, budget_index: int, tolerance: float) -> list[dict]:
    """Cells whose loss at the budget is within ``tolerance`` (relative) of the best cell's."""
    losses = grid.losses[:, budget_index]
    finite = np.isfinite(losses)
    if not finite.any():
        return []
    best = np.min(losses[finite])
    band = []
    for i in np.flatnonzero(finite & (losses <= best * (1 + tolerance))):
        band.append(
            {
                "run_id": grid.run_ids[i],
                "batch_clips": int(grid.batch_clips[i]),
                "batch_tokens": float(grid.batch_tokens[i]),
                "learning_rate": float(grid.learning_rates[i]),
                "loss": float(losses[i]),
            }
        )
    return sorted(band, key=lambda cell: cell["loss"])
