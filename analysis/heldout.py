"""Held-out validation: predictions of the fitted laws against sizes (and budgets) they never saw.

Two uses:

* inside ``analysis.fit``: the held-out sizes' grid/heldout runs give measured optima per budget;
  each is compared with the precise law's prediction (with its prediction interval), the baselines'
  predictions, and the B_opt / LR_opt laws (``evaluate_heldout_grids``, ``baselines_table``);
* after the pipeline trained the runs that ``analysis.propose`` listed, the command
  ``python -m analysis.heldout --runs results/runs.csv --laws results/laws.json
  --proposal results/proposal.json --out results/heldout.json`` compares predicted and measured
  loss for each proposal group and says whether the predicted (B, LR) cell was the best one.
  Refused before any work (exit status 2, the message naming the file and the key): a runs table, laws file or
  proposal that cannot be read or is not of its format (``read_proposal``), and an ``--out`` that is a folder, lies
  below a file or is one of the inputs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.provenance import provenance
from pipeline.formats import ProposalFileError, read_proposal

from analysis.allocation import BILLION
from analysis.config import FitConfig, FitConfigError, config_from_dict
from analysis.law_set import LawSet, LawsFileError, read_laws
from analysis.optima import METHOD_NAMES, SizeGrid, find_optima
from analysis.resampling import RunNoise
from analysis.runs import RunsTable, RunsTableError, load_runs, same_learning_rate
from analysis.selection import cell_grid

#: The format of the output of ``python -m analysis.heldout``.
SCHEMA = "analysis.heldout/1"
LOSS_BASELINES = ("loss_optimal", "kaplan", "chinchilla_all_runs", "loss_conventional")


def _nearest(values, target: float) -> int:
    values = np.asarray(values, dtype=float)
    return int(np.argmin(np.abs(np.log(values) - np.log(target))))


def _cell_check(grid: SizeGrid, t: int, predicted_batch: float, predicted_rate: float) -> dict:
    """Nearest grid cell to the prediction (log space, per axis) vs the measured best cell at budget ``t``."""
    losses = grid.losses[:, t]
    present = np.isfinite(losses)
    batches = np.unique(grid.batch_tokens[present])
    rates = np.unique(grid.learning_rates[present])
    cell_b = batches[_nearest(batches, predicted_batch)]
    cell_r = rates[_nearest(rates, predicted_rate)]
    best = int(np.nanargmin(np.where(present, losses, np.nan)))
    match = present & (grid.batch_tokens == cell_b) & same_learning_rate(grid.learning_rates, cell_r)
    predicted_loss = float(np.min(losses[match])) if match.any() else None
    return {
        "predicted_cell": {"batch_tokens": float(cell_b), "learning_rate": float(cell_r), "measured_loss": predicted_loss},
        "best_cell": {"batch_tokens": float(grid.batch_tokens[best]), "learning_rate": float(grid.learning_rates[best]), "measured_loss": float(losses[best])},
        "predicted_cell_is_best": bool(match[best]),
        "predicted_cell_was_run": bool(match.any()),
        "predicted_cell_excess_loss": None if predicted_loss is None else float(predicted_loss / losses[best] - 1),
    }


def evaluate_heldout_grids(document: dict, grids: list[SizeGrid], budgets, config: FitConfig) -> dict:
    """Measured optima of held-out sizes vs every law's prediction (see module docstring)."""
    laws = LawSet(document, level=config.confidence_level, seed=config.seed)
    loss_records, hp_records = [], []
    for grid in grids:
        resampled = measurement_noise(laws, grid.replicates, config).losses(grid.replicates, grid.losses)
        optimum = find_optima(grid, resampled, config.optimum_method, config.optimum_band, config.optimum_max_gain)
        for t, tokens in enumerate(budgets):
            if optimum.method[0, t] >= 0:
                record = _loss_record(laws, document, grid, optimum, t, float(tokens))
                if "relative_error" in record:
                    record["relative_error_resamples"] = _error_resamples(record["predicted_loss"], optimum.loss[1:, t])
                loss_records.append(record)
                hp_records.append(_hyperparameter_record(laws, document, grid, optimum, t, float(tokens)))
    covered = [r["covered"] for r in loss_records if r.get("covered") is not None]
    errors = [abs(r["relative_error"]) for r in loss_records if "relative_error" in r]
    return {
        "sizes": [g.size for g in grids],
        "loss": loss_records,
        "hyperparameters": hp_records,
        "summary": {
            "points": len(loss_records),
            "mean_absolute_relative_error": float(np.mean(errors)) if errors else None,
            "max_absolute_relative_error": float(np.max(errors)) if errors else None,
            "coverage": float(np.mean(covered)) if covered else None,
            "level": config.confidence_level,
        },
    }


