"""Result tables as CSV, Markdown and LaTeX: ``python -m analysis.tables --laws results/laws.json --out results/tables``.

Writes, each as ``NAME.csv``, ``NAME.md`` and ``NAME.tex`` (atomically), plus ``provenance.json``:

* ``coefficients``: every fitted parameter with its bootstrap interval, beside the paper's value;
* ``heldout``: held-out sizes' measured optimal loss vs the prediction, relative error, whether the
  prediction interval covers it; predicted vs measured B_opt and LR_opt and whether the predicted
  cell was the best;
* ``baselines``: fit error and held-out error of each law and baseline;
* ``comparison``: precise vs conventional recipe at the target budget, ours and the paper's.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from dit.atomic import atomic_write_json, atomic_write_text
from dit.provenance import provenance

from analysis import paper
from analysis.law_set import LawsFileError, read_laws

TABLE_NAMES = ("coefficients", "heldout", "baselines", "comparison")

PAPER_VALUES = {
    "loss_optimal": paper.LOSS_OPTIMAL,
    "batch_size": paper.BATCH_SIZE,
    "learning_rate": paper.LEARNING_RATE,
    "compute_optimal.precise": paper.COMPUTE_OPTIMAL_PRECISE,
    "compute_optimal.empirical_precise": paper.COMPUTE_OPTIMAL_EMPIRICAL,
}


def _number(value, digits: int = 4):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}"
    return str(value)


def coefficients_table(document: dict) -> pd.DataFrame:
    rows = []

    def add(name, record, formula):
        if record.get("status") != "fitted":
            rows.append({"law": name, "formula": formula, "parameter": "", "ours": None, "ours_low": None, "ours_high": None,
                         "paper": None, "note": f"not fitted: {record.get('reason', '')}"})
            return
        intervals = record.get("intervals") or {}
        for parameter, value in record["parameters"].items():
            interval = intervals.get(parameter) or [None, None]
            rows.append({
                "law": name, "formula": formula, "parameter": parameter, "ours": value, "ours_low": interval[0],
                "ours_high": interval[1], "paper": PAPER_VALUES.get(name, {}).get(parameter), "note": record.get("warning", ""),
            })

    for name in ("loss_optimal", "loss_conventional", "batch_size", "learning_rate", "kaplan", "chinchilla_all_runs",
                 "deepseek_batch_size", "deepseek_learning_rate"):
        record = document["laws"].get(name)
        if record is not None:
            add(name, record, record.get("formula", ""))
    for name in ("precise", "conventional", "empirical_precise", "empirical_conventional"):
        record = document.get("compute_optimal", {}).get(name)
        if record is not None:
            add(f"compute_optimal.{name}", record, record.get("formula", "N_opt = k * C^a"))
    return pd.DataFrame(rows)


def heldout_table(document: dict) -> pd.DataFrame:
    heldout = document.get("heldout", {})
    hp = {(r["size"], r["tokens"]): r for r in heldout.get("hyperparameters", [])}
    rows = []
    for record in heldout.get("loss", []):
        h = hp.get((record["size"], record["tokens"]), {})
        pi = record.get("prediction_interval") or [None, None]
        predictions = h.get("predictions", {})
        rows.append({
            "size": record["size"], "N_billions": record["N"], "tokens": record["tokens"],
            "measured_loss": record["measured_loss"], "predicted_loss": record.get("predicted_loss"),
            "prediction_low": pi[0], "prediction_high": pi[1],
            "relative_error_percent": None if record.get("relative_error") is None else 100 * record["relative_error"],
            "covered": record.get("covered"),
            "measured_batch_tokens": h.get("measured_batch_tokens"),
            "predicted_batch_tokens": predictions.get("batch_size", {}).get("value"),
            "measured_learning_rate": h.get("measured_learning_rate"),
            "predicted_learning_rate": predictions.get("learning_rate", {}).get("value"),
            "measured_on_edge": record.get("measured_on_edge"),
            "predicted_cell_is_best": h.get("predicted_cell_is_best"),
        })
    return pd.DataFrame(rows)


def baselines_table(document: dict) -> pd.DataFrame:
    rows = []
    for row in document.get("baselines", []):
        rows.append({
            "law": row["law"], "description": row["description"], "status": row["status"], "fit_points": row.get("points"),
            "fit_rmse_log": row.get("fit_rmse_log"), "fit_mse": row.get("fit_mse"), "heldout_points": row["heldout_points"],
            "heldout_mean_abs_error": row["heldout_mean_absolute_error"], "heldout_max_abs_error": row["heldout_max_absolute_error"],
            "heldout_error_of": row["heldout_target"],
        })
    return pd.DataFrame(rows)


def comparison_table(document: dict) -> pd.DataFrame:
    comparison = document.get("comparison", {})
    rows = []
    if comparison.get("status") == "computed":
        for label, key in (("N_opt (parameters)", "parameters"), ("training tokens", "tokens"), ("predicted loss", "loss"),
                           ("inference FLOPs per video", "inference_flops_per_video")):
            for recipe in ("precise", "conventional"):
                estimate = comparison[recipe][key]
                interval = estimate.get("interval") or [None, None]
                rows.append({"quantity": label, "recipe": recipe, "ours": estimate["value"], "ours_low": interval[0],
                             "ours_high": interval[1], "target_flops_ours": comparison["target_flops"], "paper": None})
        for label, key in (("model-size reduction", "model_size_reduction"), ("inference-cost reduction", "inference_flops_reduction")):
            estimate = comparison[key]
            interval = estimate.get("interval") or [None, None]
            rows.append({"quantity": label, "recipe": "precise vs conventional", "ours": estimate["value"], "ours_low": interval[0],
                         "ours_high": interval[1], "target_flops_ours": comparison["target_flops"], "paper": None})
    paper_rows = {
        ("N_opt (parameters)", "precise"): paper.OPTIMAL_SIZE_AT_TARGET,
        ("N_opt (parameters)", "conventional"): paper.CONVENTIONAL_SIZE_AT_TARGET,
        ("model-size reduction", "precise vs conventional"): paper.MODEL_SIZE_REDUCTION,
        ("inference-cost reduction", "precise vs conventional"): paper.INFERENCE_COST_REDUCTION,
    }
    frame = pd.DataFrame(rows, columns=["quantity", "recipe", "ours", "ours_low", "ours_high", "target_flops_ours", "paper"])
    for (quantity, recipe), value in paper_rows.items():
        match = (frame["quantity"] == quantity) & (frame["recipe"] == recipe)
        if match.any():
            frame.loc[match, "paper"] = value
        else:
            frame.loc[len(frame)] = {"quantity": quantity, "recipe": recipe, "paper": value}
    frame["paper_target_flops"] = paper.TARGET_FLOPS
    return frame


# ---------------------------------------------------------------------------------------------- writers
def to_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_number(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    columns = "l" * len(frame.columns)
    lines = [
        "\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{latex_escape(caption)}}}", f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule", " & ".join(latex_escape(c) for c in frame.columns) + " \\\\", "\\midrule",
    ]
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(latex_escape(_number(v)) for v in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


CAPTIONS = {
    "coefficients": "Fitted coefficients with bootstrap intervals (N, T in billions; B in tokens; C in FLOPs), beside the paper's.",
    "heldout": "Held-out sizes: measured optimal loss vs the precise law's prediction and prediction interval.",
    "baselines": "Fit error and held-out error of each law and baseline fitted to the same runs.",
    "comparison": "Precise vs conventional recipe at the target budget (ours) and at 1e22 FLOPs (paper).",
}


def build_tables(document: dict) -> dict[str, pd.DataFrame]:
    return {
        "coefficients": coefficients_table(document),
        "heldout": heldout_table(document),
        "baselines": baselines_table(document),
        "comparison": comparison_table(document),
    }


def write_tables(document: dict, out: str | Path, source: str = "") -> list[Path]:
    out = Path(out)
    record = provenance({"laws": source})
    stamp = f"generated by analysis.tables from {source} (commit {record['code_version']['commit']})"
    written = []
    for name, frame in build_tables(document).items():
        atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))
        atomic_write_text(out / f"{name}.md", f"<!-- {stamp} -->\n\n{CAPTIONS[name]}\n\n" + to_markdown(frame))
        atomic_write_text(out / f"{name}.tex", f"% {stamp}\n" + to_latex(frame, CAPTIONS[name]))
        written += [out / f"{name}.{suffix}" for suffix in ("csv", "md", "tex")]
    atomic_write_json(out / "provenance.json", {"tables": list(TABLE_NAMES), "laws": source, "provenance": record,
                                                "laws_provenance": document.get("provenance")})
    written.append(out / "provenance.json")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--laws", required=True, help="laws.json written by analysis.fit")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        document = read_laws(args.laws)
    except LawsFileError as error:
        print(f"analysis.tables: error: {error}", file=sys.stderr)
        return 2
    written = write_tables(document, args.out, source=args.laws)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
