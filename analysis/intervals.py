"""Bootstrap intervals: equal-tailed percentile intervals, basic intervals, and how far dropped resamples could move them.

A resample is *dropped* when its refit did not converge or ended on a bound the full-data fit is not
on. Dropping is not random, so the interval of the kept resamples alone could be too narrow:
``bounds_with_dropped`` counts every dropped resample at the far end of each side (below every kept
value for the lower end, above every kept value for the upper end), which bounds the interval the
complete set of resamples could have given. When more resamples were dropped than a tail holds,
that end is unbounded (None).
"""

from __future__ import annotations

import numpy as np


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of the finite ``samples`` at confidence ``level``."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return (float(low), float(high))


def _quantile_with_extremes(kept: np.ndarray, below: int, above: int, fraction: float) -> float | None:
    """numpy's linear quantile of ``kept`` with ``below`` values at -inf and ``above`` at +inf added; None if infinite."""
    values = np.concatenate([np.full(below, -np.inf), np.sort(kept), np.full(above, np.inf)])
    position = fraction * (values.size - 1)
    low, high = int(np.floor(position)), int(np.ceil(position))
    if not (np.isfinite(values[low]) and np.isfinite(values[high])):
        return None
    return float(values[low] + (position - low) * (values[high] - values[low]))


def bounds_with_dropped(samples: np.ndarray, dropped: int, level: float) -> list[float | None] | None:
    """``[low, high]`` of the widest interval the dropped resamples could make (module docstring); None without samples."""
    kept = np.asarray(samples, dtype=float)
    kept = kept[np.isfinite(kept)]
    if kept.size == 0:
        return None
    tail = (1 - level) / 2
    return [_quantile_with_extremes(kept, dropped, 0, tail), _quantile_with_extremes(kept, 0, dropped, 1 - tail)]


def estimate(value, samples, level: float, dropped: int = 0) -> dict:
    """``{"value", "interval", "resamples", "dropped", "interval_with_dropped"}`` of one bootstrapped quantity.

    ``samples``: the kept resamples' values (None or fewer than 2: no interval); ``dropped``: resamples
    that gave no value (their bound on the interval is ``interval_with_dropped``).
    """
    record = {"value": None if value is None or not np.isfinite(value) else float(value), "interval": None}
    samples = None if samples is None else np.asarray(samples, dtype=float)
    if samples is not None and np.sum(np.isfinite(samples)) >= 2:
        record["interval"] = list(percentile_interval(samples, level))
        record["resamples"] = int(np.sum(np.isfinite(samples)))
        record["dropped"] = int(dropped + np.sum(~np.isfinite(samples)))
        record["interval_with_dropped"] = bounds_with_dropped(samples, record["dropped"], level)
    return record


def finite_values(values: list) -> np.ndarray:
    """The finite entries of ``values`` (None and NaN entries: resamples without a value, left out)."""
    array = np.array([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


def basic_interval(value: float, resamples: list | None, level: float) -> list[float] | None:
    """The basic (reverse percentile) bootstrap interval ``[2 v - q_high, 2 v - q_low]`` of ``value`` from its
    resamples (None entries: resamples without a value, left out); None with fewer than two. It takes off a
    shift of the resamples from the value, such as the winner's curse of a minimum found again among noisy cells."""
    if resamples is None:
        return None
    values = finite_values(resamples)
    if values.size < 2:
        return None
    low, high = percentile_interval(values, level)
    return [2 * value - high, 2 * value - low]