def measurement_noise(laws: LawSet, units: list, config: FitConfig) -> RunNoise:
    """Resamples of held-out runs for the noise of what they measure: each run's curve scaled by ``1 + sigma z`` as
    the fit's resamples scale the fitting runs (``analysis.resampling``), a stream of draws per run, ``sigma`` one
    run's relative std with the uncertainty of its estimate. The law stays fixed: the check is of the law fitted.
    ``units``: run ids, or tuples of replicate runs (a grid's cells), as ``RunNoise.factors`` takes them."""
    run_ids = [run_id for unit in units for run_id in ((unit,) if isinstance(unit, str) else unit)]
    noise = RunNoise.draw_per_run(run_ids, config.bootstrap_resamples, config.seed)
    noise.set_std(laws.noise_relative_std, laws.noise_dof, config.seed)
    return noise


def _margin_resamples(grid: SizeGrid, resampled: np.ndarray, predicted_cell: dict) -> list[float | None] | None:
    """Claim 3b's margin (the best other cell's loss over the predicted cell's, minus 1) in each resample of the
    held-out runs (``resampled``: ``(R + 1, cells, 1)``, row 0 as measured); None without both kinds of cell.
    The best other cell is found again in every resample, so the margin carries the winner's curse of a minimum
    over noisy cells as the measured one does."""
    present = np.isfinite(grid.losses[:, 0])
    match = present & (grid.batch_tokens == predicted_cell["batch_tokens"]) & same_learning_rate(
        grid.learning_rates, predicted_cell["learning_rate"])
    others = present & ~match
    if not match.any() or not others.any():
        return None
    values = np.asarray(resampled, dtype=float)[1:, :, 0]
    return _stored(np.min(values[:, others], axis=1) / np.min(values[:, match], axis=1) - 1)


