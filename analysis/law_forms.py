"""The law forms fitted by this package, each a small object separate from the fitter.

Units everywhere in fitted laws (as in the paper): N in **billions** of non-embedding parameters,
T (= D) in **billions** of video tokens, B in **tokens** per batch, C in **FLOPs**, LR dimensionless.

Each form maps *published* parameters (the numbers a reader sees, e.g. ``a, alpha, b, beta, L_inf``)
to an *internal* vector ``theta`` that the fitter optimises. Internally the inputs are divided by a
reference scale (the geometric mean of the data) so that one starting grid works from the tiny CPU
models (N ~ 1e-5 billion) to the paper's (N ~ 1 billion); coefficients are log-transformed.
``log_predict(theta, inputs)`` returns the log prediction and its Jacobian, which is all the robust
fitter in ``analysis.fitter`` needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from analysis.robust_loss import huber

def _bounded_least_squares(gram: np.ndarray, moment: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Least squares with ``0 <= c <= upper`` for a batch of small problems given as normal equations.

    ``gram`` ``(..., k, k)``, ``moment`` ``(..., k)``, ``upper`` ``(k,)`` (``inf`` for none). Every
    support (subset of free coefficients, the others 0) is solved; the best one inside the box is
    kept (exact for the lower bounds; a coefficient that wants to exceed its upper bound is left out).
    """
    k = gram.shape[-1]
    best = np.full(gram.shape[:-2], np.inf)
    coefficients = np.zeros(gram.shape[:-1])
    for mask in range(1, 2**k):
        index = np.array([i for i in range(k) if mask >> i & 1])
        sub_gram = gram[..., index[:, None], index[None, :]]
        sub_moment = moment[..., index]
        ridge = 1e-12 * np.einsum("...ii->...i", sub_gram)[..., None] * np.eye(index.size)  # near-collinear cells stay solvable
        with np.errstate(all="ignore"):
            solved = np.linalg.solve(sub_gram + ridge, sub_moment[..., None])[..., 0]
            value = np.einsum("...i,...ij,...j->...", solved, sub_gram, solved) - 2 * np.einsum("...i,...i->...", solved, sub_moment)
        full = np.zeros(gram.shape[:-1])
        full[..., index] = solved
        better = np.all(np.isfinite(solved) & (solved >= 0), -1) & np.all(full <= upper, -1) & (value < best)
        best = np.where(better, value, best)
        coefficients = np.where(better[..., None], full, coefficients)
    return coefficients


def _grid_minima(objective: np.ndarray, count: int) -> np.ndarray:
    """Indices ``(m, 2)`` of the ``count`` lowest local minima (8 neighbours) of a 2-D grid, best first."""
    rows, columns = objective.shape
    objective = np.where(np.isfinite(objective), objective, np.inf)
    padded = np.pad(objective, 1, constant_values=np.inf)
    neighbours = np.min(
        [padded[1 + i : 1 + i + rows, 1 + j : 1 + j + columns] for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)],
        axis=0,
    )
    minima = np.argwhere((objective <= neighbours) & np.isfinite(objective))
    order = np.argsort(objective[minima[:, 0], minima[:, 1]], kind="stable")
    return minima[order][:count]


def _huber_objective(residuals: np.ndarray, weights: np.ndarray, delta: float) -> np.ndarray:
    """The fit's objective (``analysis.fitter``) summed over the last axis; non-finite residuals count as infinite."""
    loss, _ = huber(residuals, delta)
    return np.where(np.isfinite(loss), loss, np.inf) @ weights


