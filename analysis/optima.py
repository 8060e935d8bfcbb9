"""Optimal (B, LR) of one model size at each token budget, from its grid of runs.

Method ``quadratic`` (default) fits the *valley*: a least-squares quadratic
``q(u, v) = c0 + c1 u + c2 v + c3 u^2 + c4 v^2 + c5 u v`` in ``u ~ log LR`` and ``v ~ log B`` to the
log loss of the cells near the best cell, minimised over the box spanned by the cells present (so
the optimum never leaves the grid); the interpolated loss is ``exp(q)`` there. The valley is the
3 x 3 window of grid levels around the best cell (moved inwards at the grid's edge) together with
every cell within ``band`` (relative) of the best cell's loss. Cells far up the walls of the valley
(a learning rate at which a model stopped learning, say) say nothing about where its floor is and
would drag the quadratic. The default band, 0 (the window alone), is the one that located the
optimum best on synthetic grids with 1-2% noise and a valley that is not quadratic
(``tests/test_analysis_optimum_band.py`` shows the comparison with wider bands and the whole grid). An interpolated loss more than
``max_gain`` below the best cell's is not trusted. When the valley does not determine a full
quadratic (fewer than three levels on an axis, or a rank-deficient design, e.g. the plus-shaped
neighbourhoods of held-out proposals) the cross term is dropped, then each axis with three levels
gets a 1-D parabola through the best cell's row/column, and otherwise the best cell is used;
``method`` records which.

Method ``best_cell``: the lowest-loss cell and its loss.

**Interior** along an axis (``Optima.interior_learning_rate`` / ``interior_batch``): the best
measured cell has a measured cell on each side along that axis (same value of the other axis) and
the interpolated optimum lies strictly inside the grid along it. Otherwise the optimum is *on the
edge* there and the true optimum may lie outside the grid. A cell that is *unstable* at a budget
(``SizeGrid.unstable``: a run of it diverged before reaching that budget) is measured there: its loss,
counting the divergence, is above every stable cell's, so it bounds the optimum on its side. It has
no loss to fit, so it never enters the quadratic. An optimum that is interior only because an
unstable cell bounds it is flagged (``Optima.unstable_bound_learning_rate`` / ``unstable_bound_batch``).

Losses may be given per resample (``(R, cells, budgets)``); everything is vectorised over resamples
and budgets. A missing loss is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD_QUADRATIC = 0
METHOD_SEPARABLE = 1
METHOD_BEST_CELL = 2
METHOD_NAMES = {METHOD_QUADRATIC: "quadratic", METHOD_SEPARABLE: "separable", METHOD_BEST_CELL: "best_cell", -1: "no data"}

#: Relative loss band of the valley (beside the 3 x 3 window around the best cell); see the module docstring.
DEFAULT_BAND = 0.0
#: An interpolated loss more than this fraction below the best cell's is not trusted.
DEFAULT_MAX_GAIN = 0.1
#: Distance (in normalised log units) within which an optimum counts as on the grid's boundary.
BOUNDARY_TOLERANCE = 1e-9


@dataclass
class SizeGrid:
    """The completed grid cells of one model size and their losses at the common budgets (a cell: one run, or the mean of its replicates)."""

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
    members: list[tuple[str, ...]] | None = None  # each row's replicate runs (None: each row is the run ``run_ids[i]``)
    unstable: np.ndarray | None = None  # (k, budgets) bool: a run of the cell diverged before the budget (module docstring)

    @property
    def replicates(self) -> list[tuple[str, ...]]:
        """The runs whose mean loss each row is: its replicate seeds, or the row's one run."""
        return self.members if self.members is not None else [(run_id,) for run_id in self.run_ids]

    @property
    def fewest_replicates(self) -> int:
        """The fewest runs behind a row's loss (its noise is at most one run's / sqrt of this)."""
        return min(len(runs) for runs in self.replicates)


@dataclass
class Optima:
    """Optima for ``R`` resamples x ``budgets``; arrays of shape ``(R, budgets)``."""

    learning_rate: np.ndarray
    batch_tokens: np.ndarray
    loss: np.ndarray
    interior_learning_rate: np.ndarray  # bool (module docstring)
    interior_batch: np.ndarray  # bool
    method: np.ndarray  # int codes (METHOD_NAMES); -1 when no cell has data
    unstable_bound_learning_rate: np.ndarray  # bool: interior only because an unstable cell bounds it (module docstring)
    unstable_bound_batch: np.ndarray  # bool

    @property
    def edge_learning_rate(self) -> np.ndarray:
        return ~self.interior_learning_rate & (self.method >= 0)

    @property
    def edge_batch(self) -> np.ndarray:
        return ~self.interior_batch & (self.method >= 0)


