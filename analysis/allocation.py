"""Compute-optimal allocation and inference cost, on top of ``dit.flops`` and ``dit.sizes``.

* ``WidthRule``: width d as a function of N (raw parameters): the size registry's rule
  (``dit.sizes.width_for_parameters``) or a power law ``d = k N^p`` fitted to the runs' sizes.
* ``FlopModel``: training FLOPs per video token, ``C_token(N)``, under the paper's convention
  ``(3/4) N (7 + n_ctx/d)`` or ``6 N`` (``dit.flops.flops_per_token``).
* ``optimal_sizes``: for budgets C (FLOPs), the N minimising a loss law ``L(N, T)`` subject to
  ``C = T * C_token(N)``; vectorised over many parameter sets (bootstrap) by golden-section search
  in ``log N`` (the loss along the constraint is unimodal in log N).
* ``empirical_optimal_sizes``: the isoFLOP reading of measured curves (one per size): at each C the
  size with the lowest interpolated loss, refined by a parabola in ``log N`` through it and its
  neighbours (method ``parabola``) or taken as is (``discrete``); only optima with a size on both
  sides count as interior and enter the ``N_opt = k C^a`` fit.
* ``inference_flops``: FLOPs to generate one video (``dit.flops.inference_flops_per_video``);
  ``InferenceCost`` tabulates it for many sizes at once.

Loss laws take N and T in billions; everything else here is raw parameters, raw tokens and FLOPs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from dit.flops import flops_per_token as _flops_per_token
from dit.flops import inference_flops_per_video
from dit.sizes import PARAMETERS_PER_BLOCK_PER_WIDTH_SQUARED, sizes_in_family, width_for_parameters

from analysis.config import InferenceSetup

BILLION = 1e9
GOLDEN = (np.sqrt(5.0) - 1) / 2


@dataclass(frozen=True)
class WidthRule:
    """Width ``d`` of a model with N parameters: ``registry`` (a ``dit.sizes`` family) or ``fitted`` (d = k N^p)."""

    source: str = "registry"
    family: str | None = "paper"
    exponent: float | None = None
    log_coefficient: float | None = None

    @classmethod
    def fit(cls, parameters: Sequence[float], widths: Sequence[float]) -> "WidthRule":
        """Least squares ``log d = log k + p log N`` over (N, d) pairs of at least two distinct sizes."""
        x = np.log(np.asarray(parameters, dtype=float))
        y = np.log(np.asarray(widths, dtype=float))
        if len(np.unique(np.round(x, 9))) < 2:
            raise ValueError("a fitted width rule needs at least two distinct model sizes")
        slope, intercept = np.polyfit(x, y, 1)
        return cls(source="fitted", family=None, exponent=float(slope), log_coefficient=float(intercept))

    def width(self, parameters) -> np.ndarray:
        values = np.asarray(parameters, dtype=float)
        if self.source == "registry":
            flat = [width_for_parameters(float(n), self.family) for n in values.ravel()]
            return np.asarray(flat, dtype=float).reshape(values.shape)
        if self.source == "fitted":
            return np.exp(self.log_coefficient + self.exponent * np.log(values))
        raise ValueError(f"unknown width rule source {self.source!r}; use 'registry' or 'fitted'")

    def knots(self) -> np.ndarray:
        """Registered N of the family (where the registry rule changes slope); empty for a fitted rule."""
        if self.source != "registry":
            return np.array([])
        return np.array([s.non_embedding_parameters for s in sizes_in_family(self.family)], dtype=float)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping) -> "WidthRule":
        return cls(**record)

    def describe(self) -> str:
        if self.source == "registry":
            return f"dit.sizes.width_for_parameters(N, family={self.family!r})"
        return f"d = {np.exp(self.log_coefficient):.4g} * N^{self.exponent:.4f} (fitted to the runs' sizes)"


@dataclass(frozen=True)
class FlopModel:
    """Training FLOPs per video token ``C_token(N)`` (N raw parameters)."""

    convention: str
    context_tokens: float
    width_rule: WidthRule

    def flops_per_token(self, parameters) -> np.ndarray:
        parameters = np.asarray(parameters, dtype=float)
        if self.convention == "6n":
            return _flops_per_token(parameters, self.context_tokens, 1.0, "6n")
        return _flops_per_token(parameters, self.context_tokens, self.width_rule.width(parameters), "paper")

    def describe(self) -> str:
        if self.convention == "6n":
            return "C = 6 N T"
        return f"C = (3/4) N (7 + n_ctx/d) T with n_ctx = {self.context_tokens:g} tokens per clip, d from {self.width_rule.describe()}"

    def to_dict(self) -> dict:
        return {"convention": self.convention, "context_tokens": self.context_tokens, "width_rule": self.width_rule.to_dict()}

    @classmethod
    def from_dict(cls, record: Mapping) -> "FlopModel":
        return cls(record["convention"], float(record["context_tokens"]), WidthRule.from_dict(record["width_rule"]))


def inference_flops(parameters, width_rule: WidthRule, setup: InferenceSetup) -> np.ndarray:
    """FLOPs to generate one video with a model of N parameters (raw), width from ``width_rule``.

    Depth is ``N / (16 d^2)`` (not rounded, so the cost is a smooth function of N).
    """
    values = np.asarray(parameters, dtype=float)
    widths = width_rule.width(values)
    out = np.empty(values.shape)
    for index, (n, d) in enumerate(zip(values.ravel(), widths.ravel())):
        depth = n / (PARAMETERS_PER_BLOCK_PER_WIDTH_SQUARED * d * d)
        text_width = d if setup.text_width == "model" else float(setup.text_width)
        out.flat[index] = inference_flops_per_video(
            d, depth, setup.video_tokens, setup.text_tokens, setup.patch_dim, text_width,
            setup.sampling_steps, setup.classifier_free_guidance,
        )
    return out


class InferenceCost:
    """FLOPs to generate one video as a vectorised function of N (raw): ``inference_flops`` evaluated exactly on a
    log grid of N (the registry's knots included, where the width rule changes slope) and interpolated linearly in
    log-log between; the reductions over thousands of resampled sizes need it (relative error below 1e-5)."""

    def __init__(self, width_rule: WidthRule, setup: InferenceSetup, parameter_range: tuple[float, float], points: int = 600):
        low, high = (float(np.log(v)) for v in parameter_range)
        knots = np.log(width_rule.knots())
        self.log_parameters = np.unique(np.concatenate([np.linspace(low, high, points), knots[(knots > low) & (knots < high)]]))
        self.log_flops = np.log(inference_flops(np.exp(self.log_parameters), width_rule, setup))

    def __call__(self, parameters) -> np.ndarray:
        log_n = np.log(np.asarray(parameters, dtype=float))
        if np.any((log_n < self.log_parameters[0] - 1e-9) | (log_n > self.log_parameters[-1] + 1e-9)):
            raise ValueError("InferenceCost: a size outside the tabulated range")
        return np.exp(np.interp(log_n, self.log_parameters, self.log_flops))


def parameters_for_inference_budget(budget: float, width_rule: WidthRule, setup: InferenceSetup) -> float:
    """Largest N (raw) whose per-video inference FLOPs stay within ``budget`` (bisection in log N)."""
    low, high = np.log(1e3), np.log(1e15)
    if inference_flops(np.exp(low), width_rule, setup) > budget:
        raise ValueError(f"an inference budget of {budget:.3g} FLOPs per video is below the cost of a 1e3-parameter model")
    for _ in range(100):
        middle = 0.5 * (low + high)
        if inference_flops(np.exp(middle), width_rule, setup) <= budget:
            low = middle
        else:
            high = middle
    return float(np.exp(low))


# ----------------------------------------------------------------------------------------------
class AllocationSolver:
    """Minimise ``L(N, C / C_token(N))`` over N for many loss-law parameter sets and budgets.

    ``log C_token`` is tabulated on a fine grid in ``log N`` (plus the registry's knots, where the
    width rule changes slope) and interpolated, so the search is vectorised.
    """

    def __init__(self, flop_model: FlopModel, parameter_range: tuple[float, float], points: int = 4000):
        low, high = (float(np.log(v)) for v in parameter_range)
        grid = np.linspace(low, high, points)
        knots = np.log(flop_model.width_rule.knots())
        grid = np.unique(np.concatenate([grid, knots[(knots > low) & (knots < high)]]))
        self.flop_model = flop_model
        self.log_parameters = grid
        self._log_flops_table = np.log(flop_model.flops_per_token(np.exp(grid)))
        self.range = (low, high)

    def log_flops_per_token(self, log_parameters: np.ndarray) -> np.ndarray:
        return np.interp(log_parameters, self.log_parameters, self._log_flops_table)

    def tokens(self, parameters: np.ndarray, flops: np.ndarray) -> np.ndarray:
        """T in raw tokens for N raw parameters at budget C."""
        return np.asarray(flops, dtype=float) / np.exp(self.log_flops_per_token(np.log(parameters)))

    def optimal(
        self,
        loss: Callable[[np.ndarray, np.ndarray], np.ndarray],
        flops: np.ndarray,
        max_parameters: np.ndarray | float | None = None,
        iterations: int = 90,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(N_opt raw, loss there, interior)`` for ``loss(N_billions, T_billions)`` broadcasting over ``flops``.

        ``loss`` must broadcast over the shape of ``flops`` (e.g. parameters ``(R, 1)`` and flops
        ``(R, m)`` or ``(1, m)``). ``interior``: the optimum is not at the search range's ends.
        With ``max_parameters`` the search stops at that N (the constrained optimum).
        """
        flops = np.asarray(flops, dtype=float)
        low = np.full(flops.shape, self.range[0])
        high = np.full(flops.shape, self.range[1])
        if max_parameters is not None:
            high = np.minimum(high, np.log(np.asarray(max_parameters, dtype=float)))

        def objective(x):
            tokens = flops / np.exp(self.log_flops_per_token(x))
            return loss(np.exp(x) / BILLION, tokens / BILLION)

        a, b = low.copy(), high.copy()
        c = b - GOLDEN * (b - a)
        d = a + GOLDEN * (b - a)
        fc, fd = objective(c), objective(d)
        for _ in range(iterations):
            left = fc < fd
            b = np.where(left, d, b)
            a = np.where(left, a, c)
            new_c = b - GOLDEN * (b - a)
            new_d = a + GOLDEN * (b - a)
            d_next = np.where(left, c, new_d)
            c_next = np.where(left, new_c, d)
            fd_next = np.where(left, fc, np.nan)
            fc_next = np.where(left, np.nan, fd)
            c, d = c_next, d_next
            need_c = np.isnan(fc_next)
            need_d = np.isnan(fd_next)
            fc = np.where(need_c, objective(c), fc_next)
            fd = np.where(need_d, objective(d), fd_next)
        x = 0.5 * (a + b)
        span = self.range[1] - self.range[0]
        interior = (x > low + 1e-3 * span) & (x < high - 1e-3 * span)
        if max_parameters is not None:
            interior |= np.isclose(x, high, atol=1e-3 * span) & (high < self.range[1])
        return np.exp(x), objective(x), interior


def loss_law_callable(parameters: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``L(N, T)`` (billions) for parameter rows ``(R, 5)`` = (a, alpha, b, beta, L_inf); broadcasts over ``(R, m)``."""
    p = np.atleast_2d(np.asarray(parameters, dtype=float))
    a, alpha, b, beta, floor = (p[:, i : i + 1] for i in range(5))

    def loss(n, t):
        return a * t ** (-alpha) + b * n ** (-beta) + floor

    return loss


def power_law_through(flops: np.ndarray, values: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``log y = log k + a log C`` per row of ``values`` ``(R, m)``: returns ``(k, a)`` of shape ``(R,)``.

    ``mask`` ``(R, m)`` selects the points of each row; rows with fewer than 2 points give NaN.
    """
    values = np.atleast_2d(values)
    x = np.broadcast_to(np.log(np.asarray(flops, dtype=float)), values.shape)
    y = np.log(np.where(np.isfinite(values) & (values > 0), values, 1.0))
    w = np.isfinite(values) & (values > 0)
    if mask is not None:
        w &= mask
    w = w.astype(float)
    count = w.sum(1)
    safe = np.maximum(count, 1)
    mean_x = (w * x).sum(1) / safe
    mean_y = (w * y).sum(1) / safe
    sxx = (w * (x - mean_x[:, None]) ** 2).sum(1)
    sxy = (w * (x - mean_x[:, None]) * (y - mean_y[:, None])).sum(1)
    slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1), np.nan)
    intercept = mean_y - slope * mean_x
    bad = (count < 2) | (sxx <= 0)
    slope[bad] = np.nan
    intercept[bad] = np.nan
    return np.exp(intercept), slope