@dataclass(frozen=True)
class LawForm:
    """Base class: a named law ``y = f(inputs; parameters)`` with ``y > 0``."""

    name: str
    formula: str
    variables: tuple[str, ...]
    parameter_names: tuple[str, ...]
    output: str
    output_units: str

    # --- scales -------------------------------------------------------------------------------
    def reference_scales(self, inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Geometric mean of each input (used to normalise inputs before fitting)."""
        return {v: float(np.exp(np.mean(np.log(np.asarray(inputs[v], dtype=float))))) for v in self.variables}

    def log_inputs(self, inputs: Mapping[str, np.ndarray], scales: Mapping[str, float]) -> dict[str, np.ndarray]:
        return {v: np.log(np.asarray(inputs[v], dtype=float) / scales[v]) for v in self.variables}

    # --- to implement -------------------------------------------------------------------------
    def log_predict(self, theta: np.ndarray, log_x: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(log y, d log y / d theta)`` with shapes ``(n,)`` and ``(n, p)``."""
        raise NotImplementedError

    def to_parameters(self, theta: np.ndarray, scales: Mapping[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def to_theta(self, parameters: Mapping[str, float], scales: Mapping[str, float]) -> np.ndarray:
        raise NotImplementedError

    def bounds(self, observed: np.ndarray) -> list[tuple[float, float]]:
        raise NotImplementedError

    def starting_points(
        self, log_x: Mapping[str, np.ndarray], observed: np.ndarray, weights: np.ndarray | None = None, delta: float = 1e-3
    ) -> list[np.ndarray]:
        """Internal parameter vectors to start the fit from, best first (``weights``, ``delta``: the fit's)."""
        raise NotImplementedError

    #: Parameter names that are exponents (reported in the exponent figure/table).
    exponent_names: tuple[str, ...] = ()

    #: Bounds that belong to the model, not to the optimiser: (parameter name, "low" or "high") pairs. A fit
    #: that ends on such a bound is the constrained estimate (a loss floor of 0 is a possible answer); one that
    #: ends on any other bound (a guard against runaway exponents and coefficients) is not identified there.
    constraint_bounds: tuple[tuple[str, str], ...] = ()

    # --- evaluation in published units ----------------------------------------------------------
    def predict(self, parameters: Mapping[str, float], **inputs: np.ndarray) -> np.ndarray:
        """Evaluate the law at ``inputs`` (published units) with published ``parameters``."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SumOfPowerLaws(LawForm):
    """``L = a * T^-alpha + b * N^-beta + L_inf`` (the paper's law; Chinchilla's form with D = T).

    Internal ``theta = (log a', alpha, log b', beta, L_inf)`` with ``a = a' * T_ref^alpha``,
    ``b = b' * N_ref^beta``.
    """

    name: str = "sum_of_power_laws"
    formula: str = "L = a * T^-alpha + b * N^-beta + L_inf"
    variables: tuple[str, ...] = ("N", "T")
    parameter_names: tuple[str, ...] = ("a", "alpha", "b", "beta", "L_inf")
    output: str = "L"
    output_units: str = "validation loss"
    exponent_names: tuple[str, ...] = ("alpha", "beta")
    #: The loss is a mean squared error, so its floor cannot be negative: L_inf = 0 is a possible answer.
    constraint_bounds: tuple[tuple[str, str], ...] = (("L_inf", "low"),)

    def log_predict(self, theta, log_x):
        log_a, alpha, log_b, beta, floor = theta
        term_t = np.exp(log_a - alpha * log_x["T"])
        term_n = np.exp(log_b - beta * log_x["N"])
        prediction = term_t + term_n + floor
        jac = np.stack(
            [term_t, -log_x["T"] * term_t, term_n, -log_x["N"] * term_n, np.ones_like(term_t)], axis=-1
        ) / prediction[..., None]
        return np.log(prediction), jac

    def to_parameters(self, theta, scales):
        log_a, alpha, log_b, beta, floor = (float(v) for v in theta)
        return {
            "a": float(np.exp(log_a) * scales["T"] ** alpha),
            "alpha": alpha,
            "b": float(np.exp(log_b) * scales["N"] ** beta),
            "beta": beta,
            "L_inf": floor,
        }

    def to_theta(self, parameters, scales):
        return np.array(
            [
                np.log(parameters["a"]) - parameters["alpha"] * np.log(scales["T"]),
                parameters["alpha"],
                np.log(parameters["b"]) - parameters["beta"] * np.log(scales["N"]),
                parameters["beta"],
                parameters["L_inf"],
            ]
        )

    def bounds(self, observed):
        top = float(np.min(observed)) * (1 - 1e-9)
        return [(-40.0, 15.0), (1e-3, 5.0), (-40.0, 15.0), (1e-3, 5.0), (0.0, top)]

    #: Exponent grid of the starting-point search (each of alpha and beta), log-spaced inside the bounds.
    EXPONENT_GRID = np.geomspace(0.01, 4.0, 25)
    #: Starts handed to the optimiser: the best local minima of the profiled objective over the grid.
    STARTS = 4

    def starting_points(self, log_x, observed, weights=None, delta=1e-3):
        """Variable projection over an exponent grid: the best local minima of the profiled objective.

        For fixed (alpha, beta) the law is linear in (a', b', L_inf): they are solved by bounded
        least squares on relative residuals (``a', b' >= 0``, ``0 <= L_inf < min L``), all grid cells
        at once. Each cell is then scored by the fit's own objective (Huber on log residuals), and
        the best ``STARTS`` local minima over the grid are returned, best first.
        """
        y = np.asarray(observed, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        lowest = float(np.min(y))
        top = lowest * (1 - 1e-9)
        exponents = self.EXPONENT_GRID
        term_t = np.exp(-exponents[:, None] * log_x["T"][None, :])  # (alpha, n)
        term_n = np.exp(-exponents[:, None] * log_x["N"][None, :])  # (beta, n)
        size = exponents.size
        s2 = w / y**2  # weights of relative residuals
        gram = np.empty((size, size, 3, 3))
        gram[..., 0, 0] = ((term_t**2) @ s2)[:, None]
        gram[..., 1, 1] = ((term_n**2) @ s2)[None, :]
        gram[..., 2, 2] = s2.sum()
        gram[..., 0, 1] = gram[..., 1, 0] = (term_t * s2) @ term_n.T
        gram[..., 0, 2] = gram[..., 2, 0] = (term_t @ s2)[:, None]
        gram[..., 1, 2] = gram[..., 2, 1] = (term_n @ s2)[None, :]
        moment = np.empty((size, size, 3))
        moment[..., 0] = (term_t @ (s2 * y))[:, None]
        moment[..., 1] = (term_n @ (s2 * y))[None, :]
        moment[..., 2] = (s2 * y).sum()
        coefficients = _bounded_least_squares(gram, moment, np.array([np.inf, np.inf, top]))
        a = np.maximum(coefficients[..., 0], 1e-6 * lowest)
        b = np.maximum(coefficients[..., 1], 1e-6 * lowest)
        floor = coefficients[..., 2]
        prediction = a[..., None] * term_t[:, None, :] + b[..., None] * term_n[None, :, :] + floor[..., None]
        objective = _huber_objective(np.log(prediction) - np.log(y), w, delta)
        return [
            np.array([np.log(a[i, j]), exponents[i], np.log(b[i, j]), exponents[j], floor[i, j]])
            for i, j in _grid_minima(objective, self.STARTS)
        ]

    def predict(self, parameters, **inputs):
        n = np.asarray(inputs["N"], dtype=float)
        t = np.asarray(inputs["T"], dtype=float)
        p = parameters
        return p["a"] * t ** (-p["alpha"]) + p["b"] * n ** (-p["beta"]) + p["L_inf"]


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PowerLaw(LawForm):
    """``y = a * prod_v x_v^(e_v)``: linear in log space (hyperparameter and allocation laws).

    Internal ``theta = (log a', e_1, ..., e_k)`` with inputs normalised by their reference scales.
    """

    name: str = "power_law"
    formula: str = "y = a * T^b * N^c"
    variables: tuple[str, ...] = ("T", "N")
    parameter_names: tuple[str, ...] = ("a", "b", "c")
    output: str = "y"
    output_units: str = ""
    exponent_names: tuple[str, ...] = ("b", "c")

    def log_predict(self, theta, log_x):
        value = theta[0] + sum(e * log_x[v] for e, v in zip(theta[1:], self.variables))
        value = np.broadcast_to(value, np.broadcast_shapes(np.shape(value), np.shape(log_x[self.variables[0]])))
        columns = [np.ones_like(value)] + [np.broadcast_to(log_x[v], value.shape) for v in self.variables]
        return value, np.stack(columns, axis=-1)

    def to_parameters(self, theta, scales):
        log_a = float(theta[0]) - sum(float(e) * np.log(scales[v]) for e, v in zip(theta[1:], self.variables))
        record = {self.parameter_names[0]: float(np.exp(log_a))}
        record.update({name: float(e) for name, e in zip(self.parameter_names[1:], theta[1:])})
        return record

    def to_theta(self, parameters, scales):
        exponents = [parameters[name] for name in self.parameter_names[1:]]
        log_a = np.log(parameters[self.parameter_names[0]]) + sum(
            e * np.log(scales[v]) for e, v in zip(exponents, self.variables)
        )
        return np.array([log_a, *exponents], dtype=float)

    def bounds(self, observed):
        return [(-80.0, 80.0)] + [(-10.0, 10.0)] * len(self.variables)

    def starting_points(self, log_x, observed, weights=None, delta=0.1):
        """Ordinary least squares in log space, and the same with every exponent zeroed."""
        _, design = self.log_predict(np.zeros(len(self.variables) + 1), log_x)
        ols, *_ = np.linalg.lstsq(design, np.log(observed), rcond=None)
        flat = np.zeros_like(ols)
        flat[0] = np.mean(np.log(observed))
        return [ols, flat]

    def predict(self, parameters, **inputs):
        names = self.parameter_names
        value = np.asarray(parameters[names[0]], dtype=float)
        for name, variable in zip(names[1:], self.variables):
            value = value * np.asarray(inputs[variable], dtype=float) ** parameters[name]
        return value


def hyperparameter_law(output: str, output_units: str) -> PowerLaw:
    """``y = a * T^b * N^c`` for B_opt (tokens) or LR_opt."""
    return PowerLaw(
        name=f"{output}_law", formula=f"{output} = a * T^b * N^c", output=output, output_units=output_units
    )


def compute_law(output: str, output_units: str, exponent: str = "b", coefficient: str = "a") -> PowerLaw:
    """``y = a * C^b`` of compute alone (DeepSeek's hyperparameter laws; ``N_opt = k * C^a``)."""
    return PowerLaw(
        name=f"{output}_of_compute",
        formula=f"{output} = {coefficient} * C^{exponent}",
        variables=("C",),
        parameter_names=(coefficient, exponent),
        output=output,
        output_units=output_units,
        exponent_names=(exponent,),
    )


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KaplanLaw(LawForm):
    """Kaplan et al. (2020): ``L = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D`` with D = T.

    Internal ``theta = (log N_c', alpha_N, log D_c', alpha_D)``; ``N_c = N_c' N_ref`` (billions of
    parameters), ``D_c = D_c' T_ref`` (billions of tokens). No irreducible term: the form the paper
    does not use, fitted as a baseline.
    """

    name: str = "kaplan"
    formula: str = "L = ((N_c / N)^(alpha_N / alpha_D) + D_c / T)^alpha_D"
    variables: tuple[str, ...] = ("N", "T")
    parameter_names: tuple[str, ...] = ("N_c", "alpha_N", "D_c", "alpha_D")
    output: str = "L"
    output_units: str = "validation loss"
    exponent_names: tuple[str, ...] = ("alpha_N", "alpha_D")

    def log_predict(self, theta, log_x):
        log_nc, alpha_n, log_dc, alpha_d = theta
        u = (alpha_n / alpha_d) * (log_nc - log_x["N"])
        v = log_dc - log_x["T"]
        s = np.logaddexp(u, v)
        share_u = np.exp(u - s)
        share_v = np.exp(v - s)
        jac = np.stack(
            [alpha_n * share_u, share_u * (log_nc - log_x["N"]), alpha_d * share_v, s - share_u * u], axis=-1
        )
        return alpha_d * s, jac

    def to_parameters(self, theta, scales):
        log_nc, alpha_n, log_dc, alpha_d = (float(v) for v in theta)
        return {
            "N_c": float(np.exp(log_nc) * scales["N"]),
            "alpha_N": alpha_n,
            "D_c": float(np.exp(log_dc) * scales["T"]),
            "alpha_D": alpha_d,
        }

    def to_theta(self, parameters, scales):
        return np.array(
            [
                np.log(parameters["N_c"] / scales["N"]),
                parameters["alpha_N"],
                np.log(parameters["D_c"] / scales["T"]),
                parameters["alpha_D"],
            ]
        )

    def bounds(self, observed):
        return [(-400.0, 400.0), (1e-4, 5.0), (-400.0, 400.0), (1e-4, 5.0)]

    #: Exponent grid of the starting-point search (each of alpha_N and alpha_D).
    EXPONENT_GRID = np.geomspace(0.02, 2.0, 21)
    #: Starts handed to the optimiser: the best local minima of the profiled objective over the grid.
    STARTS = 4

    def starting_points(self, log_x, observed, weights=None, delta=1e-3):
        """Variable projection over an exponent grid: the best local minima of the profiled objective.

        For fixed (alpha_N, alpha_D), ``L^(1/alpha_D) = P N'^(-alpha_N/alpha_D) + Q / T'`` is linear in
        ``P = N_c'^(alpha_N/alpha_D) >= 0`` and ``Q = D_c' >= 0``, solved by bounded least squares on
        relative residuals for all cells at once; cells are scored by the fit's own objective and
        the best ``STARTS`` local minima are returned, best first.
        """
        y = np.asarray(observed, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        log_y = np.log(y)
        middle = float(np.mean(log_y))
        alpha_n = self.EXPONENT_GRID[:, None, None]
        alpha_d = self.EXPONENT_GRID[None, :, None]
        with np.errstate(all="ignore"):
            # L^(1/alpha_D) divided by exp(middle / alpha_D) (exponents clipped against overflow)
            target = np.exp(np.clip((log_y - middle) / alpha_d, -300, 300))  # (1, D, n)
            size_term = np.exp(np.clip(-(alpha_n / alpha_d) * log_x["N"], -300, 300))  # (A, D, n)
            data_term = np.broadcast_to(np.exp(-log_x["T"]), size_term.shape)
            s2 = w / target**2
            gram = np.empty(size_term.shape[:2] + (2, 2))
            gram[..., 0, 0] = np.sum(s2 * size_term**2, -1)
            gram[..., 1, 1] = np.sum(s2 * data_term**2, -1)
            gram[..., 0, 1] = gram[..., 1, 0] = np.sum(s2 * size_term * data_term, -1)
            moment = np.stack([np.sum(s2 * target * size_term, -1), np.sum(s2 * target * data_term, -1)], -1)
            coefficients = _bounded_least_squares(gram, moment, np.array([np.inf, np.inf]))
            floor = 1e-9 * np.max(target, -1)
            p = np.maximum(coefficients[..., 0], floor)
            q = np.maximum(coefficients[..., 1], floor)
            log_prediction = alpha_d * np.log(p[..., None] * size_term + q[..., None] * data_term) + middle
            objective = _huber_objective(log_prediction - log_y, w, delta)
        shift = middle / self.EXPONENT_GRID  # log of exp(middle / alpha_D)
        starts = []
        for i, j in _grid_minima(objective, self.STARTS):
            a_n, a_d = self.EXPONENT_GRID[i], self.EXPONENT_GRID[j]
            starts.append(np.array([(shift[j] + np.log(p[i, j])) * a_d / a_n, a_n, shift[j] + np.log(q[i, j]), a_d]))
        return starts

    def predict(self, parameters, **inputs):
        n = np.asarray(inputs["N"], dtype=float)
        t = np.asarray(inputs["T"], dtype=float)
        p = parameters
        return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / t) ** p["alpha_D"]


#: The forms by the name stored in ``laws.json``.
LOSS_LAW = SumOfPowerLaws()
KAPLAN_LAW = KaplanLaw()
BATCH_SIZE_LAW = hyperparameter_law("B_opt", "tokens per batch")
LEARNING_RATE_LAW = hyperparameter_law("LR_opt", "learning rate")
BATCH_SIZE_OF_COMPUTE_LAW = compute_law("B_opt", "tokens per batch")
LEARNING_RATE_OF_COMPUTE_LAW = compute_law("LR_opt", "learning rate")
OPTIMAL_SIZE_OF_COMPUTE_LAW = compute_law("N_opt", "parameters (raw count)", exponent="a", coefficient="k")

FORMS: dict[str, LawForm] = {
    form.name: form
    for form in (
        LOSS_LAW,
        KAPLAN_LAW,
        BATCH_SIZE_LAW,
        LEARNING_RATE_LAW,
        BATCH_SIZE_OF_COMPUTE_LAW,
        LEARNING_RATE_OF_COMPUTE_LAW,
        OPTIMAL_SIZE_OF_COMPUTE_LAW,
    )
}


def get_form(name: str) -> LawForm:
    try:
        return FORMS[name]
    except KeyError:
        raise KeyError(f"unknown law form {name!r}; known forms: {', '.join(FORMS)}") from None
