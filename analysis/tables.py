"""Result tables from the facts document, as CSV, Markdown and LaTeX: ``python -m analysis.tables --facts results/facts.json --out results/tables``.

Writes, each as ``NAME.csv``, ``NAME.md`` and ``NAME.tex`` (pandas' writers, atomically), plus ``provenance.json``:

* ``coefficients``: every fitted parameter with its bootstrap interval, beside the paper's value;
* ``heldout``: held-out sizes' measured optimal loss vs the prediction, relative error, whether the
  prediction interval covers it; predicted vs measured B_opt and LR_opt and whether the predicted
  cell was the best;
* ``baselines``: fit error and held-out error of each law and baseline;
* ``comparison``: precise vs conventional recipe at the target budget, ours and the paper's;
* ``reduction_curves``: the model-size and inference-cost reductions over budgets for every fixed cell.

Every file is built before any is written. Refused before anything is written (exit status 2): a facts file that
``analysis.facts.read_facts`` refuses (unreadable, or of another schema), one that lacks a fact a table shows (written
by older code), and an ``--out`` that is a file or lies below one, or whose files would replace the facts file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dit.atomic import OutputPathError, atomic_write_json, atomic_write_text, check_output_files

from analysis.facts import FactsFileError, missing_fact_message, read_facts

TABLE_NAMES = ("coefficients", "heldout", "baselines", "comparison", "reduction_curves")
#: The files of the output folder.
TABLE_FILES = tuple(f"{name}.{suffix}" for name in TABLE_NAMES for suffix in ("csv", "md", "tex")) + ("provenance.json",)
CAPTIONS = {
    "coefficients": "Fitted coefficients with bootstrap intervals (N, T in billions; B in tokens; C in FLOPs), beside the paper's.",
    "heldout": "Held-out sizes: measured optimal loss vs the precise law's prediction and prediction interval.",
    "baselines": "Fit error and held-out error of each law and baseline fitted to the same runs.",
    "comparison": "Precise vs conventional recipe at the target budget (ours) and at the paper's budget (paper).",
    "reduction_curves": "Model-size and inference-cost reductions over budgets C, each grid cell taken as the fixed one.",
}
#: The paper's value of each coefficient (the facts' ``paper`` section): table law -> facts key.
PAPER_LAWS = {"loss_optimal": "loss_optimal", "batch_size": "batch_size", "learning_rate": "learning_rate",
              "compute_optimal.precise": "compute_optimal_precise", "compute_optimal.empirical_precise": "compute_optimal_empirical"}
FLOAT_FORMAT = ".4g"


def _pair(interval) -> tuple:
    return tuple(interval) if interval else (None, None)


def coefficients_table(facts: dict) -> pd.DataFrame:
    rows = []
    records = [(name, record) for name, record in facts["laws"].items()] + [
        (f"compute_optimal.{name}", record) for name, record in facts["compute_optimal"].items()]
    for name, record in records:
        published = facts["paper"].get(PAPER_LAWS.get(name, ""), {})
        if record.get("status") != "fitted":
            rows.append({"law": name, "formula": record.get("formula", ""), "parameter": "", "note": f"not fitted: {record.get('reason', '')}"})
            continue
        for parameter, value in record["parameters"].items():
            low, high = _pair((record.get("intervals") or {}).get(parameter))
            rows.append({"law": name, "formula": record.get("formula", ""), "parameter": parameter, "ours": value, "ours_low": low,
                         "ours_high": high, "paper": published.get(parameter), "note": record.get("warning", "")})
    return pd.DataFrame(rows, columns=["law", "formula", "parameter", "ours", "ours_low", "ours_high", "paper", "note"])


def heldout_table(facts: dict) -> pd.DataFrame:
    predictions = facts["heldout_predictions"]
    hyperparameters = {(r["size"], r["tokens"]): r for r in predictions["hyperparameters"]}
    rows = []
    for record in predictions["loss"]:
        h = hyperparameters.get((record["size"], record["tokens"]), {})
        low, high = _pair(record.get("prediction_interval"))
        rows.append({
            "size": record["size"], "N_billions": record["N"], "tokens": record["tokens"], "measured_loss": record["measured_loss"],
            "predicted_loss": record.get("predicted_loss"), "prediction_low": low, "prediction_high": high,
            "relative_error": record.get("relative_error"), "covered": record.get("covered"),
            "measured_batch_tokens": h.get("measured_batch_tokens"),
            "predicted_batch_tokens": h.get("predictions", {}).get("batch_size", {}).get("value"),
            "measured_learning_rate": h.get("measured_learning_rate"),
            "predicted_learning_rate": h.get("predictions", {}).get("learning_rate", {}).get("value"),
            "measured_interior": record.get("measured_interior"), "predicted_cell_is_best": h.get("predicted_cell_is_best"),
        })
    return pd.DataFrame(rows)


def baselines_table(facts: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "law": row["law"], "description": row["description"], "status": row["status"], "fit_points": row.get("points"),
        "fit_rmse_log": row.get("fit_rmse_log"), "fit_mse": row.get("fit_mse"), "heldout_points": row["heldout_points"],
        "heldout_mean_abs_error": row["heldout_mean_absolute_error"], "heldout_max_abs_error": row["heldout_max_absolute_error"],
        "heldout_error_of": row["heldout_target"]} for row in facts["baselines"]])


def comparison_table(facts: dict) -> pd.DataFrame:
    comparison, published = facts["comparison"], facts["paper"]
    paper_values = {("N_opt (parameters)", "precise"): published["optimal_size_at_target"],
                    ("N_opt (parameters)", "conventional"): published["conventional_size_at_target"],
                    ("model-size reduction", "precise vs conventional"): published["model_size_reduction"],
                    ("inference-cost reduction", "precise vs conventional"): published["inference_cost_reduction"]}
    rows = []
    if comparison.get("status") == "computed":
        for label, key in (("N_opt (parameters)", "parameters"), ("training tokens", "tokens"), ("predicted loss", "loss"),
                           ("inference FLOPs per video", "inference_flops_per_video")):
            for recipe in ("precise", "conventional"):
                rows.append(_comparison_row(label, recipe, comparison[recipe][key], comparison["target_flops"]))
        for label, key in (("model-size reduction", "model_size_reduction"), ("inference-cost reduction", "inference_flops_reduction")):
            rows.append(_comparison_row(label, "precise vs conventional", comparison[key], comparison["target_flops"]))
    frame = pd.DataFrame(rows, columns=["quantity", "recipe", "ours", "ours_low", "ours_high", "target_flops_ours", "paper"])
    for (quantity, recipe), value in paper_values.items():
        match = (frame["quantity"] == quantity) & (frame["recipe"] == recipe)
        if match.any():
            frame.loc[match, "paper"] = value
        else:
            frame.loc[len(frame)] = {"quantity": quantity, "recipe": recipe, "paper": value}
    frame["paper_target_flops"] = published["target_flops"]
    return frame


def _comparison_row(quantity: str, recipe: str, estimate: dict, target: float) -> dict:
    low, high = _pair(estimate.get("interval"))
    return {"quantity": quantity, "recipe": recipe, "ours": estimate["value"], "ours_low": low, "ours_high": high,
            "target_flops_ours": target, "paper": None}


def reduction_curves_table(facts: dict) -> pd.DataFrame:
    rows = []
    for cell in facts["recipe_curves"].get("cells", []):
        for point in cell.get("points", []):
            size, cost = point["model_size_reduction"], point["inference_flops_reduction"]
            rows.append({"batch_clips": cell["batch_clips"], "learning_rate": cell["learning_rate"], "conventional": cell["conventional"],
                         "flops": point["flops"], "model_size_reduction": size["value"], "low": _pair(size["interval"])[0],
                         "high": _pair(size["interval"])[1], "inference_flops_reduction": cost["value"],
                         "inference_low": _pair(cost["interval"])[0], "inference_high": _pair(cost["interval"])[1]})
    return pd.DataFrame(rows, columns=["batch_clips", "learning_rate", "conventional", "flops", "model_size_reduction", "low", "high",
                                       "inference_flops_reduction", "inference_low", "inference_high"])


def build_tables(facts: dict) -> dict[str, pd.DataFrame]:
    return {"coefficients": coefficients_table(facts), "heldout": heldout_table(facts), "baselines": baselines_table(facts),
            "comparison": comparison_table(facts), "reduction_curves": reduction_curves_table(facts)}


def write_tables(facts: dict, out: str | Path, source: str = "") -> list[Path]:
    """Every file built first (so a facts document that lacks a table's fact fails before any is written), then each
    written atomically; returns their paths in ``TABLE_FILES`` order."""
    out = Path(out)
    commit = facts["provenance"]["code_version"]["commit"]
    stamp = f"generated by analysis.tables from {source} (commit {commit})"
    texts = {}
    for name, frame in build_tables(facts).items():
        shown = frame.astype(object).where(frame.notna(), "")
        texts[f"{name}.csv"] = frame.to_csv(index=False)
        texts[f"{name}.md"] = f"<!-- {stamp} -->\n\n{CAPTIONS[name]}\n\n" + shown.to_markdown(index=False, floatfmt=FLOAT_FORMAT) + "\n"
        latex = shown.to_latex(index=False, caption=CAPTIONS[name], float_format=lambda v: f"{v:{FLOAT_FORMAT}}", escape=True)
        texts[f"{name}.tex"] = f"% {stamp}\n" + latex
    record = {"tables": list(TABLE_NAMES), "facts": source, "provenance": facts["provenance"],
              "laws_provenance": facts["sources"]["laws_provenance"]}
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    atomic_write_json(out / "provenance.json", record)
    return [out / name for name in TABLE_FILES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", required=True, help="facts.json written by analysis.facts")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        check_output_files([Path(args.out) / name for name in TABLE_FILES], [args.facts])
        facts = read_facts(args.facts)
        written = write_tables(facts, args.out, source=args.facts)
    except (OutputPathError, FactsFileError) as error:
        print(f"analysis.tables: error: {error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError, IndexError) as error:  # a fact missing, or of another type
        message = missing_fact_message(args.facts, facts, "the tables show", f"{type(error).__name__}: {error}")
        print(f"analysis.tables: error: {message}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