def _error_resamples(predicted: float, measured: np.ndarray) -> list[float | None]:
    """The relative error of ``predicted`` against each resampled measurement (None where there is none)."""
    measured = np.asarray(measured, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _stored(np.where(measured > 0, (predicted - measured) / measured, np.nan))


def _stored(values: np.ndarray) -> list[float | None]:
    """Resampled values as the JSON files keep them: 6 significant digits, None where there is no value."""
    return [float(f"{v:.6g}") if np.isfinite(v) else None for v in values]


def _loss_record(laws: LawSet, document: dict, grid: SizeGrid, optimum, t: int, tokens: float) -> dict:
    """One held-out (size, budget): the measured optimal loss against each loss law, and the fixed cell's loss."""
    n_billions, t_billions = grid.parameters / BILLION, tokens / BILLION
    measured = float(optimum.loss[0, t])
    replicates = grid.fewest_replicates  # seeds per cell: the measured loss's noise is a mean's
    record = {
        "size": grid.size, "N": n_billions, "tokens": tokens, "T": t_billions, "measured_loss": measured, "replicates": replicates,
        "measured_method": METHOD_NAMES[int(optimum.method[0, t])],
        "measured_interior": bool(optimum.interior_batch[0, t] and optimum.interior_learning_rate[0, t]),
        "cells": int(np.isfinite(grid.losses[:, t]).sum()), "predictions": {},
    }
    for name in (n for n in LOSS_BASELINES if laws.has(n)):
        if name == "loss_optimal":
            prediction = laws.loss_prediction(n_billions, t_billions, replicates=replicates)
            interval = prediction["prediction_interval"]
            record.update(predicted_loss=prediction["value"], interval=prediction["interval"], prediction_interval=interval,
                          relative_error=(prediction["value"] - measured) / measured,
                          covered=None if interval is None else bool(interval[0] <= measured <= interval[1]))
        value = float(laws.evaluate(name, N=n_billions, T=t_billions))
        record["predictions"][name] = {"value": value, "relative_error": (value - measured) / measured}
    cell = document.get("setup", {}).get("conventional_cell") or {}
    if cell and laws.has("loss_conventional"):
        at_cell = (grid.batch_clips == cell["batch_clips"]) & same_learning_rate(grid.learning_rates, cell["learning_rate"])
        if at_cell.any() and np.isfinite(grid.losses[at_cell, t]).any():
            fixed = float(np.nanmean(grid.losses[at_cell, t]))
            prediction = laws.loss_prediction(n_billions, t_billions, which="conventional", replicates=replicates)
            record["conventional_cell"] = {"measured_loss": fixed, "predicted_loss": prediction["value"],
                                           "prediction_interval": prediction["prediction_interval"],
                                           "relative_error": (prediction["value"] - fixed) / fixed}
    return record


def _hyperparameter_record(laws: LawSet, document: dict, grid: SizeGrid, optimum, t: int, tokens: float) -> dict:
    """One held-out (size, budget): the measured optimal (B, LR) against each hyperparameter law and the fixed cell."""
    n_billions, t_billions = grid.parameters / BILLION, tokens / BILLION
    hp = {
        "size": grid.size, "N": n_billions, "tokens": tokens, "T": t_billions,
        "measured_batch_tokens": float(optimum.batch_tokens[0, t]), "measured_learning_rate": float(optimum.learning_rate[0, t]),
        "measured_interior": {"batch": bool(optimum.interior_batch[0, t]), "learning_rate": bool(optimum.interior_learning_rate[0, t])},
        "predictions": {},
    }
    measured = {"B": hp["measured_batch_tokens"], "LR": hp["measured_learning_rate"]}
    for name, variable in (("batch_size", "B"), ("learning_rate", "LR"), ("deepseek_batch_size", "B"), ("deepseek_learning_rate", "LR")):
        if laws.has(name):
            value = float(laws.evaluate(name, C=tokens * grid.flops_per_token) if name.startswith("deepseek")
                          else laws.evaluate(name, N=n_billions, T=t_billions))
            hp["predictions"][name] = {"value": value, "log_error": float(np.log(value / measured[variable]))}
    cell = document.get("setup", {}).get("conventional_cell") or {}
    if cell:
        batch = cell["batch_clips"] * document["setup"]["context_tokens"]
        hp["predictions"]["fixed_cell_batch_size"] = {"value": batch, "log_error": float(np.log(batch / measured["B"]))}
        hp["predictions"]["fixed_cell_learning_rate"] = {"value": cell["learning_rate"],
                                                         "log_error": float(np.log(cell["learning_rate"] / measured["LR"]))}
    if laws.has("learning_rate") and laws.predicts_batch():
        batch, source = laws.predicted_batch_tokens(n_billions, t_billions)
        if source == "grid_edge":
            hp["predictions"]["grid_edge_batch_size"] = {"value": batch, "log_error": float(np.log(batch / measured["B"]))}
        hp.update(_cell_check(grid, t, batch, hp["predictions"]["learning_rate"]["value"]), batch_source=source)
    return hp


def baselines_table(document: dict) -> list[dict]:
    """One row per law: fit error on its own data and held-out prediction error."""
    rows = []
    heldout = document.get("heldout", {})
    laws = document.get("laws", {})
    kinds = [
        ("loss_optimal", "loss", "precise: L = a T^-alpha + b N^-beta + L_inf at optimal (B, LR) (= Chinchilla's form)"),
        ("kaplan", "loss", "Kaplan: L = ((N_c/N)^(alpha_N/alpha_D) + D_c/T)^alpha_D at optimal (B, LR)"),
        ("chinchilla_all_runs", "loss", "Chinchilla's form on every grid run, ignoring B and LR"),
        ("loss_conventional", "loss", "conventional: the paper's form at one fixed (B, LR) for all sizes"),
        ("batch_size", "hyperparameter", "B_opt = a T^b N^c (precise)"),
        ("deepseek_batch_size", "hyperparameter", "DeepSeek: B_opt = a C^b"),
        ("learning_rate", "hyperparameter", "LR_opt = a T^b N^c (precise)"),
        ("deepseek_learning_rate", "hyperparameter", "DeepSeek: LR_opt = a C^b"),
    ]
    for name, kind, description in kinds:
        law = laws.get(name, {})
        row = {"law": name, "kind": kind, "description": description, "status": law.get("status", "absent")}
        if law.get("status") == "fitted":
            fit = law.get("fit", {})
            row.update(points=fit.get("points"), fit_rmse_log=fit.get("rmse_log"), fit_mse=fit.get("mse"))
        else:
            row["reason"] = law.get("reason")
        if kind == "loss":
            errors = [r["predictions"][name]["relative_error"] for r in heldout.get("loss", []) if name in r.get("predictions", {})]
            target = "held-out optimal-hyperparameter losses"
        else:
            errors = [r["predictions"][name]["log_error"] for r in heldout.get("hyperparameters", []) if name in r.get("predictions", {})]
            target = "held-out interpolated optima (log error)"
        row["heldout_points"] = len(errors)
        row["heldout_target"] = target
        row["heldout_mean_absolute_error"] = float(np.mean(np.abs(errors))) if errors else None
        row["heldout_max_absolute_error"] = float(np.max(np.abs(errors))) if errors else None
        rows.append(row)
    for key, description in (("fixed_cell_batch_size", "fixed cell's B for every size (conventional)"), ("fixed_cell_learning_rate", "fixed cell's LR for every size (conventional)")):
        errors = [r["predictions"][key]["log_error"] for r in heldout.get("hyperparameters", []) if key in r.get("predictions", {})]
        rows.append({
            "law": key, "kind": "hyperparameter", "description": description, "status": "fixed",
            "heldout_points": len(errors), "heldout_target": "held-out interpolated optima (log error)",
            "heldout_mean_absolute_error": float(np.mean(np.abs(errors))) if errors else None,
            "heldout_max_absolute_error": float(np.max(np.abs(errors))) if errors else None,
        })
    return rows


# ---------------------------------------------------------------------------------------------- proposals
def evaluate_proposal(table: RunsTable, laws: LawSet, proposal: dict, config: FitConfig) -> dict:
    """Compare each proposal group with the runs the pipeline trained for it."""
    completed = table.completed()
    all_runs = table.runs()
    exclusions = table.exclusions()
    groups = []
    for index, group in enumerate(proposal["groups"]):
        wanted = [r for r in proposal["runs"] if r["group"] == index]
        present, missing, found = [], [], []
        for run in wanted:
            match = all_runs[
                (all_runs["series"] == run["series"]) & (all_runs["size"] == run["size"])
                & (all_runs["batch_clips"] == int(run["batch_clips"]))
                & same_learning_rate(all_runs["learning_rate"], run["learning_rate"]) & (all_runs["seed"] == int(run["seed"]))
            ]
            found += list(match.index)
            done = [r for r in match.index if r in completed.index]
            if done:
                present += done
            else:
                missing.append(f"{run['series']} {run['size']} at {run['batch_clips']} clips, LR {run['learning_rate']:g}")
        record = {"group": index, "kind": group["kind"], "size": group["size"], "runs": present, "missing_runs": missing}
        excluded = [e for e in exclusions if e["run_id"] in found]
        if excluded:
            record["excluded_runs"] = excluded
        if not present:
            record["status"] = "no completed runs"
            groups.append(record)
            continue
        tokens = float(group["tokens"])
        n_billions = float(completed.loc[present, "non_embedding_parameters"].iloc[0]) / BILLION
        record.update(tokens=tokens, N=n_billions)
        if group["kind"] == "hyperparameters":
            # one row per (B, LR) cell, the mean of its seeds; a diverged run counts as the fitting sizes' runs do: at the
            # budget if it reached it, else its cell is unstable there (analysis.selection)
            notes: list[str] = []
            grid = cell_grid(table, completed.loc[present], group["size"], [tokens], config, notes, series=("heldout",),
                             among=found)
            replicates = grid.fewest_replicates
            optimum_losses = measurement_noise(laws, grid.replicates, config).losses(grid.replicates, grid.losses)
            optimum = find_optima(grid, optimum_losses, config.optimum_method, config.optimum_band, config.optimum_max_gain)
            measured = float(optimum.loss[0, 0])
            resampled = optimum.loss[1:, 0]
            unstable = np.zeros_like(grid.losses, dtype=bool) if grid.unstable is None else np.asarray(grid.unstable)
            record.update(
                measured_optimum={
                    "loss": measured, "batch_tokens": float(optimum.batch_tokens[0, 0]),
                    "learning_rate": float(optimum.learning_rate[0, 0]), "method": METHOD_NAMES[int(optimum.method[0, 0])],
                    "interior": {"batch": bool(optimum.interior_batch[0, 0]),
                                 "learning_rate": bool(optimum.interior_learning_rate[0, 0])},
                },
                cells=[
                    {"run_id": r, "runs": list(members), "batch_clips": int(b), "learning_rate": float(lr),
                     "loss": float(v) if np.isfinite(v) else None, "unstable": bool(u)}
                    for r, members, b, lr, v, u in zip(grid.run_ids, grid.replicates, grid.batch_clips, grid.learning_rates,
                                                       grid.losses[:, 0], unstable[:, 0])
                ],
                **_cell_check(grid, 0, group["predicted"]["batch_tokens"], group["predicted"]["learning_rate"]),
            )
            record["margin_resamples"] = _margin_resamples(grid, optimum_losses, record["predicted_cell"])
            if notes:
                record["notes"] = notes
        else:
            losses = table.loss_matrix(present, [tokens], config.loss_column, config.token_match_tolerance)
            replicates = int(np.isfinite(losses[:, 0]).sum())
            measured = float(np.nanmean(losses[:, 0]))
            record["measured_loss"] = measured
            resampled = measurement_noise(laws, list(present), config).mean_losses(list(present), losses)[1:, 0]
        prediction = laws.loss_prediction(n_billions, tokens / BILLION, replicates=max(replicates, 1))
        record.update(predicted_loss=prediction, replicates=replicates,
                      relative_error_resamples=_error_resamples(prediction["value"], resampled))
        pi = prediction["prediction_interval"]
        record.update(
            status="evaluated",
            relative_error=(prediction["value"] - measured) / measured,
            covered=None if pi is None else bool(pi[0] <= measured <= pi[1]),
        )
        groups.append(record)
    return {"schema": SCHEMA, "groups": groups}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.heldout",
        description="Compare the laws' predictions with the held-out runs listed by analysis.propose.",
    )
    parser.add_argument("--runs", required=True, help="runs table (CSV or Parquet)")
    parser.add_argument("--laws", required=True, help="laws.json written by analysis.fit")
    parser.add_argument("--proposal", required=True, help="proposal JSON written by analysis.propose")
    parser.add_argument("--out", required=True, help="output JSON (written atomically)")
    args = parser.parse_args(argv)
    try:
        check_output_files([args.out], [args.runs, args.laws, args.proposal])
        document = read_laws(args.laws)
        proposal = read_proposal(args.proposal)
        table = load_runs(args.runs)
        config = config_from_dict(document.get("config") or {})
        result = evaluate_proposal(table, LawSet(document, level=config.confidence_level, seed=config.seed), proposal, config)
    except (RunsTableError, LawsFileError, ProposalFileError, OutputPathError, FitConfigError, OSError) as error:
        print(f"analysis.heldout: error: {error}", file=sys.stderr)
        return 2
    except (KeyError, ValueError) as error:
        print(f"analysis.heldout: error: {args.proposal} or {args.runs}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    result["provenance"] = provenance({"runs": args.runs, "laws": args.laws, "proposal": args.proposal})
    atomic_write_json(args.out, result, flat_number_lists=True)  # the resampled margins and errors: a line each
    for group in result["groups"]:
        if group.get("status") != "evaluated":
            print(f"group {group['group']} ({group['kind']}, {group['size']}): {group['status']}; missing {group['missing_runs']}")
            continue
        predicted = group["predicted_loss"]["value"]
        measured = group.get("measured_optimum", {}).get("loss", group.get("measured_loss"))
        best = group.get("predicted_cell_is_best")
        print(
            f"group {group['group']} ({group['kind']}, {group['size']}, T={group['tokens']:.3g} tokens): predicted {predicted:.5f}, "
            f"measured {measured:.5f}, error {100 * group['relative_error']:+.2f}%, covered {group['covered']}"
            + ("" if best is None else f", predicted cell best: {best}")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