@dataclass
class _Axes:
    """The grid's two axes in normalised log units (u: learning rate, v: batch size), per cell and per level."""

    u: np.ndarray
    v: np.ndarray
    u_levels: np.ndarray
    v_levels: np.ndarray
    u_index: np.ndarray
    v_index: np.ndarray
    u_center: float
    u_scale: float
    v_center: float
    v_scale: float

    @classmethod
    def of(cls, grid: SizeGrid) -> "_Axes":
        x_levels, u_index = np.unique(np.round(np.log(grid.learning_rates), 12), return_inverse=True)
        y_levels, v_index = np.unique(np.round(np.log(grid.batch_tokens), 12), return_inverse=True)
        u_center, v_center = x_levels.mean(), y_levels.mean()
        u_scale = max((x_levels[-1] - x_levels[0]) / 2, 1e-12)
        v_scale = max((y_levels[-1] - y_levels[0]) / 2, 1e-12)
        return cls(
            (np.log(grid.learning_rates) - u_center) / u_scale, (np.log(grid.batch_tokens) - v_center) / v_scale,
            (x_levels - u_center) / u_scale, (y_levels - v_center) / v_scale, u_index, v_index,
            u_center, u_scale, v_center, v_scale,
        )


def find_optima(
    grid: SizeGrid,
    losses: np.ndarray | None = None,
    method: str = "quadratic",
    band: float = DEFAULT_BAND,
    max_gain: float = DEFAULT_MAX_GAIN,
) -> Optima:
    """Optimum per (resample, budget) of ``losses`` ``(R, cells, budgets)`` (default: the grid's own, R = 1).

    ``band`` (>= 0): cells within this fraction of the best cell's loss join the 3 x 3 window in the
    quadratic; ``max_gain``: an interpolated loss more than this fraction below the best cell's is
    rejected (the module docstring says what happens then).
    """
    values = np.moveaxis(grid.losses[None] if losses is None else np.asarray(losses, dtype=float), 1, 2)  # (R, T, k)
    axes = _Axes.of(grid)
    present = np.isfinite(values) & (values > 0)
    filled = np.where(present, values, np.inf)
    best_index = np.argmin(filled, axis=-1)
    best_loss = np.take_along_axis(filled, best_index[..., None], -1)[..., 0]
    result_u, result_v, result_loss = axes.u[best_index], axes.v[best_index], best_loss.copy()
    codes = np.where(present.any(-1), METHOD_BEST_CELL, -1)
    if method == "quadratic":
        if not band >= 0 or not 0 < max_gain < 1:
            raise ValueError(f"band must be >= 0 and max_gain in (0, 1), got band={band}, max_gain={max_gain}")
        valley = present & (_window(axes, best_index) | (values <= best_loss[..., None] * (1 + band)))
        log_values = np.log(np.where(present, values, 1.0))
        _interpolate(axes, valley, log_values, best_loss, max_gain, (result_u, result_v, result_loss, codes))
    elif method != "best_cell":
        raise ValueError(f"unknown optimum method {method!r}; use 'quadratic' or 'best_cell'")
    unstable = np.zeros(values.shape[1:], dtype=bool) if grid.unstable is None else np.asarray(grid.unstable, dtype=bool).T
    if unstable.shape != values.shape[1:]:
        raise ValueError(f"unstable flags of shape {unstable.T.shape} for losses of shape {values.shape[2:0:-1]} (cells, budgets)")
    interior_u, interior_v = _interior(axes, present | unstable, best_index, result_u, result_v)
    stable_u, stable_v = _interior(axes, present, best_index, result_u, result_v)
    missing = codes < 0
    learning_rate = np.exp(axes.u_center + axes.u_scale * result_u)
    batch = np.exp(axes.v_center + axes.v_scale * result_v)
    for array in (learning_rate, batch, result_loss):
        array[missing] = np.nan
    return Optima(learning_rate, batch, result_loss, interior_u & ~missing, interior_v & ~missing, codes,
                  interior_u & ~stable_u & ~missing, interior_v & ~stable_v & ~missing)


def _window(axes: _Axes, best_index: np.ndarray) -> np.ndarray:
    """``(R, T, k)``: cells in the 3 x 3 window of grid levels around the best cell, moved inwards at the edge."""
    centers = []
    for index, levels in ((axes.u_index, axes.u_levels), (axes.v_index, axes.v_levels)):
        center = np.clip(index[best_index], 1, max(len(levels) - 2, 0)) if len(levels) > 2 else np.zeros_like(best_index)
        centers.append(np.abs(index[None, None, :] - center[..., None]) <= 1)
    return centers[0] & centers[1]


def _interior(axes: _Axes, measured, best_index, result_u, result_v) -> tuple[np.ndarray, np.ndarray]:
    """Interior flags per axis (module docstring): ``measured`` cells on both sides of the best one, optimum strictly inside
    the span of the ``measured`` cells."""
    flags = []
    for along, other, result in ((axes.u, axes.v_index, result_u), (axes.v, axes.u_index, result_v)):
        same_line = measured & (other[None, None, :] == other[best_index][..., None])
        best = along[best_index][..., None]
        below = np.any(same_line & (along[None, None, :] < best - BOUNDARY_TOLERANCE), -1)
        above = np.any(same_line & (along[None, None, :] > best + BOUNDARY_TOLERANCE), -1)
        low = np.where(measured, along, np.inf).min(-1)
        high = np.where(measured, along, -np.inf).max(-1)
        inside = (result > low + BOUNDARY_TOLERANCE) & (result < high - BOUNDARY_TOLERANCE)
        flags.append(below & above & inside)
    return flags[0], flags[1]


