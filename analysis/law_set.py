"""A set of laws read back from ``results/laws.json`` (or the paper's), with predictions and intervals.

Used by the planner, the proposal and held-out commands, the figures and the tables, so that every
consumer evaluates a law the same way. Fitted documents carry bootstrap parameter samples; a
prediction interval for a loss combines the bootstrap spread of the law with the run-to-run noise
(``setup.noise.relative_std``: from the noise-floor seeds when there were any, else from the fit's
residuals; for the paper, the published fit MSE), with the uncertainty of that noise's own estimate
(``analysis.resampling.std_factors``; Student's t for a prediction without bootstrap samples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.formats import conditional_key_problem, describe_value, key_problem, read_json

from analysis.allocation import BILLION, AllocationSolver, FlopModel, inference_flops, loss_law_callable
from analysis.config import InferenceSetup
from analysis.intervals import percentile_interval
from analysis.law_forms import FORMS, get_form
from analysis.resampling import std_factors
from analysis.runs import mean_noise, noise_degrees_of_freedom, noise_quantile, run_relative_std


#: The laws document's format (2: optima interior flags, measured grids, recipe curves, run-noise bootstrap).
LAWS_SCHEMA = "analysis.laws/2"


class LawsFileError(ValueError):
    """``laws.json`` is missing, unreadable, not a laws document or lacks a law that a command needs; the message says
    which."""


#: The keys every laws document has (fitted or the paper's), dotted below ``setup``, with their types (``float``: any
#: number; ``None``: null); a fitted one (``origin`` fitted, as ``analysis.fit`` writes) also has ``FITTED_KEYS``.
REQUIRED_KEYS = {"schema": str, "laws": dict, "setup": dict, "setup.flop_model": dict, "setup.inference": dict}
FITTED_KEYS = {
    "origin": str, "config": dict, "units": dict, "runs": dict, "optima": list, "grids": list, "conventional_curves": list,
    "compute_optimal": dict, "comparison": dict, "recipe_curves": dict, "heldout": dict, "baselines": list,
    "setup.context_tokens": float, "setup.budgets_tokens": list, "setup.fitting_sizes": list, "setup.noise": dict,
}
#: Keys that may be absent, and when present have this type.
OPTIONAL_KEYS = {"origin": str, "config": dict, "compute_optimal": dict, "provenance": dict, "assumptions": list,
                 "setup.heldout_sizes": list, "setup.conventional_cell": (dict, None)}
#: Keys inside the sections of a fitted document that the facts and figures read (``key_problem`` keys; a number may be
#: null where a fit or a measurement can be missing), and, per section with a ``status``, those its status brings.
FITTED_SECTION_KEYS = {
    "config.confidence_level": float, "config.optimum_method": str, "config.optimum_band": float,
    "config.optimum_max_gain": float,
    "optima[]": dict, "optima[].size": str, "optima[].N": float, "optima[].T": float, "optima[].tokens": float,
    "optima[].interior_batch": bool, "optima[].interior_learning_rate": bool,
    "grids[]": dict, "grids[].size": str, "grids[].role": str, "grids[].cells": list, "grids[].cells[]": dict,
    "grids[].cells[].batch_clips": float, "grids[].cells[].batch_tokens": float, "grids[].cells[].learning_rate": float,
    "grids[].losses": list, "grids[].losses[]": list, "grids[].losses[][]": (float, None),
    "setup.budgets_tokens[]": float, "setup.fitting_sizes[]": dict, "setup.fitting_sizes[].size": str,
    "setup.fitting_sizes[].parameters": float, "setup.heldout_sizes[]": dict, "setup.heldout_sizes[].size": str,
    "setup.grid_cells": list, "setup.grid_cells[]": dict, "setup.grid_cells[].batch_clips": float,
    "setup.grid_cells[].learning_rate": float, "setup.flop_model.context_tokens": float,
    "setup.flop_model.convention": str, "setup.flop_model.width_rule": dict, "setup.bootstrap": dict,
    "setup.noise.relative_std": (float, None), "setup.noise.seeds_per_cell": (float, None),
    "heldout.hyperparameters": list, "heldout.hyperparameters[]": dict, "heldout.hyperparameters[].size": str,
    "heldout.hyperparameters[].tokens": float, "heldout.hyperparameters[].measured_interior": dict,
    "heldout.hyperparameters[].measured_interior.batch": bool,
    "heldout.hyperparameters[].measured_interior.learning_rate": bool, "heldout.loss": list, "heldout.loss[]": dict,
    "heldout.loss[].size": str, "heldout.loss[].tokens": float, "heldout.loss[].measured_loss": float,
    "compute_optimal.precise": dict, "compute_optimal.precise.status": str, "compute_optimal.conventional": dict,
    "compute_optimal.conventional.status": str, "setup.noise.detail.groups[].size": str,
    "setup.noise.detail.groups[].batch_clips": float, "setup.noise.detail.groups[].learning_rate": float,
    "setup.noise.detail.groups[].seeds": float,
}
FITTED_SECTION_OPTIONAL = {
    "setup.inference.video_tokens": (float, None), "setup.noise.detail": dict, "setup.noise.detail.groups": list,
    "setup.noise.detail.groups[]": dict, "heldout.hyperparameters[].measured_batch_tokens": (float, None),
    "heldout.loss[].predicted_loss": (float, None), "heldout.loss[].prediction_interval": (list, None),
    "heldout.loss[].prediction_interval[]": float, "heldout.loss[].relative_error": (float, None),
    "heldout.loss[].relative_error_resamples": (list, None), "heldout.loss[].relative_error_resamples[]": (float, None),
    "heldout.loss[].replicates": float, "compute_optimal.empirical_precise": dict,
    "compute_optimal.empirical_conventional": dict, "compute_optimal.exponent_gap": (dict, None),
}
_REDUCTIONS = {key: kind for name in ("model_size_reduction", "inference_flops_reduction") for key, kind in (
    (name, dict), (f"{name}.value", float), (f"{name}.interval", (list, None)), (f"{name}.interval[]", (float, None)))}
_COMPUTE_OPTIMAL_LAW = {"parameters": dict, "parameters.k": float, "parameters.a": float, "intervals": (dict, None),
                        "intervals{}": (list, None), "intervals{}[]": (float, None)}
#: Sections whose keys depend on their ``status`` (``pipeline.formats.conditional_key_problem``).
STATUS_KEYS = {
    "comparison": [({"status": "computed"}, {"target_flops": float, **_REDUCTIONS})],
    "recipe_curves": [({"status": "computed"}, {"cells": list, "cells[]": dict, "cells[].batch_clips": float,
                                                "cells[].learning_rate": float, "cells[].conventional": bool})],
    "recipe_curves.cells[]": [({"status": "computed"}, {"dropped_resamples": float, "points": list, "loss_law": dict})],
    "compute_optimal.precise": [({"status": "fitted"}, _COMPUTE_OPTIMAL_LAW)],
    "compute_optimal.conventional": [({"status": "fitted"}, _COMPUTE_OPTIMAL_LAW)],
}


def read_laws(path: str | Path) -> dict:
    """The laws document at ``path``; ``LawsFileError`` when it cannot be read or fails ``check_laws_document``."""
    path = Path(path)
    return check_laws_document(read_json(path, f"laws file {path}", LawsFileError), path)


def check_laws_document(document, path: str | Path) -> dict:
    """``document`` if it is a ``LAWS_SCHEMA`` document with the keys its readers rely on, each of its kind
    (``REQUIRED_KEYS`` and ``OPTIONAL_KEYS`` where present; unless ``origin`` is ``paper``, ``FITTED_KEYS``, the keys
    inside the sections, ``FITTED_SECTION_KEYS``, and those of each section's status, ``STATUS_KEYS``; every
    law by ``law_record_problem``). Refused with ``LawsFileError`` naming ``path`` and the first key missing or of
    another kind, by its place (``'grids[2].cells[0].learning_rate'``)."""
    if not isinstance(document, dict) or document.get("schema") != LAWS_SCHEMA:
        raise LawsFileError(f"laws file {path} is not an {LAWS_SCHEMA} document (schema {document.get('schema') if isinstance(document, dict) else None!r}); "
                            "refit it with python -m analysis.fit")
    origin = document.get("origin", "fitted")
    if origin not in ("fitted", "paper"):
        raise LawsFileError(f"laws file {path}: 'origin' is {origin!r}, expected 'fitted' or 'paper'; "
                            "refit it with python -m analysis.fit")
    fitted = origin == "fitted"
    required = {**REQUIRED_KEYS, **(FITTED_KEYS if fitted else {}), **(FITTED_SECTION_KEYS if fitted else {})}
    problem = (key_problem(document, required, {**OPTIONAL_KEYS, **(FITTED_SECTION_OPTIONAL if fitted else {})})
               or (conditional_key_problem(document, STATUS_KEYS) if fitted else None))
    if problem:
        raise LawsFileError(f"laws file {path}: {problem}; refit it with python -m analysis.fit")
    for name, record in document["laws"].items():
        problem = law_record_problem(name, record, fitted)
        if problem:
            raise LawsFileError(f"laws file {path}: {problem}; refit it with python -m analysis.fit")
    return document


#: Keys of every law record, and of a fitted one (``status`` fitted), with their kinds; those read where present (a key
#: below one of them required where that one is there).
LAW_KEYS = {"status": str}
FITTED_LAW_KEYS = {"form": str, "parameters": dict, "parameters{}": float, "fit.on_bound": list, "fit.points": float,
                   "fit.rmse_log": (float, None), "bootstrap.at_constraint": dict, "bootstrap.failed": float,
                   "bootstrap.on_bound": float, "bootstrap.intervals_with_dropped": dict}
FITTED_LAW_OPTIONAL = {
    "reason": str, "edge_points": (dict, None), "edge_points.edge_batch_tokens": (float, None), "fit": dict,
    "intervals": (dict, None), "intervals{}": (list, None), "intervals{}[]": (float, None), "bootstrap": (dict, None),
    "bootstrap.samples": (list, None), "bootstrap.samples[]": list, "bootstrap.samples[][]": (float, None),
    "bootstrap.intervals_with_dropped{}": (list, None), "bootstrap.intervals_with_dropped{}[]": (float, None),
}


def law_record_problem(name: str, record, fitted_document: bool = True) -> str | None:
    """What is wrong with the record of law ``name`` for ``LawSet``, or ``None``: an object with a ``status``; a fitted
    one with a known ``form``, a number for each of its parameters, and bootstrap samples of one value per parameter
    (and its ``fit`` when ``analysis.fit`` wrote it: ``fitted_document``)."""
    where = f"laws.{name}"
    if not isinstance(record, dict):
        return f"{where!r} is {describe_value(record)}, expected an object"
    fitted = record.get("status") == "fitted"
    required = {**LAW_KEYS, **(FITTED_LAW_KEYS if fitted else {}), **({"fit": dict} if fitted and fitted_document else {})}
    problem = key_problem(record, required, FITTED_LAW_OPTIONAL, where)
    if problem or not fitted:
        return problem
    short = next((name for name, bounds in (record.get("intervals") or {}).items()
                  if isinstance(bounds, list) and len(bounds) != 2), None)
    if short is not None:
        return f"'{where}.intervals.{short}' has {len(record['intervals'][short])} values, expected 2 (low, high)"
    if record["form"] not in FORMS:
        return f"'{where}.form' is {record['form']!r}, not one of the known forms ({', '.join(FORMS)})"
    names = FORMS[record["form"]].parameter_names
    missing = [parameter for parameter in names if parameter not in record["parameters"]]
    if missing:
        return f"lacks the key '{where}.parameters.{missing[0]}' (form {record['form']} has {', '.join(names)})"
    samples = (record.get("bootstrap") or {}).get("samples") or []
    wrong = next((i for i, row in enumerate(samples) if len(row) != len(names)), None)
    if wrong is not None:
        return (f"'{where}.bootstrap.samples[{wrong}]' has {len(samples[wrong])} values, expected one per parameter of "
                f"form {record['form']} ({len(names)})")
    return None


class LawSet:
    """Evaluate the laws of one document (fitted or published)."""

    def __init__(self, document: Mapping, level: float | None = None, seed: int = 0):
        self.document = document
        self.origin = document.get("origin", "fitted")
        self.laws = document.get("laws", {})
        setup = document.get("setup", {})
        self.flop_model = FlopModel.from_dict(setup["flop_model"])
        self.context_tokens = float(setup.get("context_tokens", self.flop_model.context_tokens))
        self.inference = InferenceSetup(**setup["inference"]).resolved(int(self.context_tokens))
        self.noise_relative_std = run_relative_std(setup.get("noise")) or 0.0  # a prediction interval is one run's
        self.noise_dof = noise_degrees_of_freedom(setup.get("noise"))  # None: the noise treated as known
        self.level = float(level if level is not None else document.get("config", {}).get("confidence_level", 0.95))
        self.seed = seed
        self._solver: AllocationSolver | None = None

    # ------------------------------------------------------------------ laws
    def has(self, name: str) -> bool:
        return self.laws.get(name, {}).get("status") == "fitted"

    def law(self, name: str) -> Mapping:
        record = self.laws.get(name)
        if record is None or record.get("status") != "fitted":
            reason = (record or {}).get("reason", "absent from the laws file")
            raise LawsFileError(f"law {name!r} is not available: {reason}")
        return record

    def evaluate(self, name: str, **inputs) -> np.ndarray:
        record = self.law(name)
        return get_form(record["form"]).predict(record["parameters"], **inputs)

    def samples(self, name: str) -> np.ndarray | None:
        """Bootstrap parameter samples ``(R, p)`` in published units, or None."""
        record = self.laws.get(name, {})
        boot = record.get("bootstrap") or {}
        samples = boot.get("samples")
        if not samples:
            return None
        return np.asarray(samples, dtype=float)

    def evaluate_samples(self, name: str, **inputs) -> np.ndarray | None:
        """The law at ``inputs`` for every bootstrap sample: ``(R,) + shape``, or None."""
        samples = self.samples(name)
        if samples is None:
            return None
        form = get_form(self.law(name)["form"])
        return np.stack([form.predict(dict(zip(form.parameter_names, row)), **inputs) for row in samples])

    # ------------------------------------------------------------------ losses
    def loss(self, n_billions, t_billions, which: str = "optimal") -> np.ndarray:
        return self.evaluate(f"loss_{which}", N=n_billions, T=t_billions)

    def loss_prediction(self, n_billions: float, t_billions: float, which: str = "optimal", replicates: int = 1) -> dict:
        """Point prediction, confidence interval of the law and prediction interval of a measured loss: one run's, or
        the mean of ``replicates`` runs' (their noise shrinks by sqrt(replicates))."""
        if replicates < 1:
            raise ValueError(f"replicates must be at least 1, got {replicates}")
        name = f"loss_{which}"
        value = float(self.loss(n_billions, t_billions, which))
        record = {"value": value, "interval": None, "prediction_interval": None, "level": self.level}
        noise_std = mean_noise(self.noise_relative_std, replicates)
        samples = self.evaluate_samples(name, N=np.array(n_billions), T=np.array(t_billions))
        rng = np.random.default_rng(self.seed)
        if samples is not None and samples.size >= 2:
            samples = samples[np.isfinite(samples)]
            record["interval"] = list(percentile_interval(samples, self.level))
            sigma = noise_std * (std_factors(self.noise_dof, samples.size, self.seed) if self.noise_dof is not None else 1.0)
            noisy = samples * (1 + sigma * rng.standard_normal(samples.size))
            record["prediction_interval"] = list(percentile_interval(noisy, self.level))
        elif noise_std > 0:
            half = noise_quantile(self.level, self.noise_dof) * noise_std * value
            record["prediction_interval"] = [value - half, value + half]
        return record

    # ------------------------------------------------------------------ hyperparameters
    def batch_tokens(self, n_billions, t_billions) -> np.ndarray:
        return self.evaluate("batch_size", N=n_billions, T=t_billions)

    def predicts_batch(self) -> bool:
        """Whether ``predicted_batch_tokens`` has an answer: a fitted batch-size law or an edge holding its optima."""
        return self.has("batch_size") or self._batch_edge() is not None

    def _batch_edge(self) -> float | None:
        return (self.laws.get("batch_size", {}).get("edge_points") or {}).get("edge_batch_tokens")

    def predicted_batch_tokens(self, n_billions: float, t_billions: float) -> tuple[float, str]:
        """``(B tokens, source)``: the batch-size law's prediction (source ``law``), or, where that law could not be
        fitted because most measured optima sit at one edge of the grid, that edge's batch (``grid_edge``)."""
        if self.has("batch_size"):
            return float(self.batch_tokens(n_billions, t_billions)), "law"
        edge = self._batch_edge()
        if edge is None:
            self.law("batch_size")  # raises with the reason it was not fitted
        return float(edge), "grid_edge"

    def learning_rate(self, n_billions, t_billions) -> np.ndarray:
        return self.evaluate("learning_rate", N=n_billions, T=t_billions)

    def hyperparameter_interval(self, name: str, n_billions: float, t_billions: float) -> list[float] | None:
        samples = self.evaluate_samples(name, N=np.array(n_billions), T=np.array(t_billions))
        if samples is None or samples.size < 2:
            return None
        return list(percentile_interval(samples, self.level))

    # ------------------------------------------------------------------ compute
    def flops_per_token(self, parameters) -> np.ndarray:
        return self.flop_model.flops_per_token(parameters)

    def tokens_for_budget(self, parameters: float, flops: float) -> float:
        return float(flops / self.flops_per_token(parameters))

    def inference_flops(self, parameters) -> np.ndarray:
        return inference_flops(parameters, self.flop_model.width_rule, self.inference)

    def solver(self) -> AllocationSolver:
        if self._solver is None:
            self._solver = AllocationSolver(self.flop_model, (1e2, 1e16))
        return self._solver

    def optimal_parameters(self, flops: float, which: str = "optimal", max_parameters: float | None = None) -> float:
        """Compute-optimal N (raw) at ``flops``: the loss law minimised, or the published power law for the paper."""
        compute = self.document.get("compute_optimal", {})
        if self.origin == "paper" and which == "optimal":
            p = compute["precise"]["parameters"]
            value = p["k"] * flops ** p["a"]
            return float(min(value, max_parameters) if max_parameters else value)
        if self.origin == "paper":
            raise LawsFileError("the paper published no conventional loss law; only N_opt = 4.04e9 at 1e22 FLOPs")
        name = f"loss_{which}"
        parameters = np.array([[self.law(name)["parameters"][k] for k in ("a", "alpha", "b", "beta", "L_inf")]])
        n, _, _ = self.solver().optimal(loss_law_callable(parameters), np.array([[flops]]), max_parameters)
        return float(n[0, 0])

    def optimal_parameters_samples(self, flops: float, which: str = "optimal", max_parameters: float | None = None) -> np.ndarray | None:
        samples = self.samples(f"loss_{which}")
        if samples is None or self.origin == "paper":
            return None
        n, _, _ = self.solver().optimal(loss_law_callable(samples), np.full((len(samples), 1), flops), max_parameters)
        return n[:, 0]

