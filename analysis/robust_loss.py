"""The robust loss every fit minimises: Huber on log residuals, divided by ``delta**2`` (``analysis.fitter``)."""

from __future__ import annotations

import numpy as np


def huber(residuals: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss divided by ``delta**2`` and its derivative, element-wise."""
    absolute = np.abs(residuals)
    quadratic = absolute <= delta
    value = np.where(quadratic, 0.5 * (residuals / delta) ** 2, absolute / delta - 0.5)
    derivative = np.where(quadratic, residuals / delta**2, np.sign(residuals) / delta)
    return value, derivative