def _interpolate(axes: _Axes, valley, log_values, best_loss, max_gain, results) -> None:
    """Quadratic (or separable) optimum of the valley cells, written into ``results`` where trusted."""
    result_u, result_v, result_loss, codes = results
    features = np.stack([np.ones_like(axes.u), axes.u, axes.v, axes.u**2, axes.v**2, axes.u * axes.v], axis=1)
    weight = valley.astype(float)
    levels_u = np.einsum("rtk,kl->rtl", weight, np.eye(len(axes.u_levels))[axes.u_index]) > 0
    levels_v = np.einsum("rtk,kl->rtl", weight, np.eye(len(axes.v_levels))[axes.v_index]) > 0
    full = (levels_u.sum(-1) >= 3) & (levels_v.sum(-1) >= 3) & (valley.sum(-1) >= 6)
    matrix = np.einsum("rtk,ki,kj->rtij", weight, features, features)
    vector = np.einsum("rtk,ki,rtk->rti", weight, features, log_values)
    trace = np.einsum("rtii->rt", matrix)[..., None, None]
    full &= np.linalg.eigvalsh(matrix / np.maximum(trace, 1e-300))[..., 0] > 1e-10
    if full.any():
        coefficients = np.linalg.solve(matrix[full], vector[full][..., None])[..., 0]
        box = (np.where(valley, axes.u, np.inf).min(-1), np.where(valley, axes.u, -np.inf).max(-1),
               np.where(valley, axes.v, np.inf).min(-1), np.where(valley, axes.v, -np.inf).max(-1))
        qu, qv, ql = _minimise_on_box(coefficients, *(side[full] for side in box))
        trusted = np.exp(ql) >= best_loss[full] * (1 - max_gain)
        rows = tuple(index[trusted] for index in np.nonzero(full))
        result_u[rows], result_v[rows], result_loss[rows] = qu[trusted], qv[trusted], np.exp(ql[trusted])
        codes[rows] = METHOD_QUADRATIC
        full[tuple(index[~trusted] for index in np.nonzero(full))] = False
    for r, t in zip(*np.nonzero(~full & valley.any(-1))):
        fallback = _separable_optimum(axes, log_values[r, t], weight[r, t])
        if fallback is not None and np.exp(fallback[2]) >= best_loss[r, t] * (1 - max_gain):
            result_u[r, t], result_v[r, t], result_loss[r, t] = fallback[0], fallback[1], np.exp(fallback[2])
            codes[r, t] = METHOD_SEPARABLE


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


def _parabola_vertex(position: np.ndarray, loss: np.ndarray):
    """Least-squares parabola through >= 3 distinct positions: ``(vertex clipped to range, value there)`` or None."""
    if len(np.unique(position)) < 3:
        return None
    design = np.stack([np.ones_like(position), position, position**2], 1)
    coefficients, *_ = np.linalg.lstsq(design, loss, rcond=None)
    low, high = position.min(), position.max()
    if coefficients[2] > 0:
        vertex = float(np.clip(-coefficients[1] / (2 * coefficients[2]), low, high))
    else:
        vertex = float(low if coefficients[1] * (high - low) > 0 else high)
    return vertex, float(coefficients @ [1.0, vertex, vertex**2])


def _separable_optimum(axes: _Axes, loss, weight):
    """Fallback when a full quadratic is not determined (see module docstring); None: use the best cell."""
    keep = weight > 0
    if not keep.any():
        return None
    u, v = axes.u, axes.v
    indices = np.flatnonzero(keep)
    best = indices[np.argmin(loss[indices])]
    if len(np.unique(axes.u_index[keep])) >= 3 and len(np.unique(axes.v_index[keep])) >= 3:
        design = np.stack([np.ones_like(u), u, v, u * u, v * v], 1)[keep]
        if np.linalg.matrix_rank(design) == 5:
            c, *_ = np.linalg.lstsq(design, loss[keep], rcond=None)
            if c[3] > 0 and c[4] > 0:
                cu = float(np.clip(-c[1] / (2 * c[3]), u[keep].min(), u[keep].max()))
                cv = float(np.clip(-c[2] / (2 * c[4]), v[keep].min(), v[keep].max()))
                return cu, cv, float(c @ [1.0, cu, cv, cu * cu, cv * cv])
    best_u, best_v, best_loss = float(u[best]), float(v[best]), float(loss[best])
    row = keep & (axes.v_index == axes.v_index[best])
    along_u = _parabola_vertex(u[row], loss[row]) if row.sum() >= 3 else None
    column = keep & (axes.u_index == axes.u_index[best])
    along_v = _parabola_vertex(v[column], loss[column]) if column.sum() >= 3 else None
    if along_u is None and along_v is None:
        return None
    total = best_loss
    if along_u is not None:
        best_u, total = along_u[0], total + (along_u[1] - best_loss)
    if along_v is not None:
        best_v, total = along_v[0], total + (along_v[1] - best_loss)
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
