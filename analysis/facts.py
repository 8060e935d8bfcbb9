"""The facts document: every number, interval, flag and verdict the reports show, computed once.

``python -m analysis.facts --laws results/laws.json --out results/facts.json --scorecard results/scorecard.json
[--runs results/runs.csv] [--heldout results/heldout.json] [--protocol-spread FILE] [--caption-conditioning FILE]
[--caption-match FILE] [--compute-optimal-protocol-spread FILE] [--compute-optimal-caption-conditioning FILE]
[--compute-optimal-caption-match FILE] [--performance FILE] [--manifest FILE] [--batch-axis FILE] [--benchmarks DIR
[--benchmark-files FILE ...]]``

The first three evaluation files are the largest held-out model's, the ``--compute-optimal-*`` ones the
compute-optimal held-out run's (``results/evaluation/{largest,compute_optimal}/``).

``facts.json`` top-level keys: ``schema``, ``provenance``, ``sources``, ``confidence_level``, ``verdict_rule``,
``paper`` (the published numbers the reports set beside ours), ``design``, ``noise``, ``claims`` (per claim:
verdict, tests, evidence; ``analysis.claims``), ``verdicts`` (claim -> verdict), ``laws_table``,
``fit_errors``, ``comparison``, ``recipe_curves``, ``laws``, ``compute_optimal``, ``baselines`` and
``heldout_predictions`` (from ``laws.json``, without points and bootstrap samples), ``heldout``,
``empirical_compute_optimal``, ``sensitivity``, ``data_reuse``, ``captions``, ``performance``, ``batch_axis``
(``analysis.batch_axis.summary``),
``stage_timings`` (the benchmark files of ``--benchmark-files``, or all of ``--benchmarks``), ``figures`` (what the figures draw beyond the laws), ``open_questions``
(``analysis.open_questions``), ``notes`` (benchmark files that could not be read, and the like; also printed to
stderr as warnings).

Refused before anything is written (exit status 2, the message naming the option and the file): a laws file that
``analysis.law_set.read_laws`` refuses; an input given that cannot be read, is not a JSON object, is another kind of
file (its ``schema``, ``kind`` or ``format``), lacks a key the facts read or holds one of another type
(``INPUT_FORMATS``); a runs table that ``analysis.runs.load_runs`` refuses; an ``--out`` or ``--scorecard`` that is
a folder, lies below a file, is one of the inputs or is named twice. The benchmark files are optional: one that
cannot be read is a note.

``scorecard.json`` is the reader-facing subset: ``performance``, ``design``, ``loss_law``, ``heldout``,
``empirical_nopt_fitted``, ``claim_3c``, ``captions`` (per evaluated model), ``verdicts`` (``analysis.compare`` reads ``verdicts``).
Rates, errors and noise are fractions everywhere; the confidence level is the fit config's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.data.shards import MANIFEST_FORMAT
from dit.provenance import provenance
from pipeline.formats import conditional_key_problem, describe_value, key_problem, read_json

from analysis import batch_axis, claims, measurements, paper
from analysis.heldout import SCHEMA as HELDOUT_SCHEMA
from analysis.law_set import LawSet, LawsFileError, read_laws
from analysis.open_questions import derived_optimal_parameters, open_questions
from analysis.optima import SizeGrid, find_optima
from analysis.runs import RunsTableError, load_runs, noise_degrees_of_freedom, run_relative_std
from analysis.sensitivity import heatmap_spreads, sensitivity
from analysis.verdicts import RULE

SCHEMA = "analysis.facts/1"
SCORECARD_SCHEMA = "analysis.scorecard/1"
CLAIMS = ("claim_1", "claim_2", "claim_3a_batch_size", "claim_3a_learning_rate", "claim_3b", "claim_3c", "claim_4")
#: Budgets (FLOPs) of the paper's compute-optimal figure: from the fitting runs' compute to past the target.
PAPER_FIGURE_FLOPS = (1e18, 2 * paper.TARGET_FLOPS)
INPUTS = {"heldout": "held-out evaluation", "protocol_spread": "validation-protocol spread",
          "caption_conditioning": "caption conditioning", "caption_match": "caption match",
          "compute_optimal_protocol_spread": "validation-protocol spread of the compute-optimal run",
          "compute_optimal_caption_conditioning": "caption conditioning of the compute-optimal run",
          "compute_optimal_caption_match": "caption match of the compute-optimal run",
          "performance": "grid performance", "manifest": "prepared data manifest", "batch_axis": "batch-axis reading"}


def build_facts(document: dict, inputs: dict, table=None, benchmarks: str | None = None,
                notes: list[str] | None = None, benchmark_files: list[str] | None = None) -> dict:
    """The facts document from the laws document and the other inputs (``inputs``: name -> parsed JSON or None);
    the stage timings from ``benchmark_files`` under the folder ``benchmarks`` (all its files when None)."""
    notes = list(notes or [])
    level = float(document["config"]["confidence_level"])
    noise_std = (document["setup"].get("noise") or {}).get("relative_std") or None
    sens = sensitivity(document, level)
    design = measurements.design(document)
    heldout = measurements.heldout(document, inputs.get("heldout"), level)
    validation_weights = validation_weights_of(table)
    facts = {
        "schema": SCHEMA, "confidence_level": level, "verdict_rule": RULE, "paper": published_numbers(),
        "design": design,
        "noise": measurements.noise(document, validation_weights, noise_degrees_of_freedom(document["setup"].get("noise") or {}),
                                    inputs.get("protocol_spread")),
        "claims": _claims(document, inputs, sens, design, heldout, noise_std, level),
        "laws_table": measurements.laws_table(document), "fit_errors": measurements.fit_errors(document),
        "comparison": document.get("comparison", {}), "recipe_curves": document.get("recipe_curves", {}),
        "laws": {name: _law_summary(record) for name, record in document["laws"].items()},
        "compute_optimal": {name: record for name, record in document.get("compute_optimal", {}).items() if name != "exponent_gap"},
        "baselines": document.get("baselines", []),
        "heldout_predictions": {key: document.get("heldout", {}).get(key, []) for key in ("loss", "hyperparameters")},
        "heldout": heldout, "empirical_compute_optimal": measurements.empirical_compute_optimal(document),
        "sensitivity": sens,
        "data_reuse": measurements.data_reuse(table, inputs["manifest"], document) if table is not None and inputs.get("manifest") else None,
        "captions": _captions(inputs),
        "performance": measurements.performance(inputs.get("performance")),
        "batch_axis": batch_axis.summary(inputs.get("batch_axis")),
        "stage_timings": measurements.stage_timings(benchmarks, notes, benchmark_files),
        "figures": figure_data(document),
        "open_questions": open_questions(document.get("compute_optimal", {}).get("exponent_gap")),
        "setup": {key: document["setup"].get(key) for key in ("context_tokens", "flop_model_description", "conventional_cell",
                                                               "bootstrap", "notes")},
    }
    facts["verdicts"] = {name: facts["claims"][name]["verdict"] for name in CLAIMS}
    facts["notes"] = notes
    return facts


def _captions(inputs: dict) -> dict:
    """The caption checks of the largest held-out model (top level, the issue's target) and, under
    ``compute_optimal``, of the compute-optimal held-out run when its evaluations were given."""
    out = measurements.captions(inputs.get("caption_conditioning"), inputs.get("caption_match"), inputs.get("protocol_spread"))
    names = ("caption_conditioning", "caption_match", "protocol_spread")
    if any(inputs.get(f"compute_optimal_{name}") for name in names):
        out["compute_optimal"] = measurements.captions(*(inputs.get(f"compute_optimal_{name}") for name in names))
    return out


def _law_summary(record: dict) -> dict:
    """A law's record without its points and bootstrap samples (what the tables and figures show)."""
    keep = ("status", "form", "formula", "parameters", "intervals", "warning", "reason", "description", "edge_points", "conventional_cell")
    summary = {key: record[key] for key in keep if key in record}
    if "fit" in record:
        summary["fit"] = {key: record["fit"][key] for key in ("on_bound", "guard_bounds", "points", "rmse_log", "mse") if key in record["fit"]}
    return summary


def _claims(document, inputs, sens, design, heldout, noise_std, level) -> dict:
    # Claim 1 fits cells (the mean of their replicate seeds); claims 3b and 4 compare held-out cells, each the mean of
    # heldout.seeds_per_cell runs (the claims divide one run's noise by the square root of that count).
    run_std = run_relative_std(document["setup"].get("noise")) or None
    return {
        "claim_1": claims.loss_law(document, noise_std),
        "claim_2": claims.sensitivity(sens),
        "claim_3a_batch_size": claims.hyperparameter_law(document, "batch_size", design["b_edge_fraction"]),
        "claim_3a_learning_rate": claims.hyperparameter_law(document, "learning_rate", design["lr_edge_fraction"]),
        "claim_3b": claims.heldout_cells(inputs.get("heldout"), run_std, level, document["setup"]["context_tokens"]),
        "claim_3c": claims.recipe_comparison(document),
        "claim_4": claims.heldout_losses(heldout, run_std, level),
    }


def published_numbers() -> dict:
    """The paper's numbers the reports show (``analysis.paper``), with the heatmaps' spreads."""
    return {
        "loss_optimal": paper.LOSS_OPTIMAL, "batch_size": paper.BATCH_SIZE, "learning_rate": paper.LEARNING_RATE,
        "compute_optimal_precise": paper.COMPUTE_OPTIMAL_PRECISE, "compute_optimal_empirical": paper.COMPUTE_OPTIMAL_EMPIRICAL,
        "fit_mse": paper.FIT_MSE, "target_flops": paper.TARGET_FLOPS, "optimal_size_at_target": paper.OPTIMAL_SIZE_AT_TARGET,
        "conventional_size_at_target": paper.CONVENTIONAL_SIZE_AT_TARGET, "model_size_reduction": paper.MODEL_SIZE_REDUCTION,
        "inference_cost_reduction": paper.INFERENCE_COST_REDUCTION, "heldout_errors": paper.HELDOUT_ERRORS,
        "heldout_budget_flops": paper.HELDOUT_BUDGET_FLOPS, "heldout_optimal_size": paper.HELDOUT_OPTIMAL_SIZE,
        "exponent_gap_optimal": paper.EXPONENT_GAP_OPTIMAL, "exponent_gap_fixed": paper.EXPONENT_GAP_FIXED,
        "sizes_billions": [min(paper.FITTING_SIZES), max(paper.HELDOUT_SIZES)],
        "tokens_billions": [min(paper.FITTING_TOKENS), paper.HELDOUT_TOKENS / 1e9],
        "fitting_sizes_billions": paper.FITTING_SIZES, "heldout_sizes_billions": paper.HELDOUT_SIZES,
        "heatmap_size_billions": paper.HEATMAP_SIZE, "heatmap_shape": [len(paper.HEATMAP_BATCH_TOKENS), len(paper.HEATMAP_LEARNING_RATES)],
        "heatmap_spreads": heatmap_spreads(paper.HEATMAPS), "context_tokens": paper.CONTEXT_TOKENS, "source": paper.SOURCE,
    }


def figure_data(document: dict) -> dict:
    """What the figures draw that the laws file does not hold as such: the heatmaps of the largest held-out (or fitting)
    size at two budgets with the interpolated and predicted optima, the paper's heatmaps' interpolated optima, and
    the N_opt that minimising the published L(N, T) under C = 6NT gives."""
    grids = document.get("grids", [])
    laws = LawSet(document)
    config = document["config"]
    budgets = np.asarray(document["setup"]["budgets_tokens"])
    heldout = [g for g in grids if g["role"] == "heldout"]
    grid = (heldout or [g for g in grids if g["role"] == "fitting"] or [None])[-1]
    panels = []
    for t in sorted({len(budgets) // 2, len(budgets) - 1}) if grid else []:
        panels.append(_heatmap_panel(grid, t, float(budgets[t]), laws, config))
    flops = np.geomspace(PAPER_FIGURE_FLOPS[0], PAPER_FIGURE_FLOPS[1], 100)
    return {"heatmaps": {"size": grid["size"] if grid else None, "role": grid["role"] if grid else None, "panels": panels},
            "paper_heatmaps": _paper_heatmap_optima(),
            "paper_compute_optimal": {"flops": list(flops), "parameters_6n": list(derived_optimal_parameters(flops, "6n"))}}


def _heatmap_panel(grid: dict, t: int, tokens: float, laws: LawSet, config: dict) -> dict:
    cells = grid["cells"]
    batches = sorted({c["batch_tokens"] for c in cells})
    rates = sorted({c["learning_rate"] for c in cells})
    matrix = np.full((len(batches), len(rates)), np.nan)
    for cell, row in zip(cells, grid["losses"]):
        if row[t] is not None:
            matrix[batches.index(cell["batch_tokens"]), rates.index(cell["learning_rate"])] = row[t]
    size_grid = SizeGrid(grid["size"], grid["N"] * 1e9, [c["run_id"] for c in cells], np.array([c["learning_rate"] for c in cells]),
                         np.array([c["batch_tokens"] for c in cells]), np.array([c["batch_clips"] for c in cells], dtype=float),
                         np.array([[np.nan if row[t] is None else row[t]] for row in grid["losses"]]), float("nan"))
    optimum = find_optima(size_grid, None, config["optimum_method"], config["optimum_band"], config["optimum_max_gain"])
    predicted = None
    if laws.predicts_batch() and laws.has("learning_rate"):
        batch, source = laws.predicted_batch_tokens(grid["N"], tokens / 1e9)
        predicted = {"batch_tokens": batch, "batch_source": source, "learning_rate": float(laws.learning_rate(grid["N"], tokens / 1e9))}
    return {"tokens": tokens, "batch_tokens": batches, "learning_rates": rates,
            "losses": [[None if not np.isfinite(v) else float(v) for v in row] for row in matrix],
            "interpolated": {"batch_tokens": float(optimum.batch_tokens[0, 0]), "learning_rate": float(optimum.learning_rate[0, 0])},
            "predicted": predicted}


def _paper_heatmap_optima() -> list[dict]:
    batches, rates = np.meshgrid(paper.HEATMAP_BATCH_TOKENS, paper.HEATMAP_LEARNING_RATES, indexing="ij")
    out = []
    for t_billions, values in sorted(paper.HEATMAPS.items()):
        grid = SizeGrid("paper", paper.HEATMAP_SIZE * 1e9, [str(i) for i in range(batches.size)], rates.ravel(), batches.ravel(),
                        batches.ravel() / paper.CONTEXT_TOKENS, np.asarray(values, float).reshape(-1, 1), float("nan"))
        optimum = find_optima(grid)
        out.append({"t_billions": t_billions, "interpolated": {"batch_tokens": float(optimum.batch_tokens[0, 0]),
                                                               "learning_rate": float(optimum.learning_rate[0, 0])},
                    "predicted": {"batch_tokens": float(paper.optimal_batch_tokens(paper.HEATMAP_SIZE, t_billions)),
                                  "learning_rate": float(paper.optimal_learning_rate(paper.HEATMAP_SIZE, t_billions))}})
    return out


def scorecard(facts: dict) -> dict:
    """The reader-facing subset of the facts (module docstring)."""
    design, loss = facts["design"], facts["claims"]["claim_1"]
    l_inf = loss.get("l_inf") or {}
    interval = l_inf.get("interval") or [None, None]
    heldout = facts["heldout"]
    return {
        "schema": SCORECARD_SCHEMA,
        "performance": {k: v for k, v in (facts["performance"] or {}).items()
                        if k in ("grid_model_flops", "grid_job_seconds", "matmul_flops_per_s", "grid_fraction_of_matmul", "members_per_job")} or None,
        "design": {"fitting_sizes": design["fitting_sizes"], "n_span": design["n_span"], "t_span_min": design["t_span_min"],
                   "b_edge_fraction": design["b_edge_fraction"], "lr_edge_fraction": design["lr_edge_fraction"],
                   "noise_relative_std": facts["noise"]["relative_std"],
                   "noise_relative_std_interval": facts["noise"].get("relative_std_interval"),
                   "noise_degrees_of_freedom": facts["noise"]["degrees_of_freedom"]},
        "loss_law": {"l_inf": l_inf.get("value"), "l_inf_low": interval[0], "l_inf_high": interval[1], "on_bound": l_inf.get("on_bound")},
        "heldout": {"sizes": heldout["sizes"], "mean_abs_error": heldout["mean_abs_error"], "covered": heldout["covered"],
                    "points": heldout["with_interval"], "expected_mean_abs_error": heldout.get("expected_mean_abs_error")},
        "empirical_nopt_fitted": facts["empirical_compute_optimal"]["fitted"],
        "claim_3c": _claim_3c_card(facts),
        "captions": _captions_card(facts["captions"]),
        "verdicts": facts["verdicts"],
    }


def _captions_card(captions: dict) -> dict:
    """Per evaluated model (``largest``, ``compute_optimal``): its run, the caption gain (a fraction of the loss)
    and its multiple of the validation protocol's spread, and the caption-match rates with their verdicts."""
    card = {}
    for model, block in (("largest", captions), ("compute_optimal", captions.get("compute_optimal"))):
        if not block:
            continue
        gain, rates = block.get("gain") or {}, (block.get("match") or {}).get("rates") or {}
        card[model] = {
            "run_id": (block.get("run") or {}).get("run_id"),
            "tokens_per_parameter": (block.get("run") or {}).get("tokens_per_parameter"),
            "gain_relative": gain.get("relative"), "gain_multiple_of_protocol_spread": gain.get("multiple"),
            "meets_target": gain.get("meets_target"),
            **{f"{which}_rate": (rates.get(which) or {}).get("rate") for which in ("colour", "direction")},
            **{f"{which}_verdict": (rates.get(which) or {}).get("verdict") for which in ("colour", "direction")},
            "contrasts": {c["condition"]: {"relative": c["relative"], "multiple_of_protocol_spread": c.get("multiple"),
                                           "share_of_gain": c.get("share_of_gain")} for c in block.get("contrasts", [])},
        }
    return card


def _claim_3c_card(facts: dict) -> dict:
    curves = facts["recipe_curves"]
    cell = next((c for c in curves.get("cells", []) if c["conventional"]), None)
    points = []
    for point in (cell or {}).get("points", []):
        size, cost = point["model_size_reduction"], point["inference_flops_reduction"]
        points.append({"flops": point["flops"], "model_size_reduction": size["value"], "low": (size["interval"] or [None, None])[0],
                       "high": (size["interval"] or [None, None])[1], "inference_flops_reduction": cost["value"],
                       "inference_low": (cost["interval"] or [None, None])[0], "inference_high": (cost["interval"] or [None, None])[1]})
    cell_key = {k: cell[k] for k in ("batch_clips", "learning_rate")} if cell else None
    return {"cell": cell_key, "points": points, "verdict": facts["claims"]["claim_3c"]["verdict"],
            "verdict_flops": facts["claims"]["claim_3c"].get("target_flops")}


class FactsInputError(ValueError):
    """An input file given to ``analysis.facts`` cannot be read or is not what its option asks for; the message names it."""


class FactsFileError(ValueError):
    """A facts file cannot be read or is not a facts document of ``SCHEMA``; the message names it."""


def _rate_keys(block: str) -> dict:
    """Keys of a caption-match rate (``dit.caption_match``) under ``block``, each required where the rate is there."""
    return {f"{block}.{which}.{key}": kind for which in ("colour", "direction")
            for key, kind in (("rate", float), ("interval", list), ("interval[]", float), ("chance", float),
                              ("count", float), ("of", float))}


def _part_keys(part: str) -> dict:
    """Keys of a performance part (``pipeline.performance``), each required where the part is there."""
    return {f"parts.{part}.model_flops": float, f"parts.{part}.seconds": float}


#: What each JSON input of ``INPUTS`` must be (the ``compute_optimal_*`` ones as their namesakes): the key and value
#: by which its writer names its kind (``schema``, ``kind``, ``format``; refused when different, and when absent where
#: required); the keys the facts read, with their kinds (``float``: any number; dotted, ``[]`` for each element of a
#: list and ``{}`` for each value of an object: ``pipeline.formats.key_problem``); and those they read where present,
#: with the kinds they may have (``None``: null). A required key below an optional one is required where that is there.
INPUT_FORMATS = {
    "heldout": (("schema", (HELDOUT_SCHEMA,), True),
                {"groups": list, "groups[]": dict, "groups[].kind": str, "groups[].size": str},
                {"groups[].status": str, "groups[].missing_runs": list, "groups[].margin_resamples": (list, None),
                 "groups[].margin_resamples[]": (float, None), "groups[].relative_error_resamples": (list, None),
                 "groups[].relative_error_resamples[]": (float, None),
                 "groups[].predicted_loss.prediction_interval": (list, None),
                 "groups[].predicted_loss.prediction_interval[]": float}),
    "protocol_spread": (("kind", ("validation_loss_spread",), False), {"relative_std": float},
                        {"seeds": (list,), "run": (dict, None)}),
    "caption_conditioning": (("kind", ("caption_conditioning",), False),
                             {"differences": dict, "differences{}": dict, "differences{}.mean": float,
                              "differences{}.relative": float},
                             {"run": (dict, None), "run.non_embedding_parameters": float, "run.tokens": float,
                              "contrasts": (dict, None), "contrasts{}": dict, "validation": (dict, None)}),
    "caption_match": (None, {"samples": dict, **_rate_keys("samples"), **_rate_keys("reference")},
                      {"reference": (dict, None), **{f"{block}.{which}": (dict, None) for block in ("samples", "reference")
                                                     for which in ("colour", "direction")},
                       "confidence_level": (float, None)}),
    "performance": (("status", ("measured", "not measured"), False),
                    {"grid_model_flops": float, "grid_job_seconds": float, **_part_keys("training"),
                     **_part_keys("validation")},
                    {"matmul": (dict, None), "parts": (dict, None), "parts.training": dict, "parts.validation": dict,
                     "by_shape": (list, None), "by_shape[]": dict}),
    "manifest": (("format", (MANIFEST_FORMAT,), True), {"counts": dict, "counts.train_clips": float}, {}),
    "batch_axis": (("schema", (batch_axis.SCHEMA,), True),
                   {"sizes": list, "sizes[]": dict, "sizes[].size": str, "sizes[].batch_clips": list,
                    "sizes[].batch_clips[]": float, "sizes[].points": list, "sizes[].points[]": dict,
                    "sizes[].points[].batches": list, "sizes[].turned_at_tokens": list}, {}),
}
#: Keys of a held-out file's groups (``analysis.heldout``) that depend on the group's status and kind
#: (``pipeline.formats.conditional_key_problem``).
HELDOUT_GROUP_KEYS = {"groups[]": [
    ({"status": "evaluated"}, {"tokens": float, "predicted_loss": dict, "predicted_loss.value": float,
                               "relative_error": float}),
    ({"status": "evaluated", "kind": "hyperparameters"}, {
        "cells": list, "cells[]": dict, "cells[].batch_clips": float, "cells[].learning_rate": float,
        "cells[].loss": (float, None), "measured_optimum": dict, "measured_optimum.loss": float, "predicted_cell": dict,
        "predicted_cell.batch_tokens": float, "predicted_cell.learning_rate": float,
        "predicted_cell.measured_loss": (float, None)}),
    ({"status": "evaluated", "kind": "compute_optimal"}, {"measured_loss": float}),
]}


def read_input(name: str, path: str) -> dict:
    """The JSON input ``name`` (a key of ``INPUTS``) at ``path``; ``FactsInputError`` naming the option, the file and the
    key when it cannot be read, is not a JSON object, is another kind of file, or lacks a key or holds one of another
    kind (``INPUT_FORMATS``; for a held-out file, ``HELDOUT_GROUP_KEYS`` too)."""
    where = f"--{name.replace('_', '-')} {path}"
    try:
        document = read_json(path, f"the {INPUTS[name]} file", FactsInputError)
    except FactsInputError as error:
        raise FactsInputError(f"{where}: {error}") from None
    if not isinstance(document, dict):
        raise FactsInputError(f"{where}: the {INPUTS[name]} file is {describe_value(document)}, expected a JSON object")
    marker, keys, optional = INPUT_FORMATS[name.removeprefix("compute_optimal_")]
    if marker is not None:
        key, values, required = marker
        if document.get(key) not in values and (required or key in document):
            raise FactsInputError(f"{where} is not a {INPUTS[name]} file: its {key!r} is {document.get(key)!r}, "
                                  f"expected {' or '.join(map(repr, values))}")
    if name == "performance" and document.get("status") == "not measured":  # no numbers, and why
        keys = {}
    problem = key_problem(document, keys, optional) or (
        conditional_key_problem(document, HELDOUT_GROUP_KEYS) if name == "heldout" else None)
    if problem:
        raise FactsInputError(f"{where}: {problem}")
    return document


def read_facts(path: str | Path) -> dict:
    """The facts document at ``path``; ``FactsFileError`` when it cannot be read or is not of ``SCHEMA``."""
    facts = read_json(path, f"facts {path}", FactsFileError)
    if not isinstance(facts, dict) or facts.get("schema") != SCHEMA:
        found = facts.get("schema") if isinstance(facts, dict) else type(facts).__name__
        raise FactsFileError(f"{path} is not a facts document of schema {SCHEMA} (found {found!r}); "
                             "write one with python -m analysis.facts")
    return facts


def missing_fact_message(path: str | Path, facts: dict, shown_by: str, missing: str) -> str:
    """Why a facts document of ``SCHEMA`` that lacks a fact (or holds one of another type) is refused: it was written by
    older code, at the commit named. ``shown_by``: who shows the fact ("the tables show")."""
    provenance_record = facts.get("provenance")
    version = provenance_record.get("code_version") if isinstance(provenance_record, dict) else None
    commit = (version.get("commit") if isinstance(version, dict) else None) or "unknown"
    return (f"{path} lacks a fact {shown_by} ({missing}): it was written by analysis.facts at commit {str(commit)[:12]}, "
            "before this code's facts; write it again with this code's python -m analysis.facts from its laws file "
            "(nothing was written)")


def validation_weights_of(table) -> str:
    """Which weights the runs' validation losses are of (``ema`` or ``raw``), as the runs table records it."""
    if table is None or "validation_weights" not in table.rows.columns:
        return "not recorded"
    return ", ".join(sorted(set(table.rows["validation_weights"].astype(str))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.facts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--laws", required=True, help="laws.json from analysis.fit")
    parser.add_argument("--out", required=True, help="facts JSON to write")
    parser.add_argument("--scorecard", help="scorecard JSON to write")
    parser.add_argument("--runs", help="runs table (for the data reuse of the grid runs)")
    for name, label in INPUTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=f"{label} JSON")
    parser.add_argument("--benchmarks", help="folder of Snakemake benchmark TSV files")
    parser.add_argument("--benchmark-files", nargs="+", metavar="FILE",
                        help="only these benchmark files (under --benchmarks): the jobs the facts come from")
    args = parser.parse_args(argv)
    try:
        check_output_files([args.out, args.scorecard],
                           [args.laws, args.runs, *(getattr(args, name) for name in INPUTS), *(args.benchmark_files or [])])
        document = read_laws(args.laws)
        inputs = {name: read_input(name, getattr(args, name)) if getattr(args, name) else None for name in INPUTS}
        table = load_runs(args.runs) if args.runs else None
    except (OutputPathError, LawsFileError, FactsInputError) as error:
        print(f"analysis.facts: error: {error}", file=sys.stderr)
        return 2
    except RunsTableError as error:
        print(f"analysis.facts: error: --runs {args.runs}: {error}", file=sys.stderr)
        return 2
    facts = build_facts(document, inputs, table, args.benchmarks, [], args.benchmark_files)
    for note in facts["notes"]:
        print(f"analysis.facts: warning: {note}", file=sys.stderr)
    sources = {"laws": args.laws, "runs": args.runs, "benchmarks": args.benchmarks, "benchmark_files": args.benchmark_files,
               **{name: getattr(args, name) for name in INPUTS}}
    facts["sources"] = {"paths": sources, "laws_provenance": {k: document.get("provenance", {}).get(k) for k in ("code_version", "config")}}
    facts["provenance"] = provenance(sources)
    atomic_write_json(args.out, facts)
    if args.scorecard:
        atomic_write_json(args.scorecard, {**scorecard(facts), "provenance": facts["provenance"]})
    print(f"wrote {args.out}" + (f" and {args.scorecard}" if args.scorecard else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