# ----------------------------------------------------------------------------------------------
@dataclass
class SizeCurve:
    """One size's loss at the common budgets: C_j = tokens_j * C_token, L_j (L may be ``(R, budgets)``)."""

    size: str
    parameters: float
    flops: np.ndarray  # (budgets,)
    loss: np.ndarray  # (R, budgets)


def empirical_flops_grid(curves: Sequence[SizeCurve], points: int = 48) -> np.ndarray:
    """Log-spaced budgets C spanning the union of the curves' ranges."""
    low = min(float(np.min(c.flops)) for c in curves)
    high = max(float(np.max(c.flops)) for c in curves)
    return np.geomspace(low, high, points)


def empirical_optimal_sizes(curves: Sequence[SizeCurve], flops: np.ndarray, method: str = "parabola") -> tuple[np.ndarray, np.ndarray]:
    """IsoFLOP optima: ``(N_opt raw (R, m), interior (R, m))`` (module docstring)."""
    curves = sorted(curves, key=lambda c: c.parameters)
    flops = np.asarray(flops, dtype=float)
    target = np.log(flops)
    resamples = np.atleast_2d(curves[0].loss).shape[0]
    S, m = len(curves), flops.size
    losses = np.full((resamples, S, m), np.nan)
    for s, curve in enumerate(curves):
        order = np.argsort(curve.flops)
        x = np.log(curve.flops[order])
        y = np.log(np.atleast_2d(curve.loss)[:, order])
        inside = (target >= x[0]) & (target <= x[-1])
        segment = np.clip(np.searchsorted(x, target, side="right") - 1, 0, max(len(x) - 2, 0))
        if len(x) == 1:
            values = np.repeat(y[:, :1], m, axis=1)
            inside = np.isclose(target, x[0])
        else:
            fraction = (target - x[segment]) / (x[segment + 1] - x[segment])
            values = y[:, segment] * (1 - fraction) + y[:, segment + 1] * fraction
        losses[:, s, :] = np.where(inside[None, :], np.exp(values), np.nan)
    available = np.isfinite(losses)
    filled = np.where(available, losses, np.inf)
    best = np.argmin(filled, axis=1)  # (R, m)
    any_available = available.any(1)
    sizes = np.array([c.parameters for c in curves], dtype=float)
    log_sizes = np.log(sizes)
    index = np.arange(S)[None, :, None]
    below = np.where(available & (index < best[:, None, :]), index, -1).max(1)
    above = np.where(available & (index > best[:, None, :]), index, S).min(1)
    interior = any_available & (below >= 0) & (above < S)
    n_opt = sizes[best]
    if method == "parabola":
        r, c = np.nonzero(interior)
        i0, i1, i2 = below[r, c], best[r, c], above[r, c]
        x0, x1, x2 = log_sizes[i0], log_sizes[i1], log_sizes[i2]
        y0, y1, y2 = losses[r, i0, c], losses[r, i1, c], losses[r, i2, c]
        denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
        b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denominator
        vertex = np.where(a > 0, -b / np.where(a > 0, 2 * a, 1.0), x1)
        n_opt[r, c] = np.exp(np.clip(vertex, x0, x2))
    elif method != "discrete":
        raise ValueError(f"unknown empirical method {method!r}; use 'parabola' or 'discrete'")
    n_opt = np.where(any_available, n_opt, np.nan)
    return n_opt, interior
