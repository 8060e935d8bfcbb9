"""Figures for our runs and for the paper's published laws: ``python -m analysis.figures --facts results/facts.json --laws results/laws.json --out results/figures``.

Writes ``OUT/runs/NAME.{png,pdf}`` (from the fitted laws and the facts; needs ``--laws``) and
``OUT/paper/NAME.{png,pdf}`` (from the published laws and the facts' published-law numbers), with
NAME in ``FIGURE_NAMES``, plus ``OUT/index.json`` (files, captions, provenance). ``--which runs``
or ``--which paper`` draws one set only. Every measured or derived number drawn comes from the
facts (``analysis.facts``) or the laws file; a law's curve is its formula evaluated. Style:
``analysis.figure_style``. When a law behind a figure of our runs is not fitted, ended with a
parameter on its bound, or rests only on optima at the grid's edge, a "Caveat" banner above the
plot says so (``law_caveat``) and absent laws draw no curve.

* ``loss_vs_tokens``: loss vs training tokens per size, optimal (interpolated) vs fixed hyperparameters;
* ``heatmaps``: loss over LR x B at two budgets, predicted optimum (star) and interpolated optimum (x);
* ``loss_law``: fitted L(N, T) for the fitting sizes, extrapolated to the held-out ones (points: measured);
* ``compute_optimal``: N_opt vs C, precise vs conventional, extrapolated to the target budget with the
  reduction annotated;
* ``exponents``: fitted exponents with their bootstrap intervals (ours) and the published ones.

Every figure is drawn before any file is written. Refused before anything is written (exit status 2): a laws file
that ``analysis.law_set.read_laws`` refuses, a facts file that ``analysis.facts.read_facts`` refuses, either lacking
what a figure shows, and an ``--out`` that is a file or lies below one, or whose files would replace an input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from matplotlib.lines import Line2D

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.provenance import provenance

from analysis import paper
from analysis.allocation import BILLION
from analysis.figure_style import (
    COLUMN_WIDTH,
    LOSS_LABEL,
    add_caveat,
    color_cycle,
    heatmap_panel,
    level_label,
    new_figure,
    plt,
    save_figure,
    set_title,
)
from analysis.facts import FactsFileError, read_facts
from analysis.formatting import count
from analysis.law_fits import guard_bounds_of
from analysis.law_set import LawSet, LawsFileError, read_laws

FIGURE_NAMES = ("loss_vs_tokens", "heatmaps", "loss_law", "compute_optimal", "exponents")


def law_caveat(document: dict, name: str) -> str | None:
    """Why a fitted law should not be read at face value (or why it is absent); None when it is fine."""
    record = document.get("laws", {}).get(name, {})
    if record.get("status") != "fitted":
        return f"{name}: not fitted ({record.get('reason', 'absent from the laws file')})"
    caveats = []
    guard = guard_bounds_of(record.get("fit"), record.get("parameters"), record.get("form"))
    if guard:  # a bound of the model (L_inf at its floor 0) is the constrained estimate, not a caveat
        caveats.append(f"{', '.join(guard)} ended on a bound of the optimiser (degenerate fit)")
    edge = record.get("edge_points") or {}
    if edge.get("used") and edge.get("used_on_edge") == edge.get("used"):
        caveats.append("every optimum used lies on the grid's edge")
    return f"{name}: " + "; ".join(caveats) if caveats else None


# ---------------------------------------------------------------------------------------------- ours
def runs_loss_vs_tokens(document: dict):
    laws = LawSet(document)
    fig, axes = new_figure(2.9)
    ax = axes[0, 0]
    sizes = document["setup"]["fitting_sizes"]
    colors = color_cycle(len(sizes))
    for color, size in zip(colors, sizes):
        points = [o for o in document["optima"] if o["size"] == size["size"]]
        tokens = np.array([o["tokens"] for o in points])
        ax.plot(tokens, [o["loss"] for o in points], "o", color=color, label=size["size"])
        grid = np.geomspace(tokens.min(), tokens.max(), 50)
        if laws.has("loss_optimal"):
            ax.plot(grid, laws.loss(size["N"], grid / BILLION), "-", color=color)
        curve = next((c for c in document.get("conventional_curves", []) if c["size"] == size["size"]), None)
        if curve and any(v is not None for v in curve["loss"]):
            values = np.array([np.nan if v is None else v for v in curve["loss"]])
            ax.plot(curve["tokens"], values, "s", mfc="none", markersize=5, color=color)
            if laws.has("loss_conventional"):
                ax.plot(grid, laws.loss(size["N"], grid / BILLION, "conventional"), "--", color=color)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens T (video tokens)")
    ax.set_ylabel(LOSS_LABEL)
    cell = document["setup"].get("conventional_cell") or {}
    fixed = f"fixed cell B = {cell['batch_clips']} clips, LR = {cell['learning_rate']:g}" if cell else "no fixed cell"
    set_title(ax, f"Loss at the interpolated optimal (B, LR) and at one {fixed}, with the fitted laws")
    caveats = [c for c in (law_caveat(document, "loss_optimal"), law_caveat(document, "loss_conventional")) if c]
    if caveats:
        add_caveat(fig, "; ".join(caveats) + ".")
    style = [Line2D([], [], color="0.3", marker="o", ls="none", label="optimal (B, LR)"),
             Line2D([], [], color="0.3", marker="s", mfc="none", ls="none", markersize=5, label="fixed cell"),
             Line2D([], [], color="0.3", ls="-", label="law, optimal"), Line2D([], [], color="0.3", ls="--", label="law, fixed cell")]
    handles, _ = ax.get_legend_handles_labels()
    fig.legend(handles=handles + style, loc="outside lower center", ncol=3)
    return fig


def runs_heatmaps(document: dict, facts: dict):
    """The measured grid of the largest held-out (or fitting) size at two budgets (``facts.figures.heatmaps``)."""
    heatmaps = facts["figures"]["heatmaps"]
    panels = heatmaps["panels"]
    fig, axes = new_figure(2.0 * max(len(panels), 1), nrows=max(len(panels), 1))
    role = "held out" if heatmaps["role"] == "heldout" else "fitting"
    for row, panel in enumerate(panels):
        predicted = panel["predicted"]
        heatmap_panel(axes[row, 0], np.array(panel["losses"], dtype=float), panel["batch_tokens"], panel["learning_rates"],
                       None if predicted is None else (predicted["batch_tokens"], predicted["learning_rate"]),
                       (panel["interpolated"]["batch_tokens"], panel["interpolated"]["learning_rate"]),
                       title=f"{heatmaps['size']} ({role}), T = {count(panel['tokens'])} tokens")
    caveats = [c for c in (law_caveat(document, "batch_size"), law_caveat(document, "learning_rate")) if c]
    if caveats:
        predicted = bool(panels) and panels[0]["predicted"] is not None
        add_caveat(fig, "; ".join(caveats) + (": the star is no real prediction on that axis." if predicted else ": no predicted optimum (no star)."))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def runs_loss_law(document: dict):
    laws = LawSet(document)
    fig, axes = new_figure(2.9)
    ax = axes[0, 0]
    fitting = document["setup"]["fitting_sizes"]
    heldout = document["setup"].get("heldout_sizes") or []
    budgets = np.asarray(document["setup"]["budgets_tokens"])
    grid = np.geomspace(budgets.min(), budgets.max() * 4, 60)
    colors = color_cycle(len(fitting) + len(heldout))
    for color, size in zip(colors, fitting + heldout):
        is_heldout = size in heldout
        if laws.has("loss_optimal"):
            ax.plot(grid, laws.loss(size["N"], grid / BILLION), "--" if is_heldout else "-", color=color)
        source = [r for r in document["heldout"]["loss"] if r["size"] == size["size"]] if is_heldout else \
            [o for o in document["optima"] if o["size"] == size["size"]]
        key = "measured_loss" if is_heldout else "loss"
        ax.plot([r["tokens"] for r in source], [r[key] for r in source], "D" if is_heldout else "o", color=color,
                mfc="none" if is_heldout else color, label=f"{size['size']}{' (held out)' if is_heldout else ''}")
    ax.axvspan(budgets.min(), budgets.max(), color="0.93", lw=0, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens T (video tokens)")
    ax.set_ylabel(f"{LOSS_LABEL}\nat the optimal (B, LR)")
    summary = document.get("heldout", {}).get("summary", {})
    title = "L(N, T) fitted on the filled sizes (shaded: budgets fitted), dashed: predictions for held-out sizes"
    if summary.get("mean_absolute_relative_error") is not None:
        covered = round((summary.get("coverage") or 0) * summary["points"])
        title += (f"; held-out mean |error| {100 * summary['mean_absolute_relative_error']:.2f}%, "
                  f"{covered} of {summary['points']} inside the {level_label(document)} prediction interval")
    set_title(ax, title)
    caveat = law_caveat(document, "loss_optimal")
    if caveat:
        add_caveat(fig, caveat + ("; no law curves drawn." if not laws.has("loss_optimal") else "."))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def runs_compute_optimal(document: dict):
    compute = document.get("compute_optimal", {})
    comparison = document.get("comparison", {})
    fig, axes = new_figure(3.0)
    ax = axes[0, 0]
    target = comparison.get("target_flops")
    run_flops = [o["flops"] for o in document.get("optima", [])]  # the (size, budget) pairs run
    low = min(run_flops or [target / 1e3 if target else 1e10])
    flops = np.geomspace(low, (target or low * 1e3) * 1.5, 100)
    if run_flops:
        ax.axvspan(min(run_flops), max(run_flops), color="0.93", lw=0, zorder=0, label="compute of the fitting runs")
    for key, color, label in (("precise", "C0", "precise (optimal B, LR)"), ("conventional", "C3", "conventional (fixed B, LR)")):
        law = compute.get(key, {})
        if law.get("status") == "fitted":
            p = law["parameters"]
            ax.plot(flops, p["k"] * flops ** p["a"], "-" if key == "precise" else "--", color=color,
                    label=f"{label}: N = {p['k']:.3g} C^{p['a']:.3f}")
        empirical = compute.get(f"empirical_{key}", {})
        points = [q for q in empirical.get("points", []) if q["bracketed"]]
        if points:
            ax.plot([q["flops"] for q in points], [q["parameters"] for q in points], "o" if key == "precise" else "s", color=color,
                    mfc="none", label=f"isoFLOP optima ({key})")
        if empirical.get("status") == "fitted":
            p = empirical["parameters"]
            ax.plot(flops, p["k"] * flops ** p["a"], ":", color=color, label=f"empirical: N = {p['k']:.3g} C^{p['a']:.3f}")
    notes = [f"{key} N_opt law not fitted" for key in ("precise", "conventional") if compute.get(key, {}).get("status") != "fitted"]
    questionable = [name for key, name in (("precise", "loss_optimal"), ("conventional", "loss_conventional"))
                    if compute.get(key, {}).get("status") == "fitted" and law_caveat(document, name)]
    if questionable:
        notes.append(f"the N_opt lines come from loss laws with caveats ({', '.join(questionable)}: see the loss figures), "
                     "so their extrapolation is not reliable")
    if compute.get("empirical_precise", {}).get("status") not in (None, "fitted"):
        notes.append("empirical (isoFLOP) law not fitted: the compute-optimal size lies outside the fitting sizes")
    if comparison.get("status") == "computed":
        n_p = comparison["precise"]["parameters"]["value"]
        n_c = comparison["conventional"]["parameters"]["value"]
        for value, color in ((n_p, "C0"), (n_c, "C3")):
            ax.plot([target], [value], "*", color=color, markersize=6, markeredgecolor="white", markeredgewidth=0.3)
        reduction = comparison["model_size_reduction"]
        interval = reduction.get("interval")
        text = f"model-size reduction\n{100 * reduction['value']:.1f}%" + (
            f" [{100 * interval[0]:.1f}%, {100 * interval[1]:.1f}%]" if interval and all(np.isfinite(interval)) else " (no interval)")
        ax.annotate(text, xy=(target, np.sqrt(n_p * n_c)), xytext=(-6, -14), textcoords="offset points", ha="right", va="top",
                    fontsize=6, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
        ax.axvline(target, color="0.7", lw=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("compute-optimal N_opt (parameters)")
    set_title(ax, "Compute-optimal model size, precise vs conventional recipe"
           + (f", extrapolated to C = {target:.3g} FLOPs" if target else ""))
    if notes:
        add_caveat(fig, "; ".join(notes) + ".")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1)
    return fig


def _exponent_rows(document: dict):
    """``(label, value, interval, caveat)`` per exponent; value None when the law is not fitted."""
    rows = []
    mapping = [("loss_optimal", "alpha", "L: alpha (T)"), ("loss_optimal", "beta", "L: beta (N)"),
               ("batch_size", "b", "B_opt: T exp."), ("batch_size", "c", "B_opt: N exp."),
               ("learning_rate", "b", "LR_opt: T exp."), ("learning_rate", "c", "LR_opt: N exp.")]
    for law, parameter, label in mapping:
        record = document.get("laws", {}).get(law, {})
        caveat = law_caveat(document, law)
        if record.get("status") == "fitted":
            rows.append((label, record["parameters"][parameter], (record.get("intervals") or {}).get(parameter), caveat))
        else:
            rows.append((label, None, None, caveat))
    for law, label in (("precise", "N_opt: a (law)"), ("empirical_precise", "N_opt: a (empirical)")):
        record = document.get("compute_optimal", {}).get(law, {})
        caveat = law_caveat(document, "loss_optimal") if law == "precise" else None
        if record.get("status") == "fitted":
            rows.append((label, record["parameters"]["a"], (record.get("intervals") or {}).get("a"), caveat))
        else:
            rows.append((label, None, None, f"{label}: not fitted"))
    return rows


PAPER_EXPONENTS = {
    "L: alpha (T)": paper.LOSS_OPTIMAL["alpha"], "L: beta (N)": paper.LOSS_OPTIMAL["beta"],
    "B_opt: T exp.": paper.BATCH_SIZE["b"], "B_opt: N exp.": paper.BATCH_SIZE["c"],
    "LR_opt: T exp.": paper.LEARNING_RATE["b"], "LR_opt: N exp.": paper.LEARNING_RATE["c"],
    "N_opt: a (law)": paper.COMPUTE_OPTIMAL_PRECISE["a"], "N_opt: a (empirical)": paper.COMPUTE_OPTIMAL_EMPIRICAL["a"],
}


def exponents_figure(rows, title: str, show_paper: bool = True, level: str = ""):
    """Rows ``(label, value, interval, caveat)``: filled markers for sound fits, open grey ones for fits with a
    caveat (degenerate, every optimum on the grid's edge), 'not fitted' written in for absent laws."""
    fig, axes = new_figure(2.9)
    ax = axes[0, 0]
    labels = [r[0] for r in rows]
    y = np.arange(len(rows))
    values = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float)
    intervals = [r[2] if r[2] and all(np.isfinite(r[2])) else None for r in rows]
    low = np.array([i[0] if i else v for i, v in zip(intervals, values)])
    high = np.array([i[1] if i else v for i, v in zip(intervals, values)])
    questionable = np.array([bool(r[3]) and r[1] is not None for r in rows])
    sound = np.isfinite(values) & ~questionable
    ours = "published" if not show_paper else f"this fit ({level} interval)"
    for mask, style, label in ((sound, {"fmt": "o", "color": "C0"}, ours),
                               (questionable, {"fmt": "o", "color": "0.55", "mfc": "white"}, "degenerate or all optima on the grid's edge")):
        if mask.any():
            # a percentile interval need not contain the full-data estimate: bar over the interval itself
            ax.errorbar(values[mask], y[mask], xerr=[np.maximum(values[mask] - low[mask], 0), np.maximum(high[mask] - values[mask], 0)],
                        capsize=2, label=label, **style)
            outside = mask & ((values < low) | (values > high))
            if outside.any():
                ax.hlines(y[outside], low[outside], high[outside], color=style["color"], lw=1.0)
    if show_paper:
        ax.plot([PAPER_EXPONENTS[label] for label in labels], y, "x", color="C3", label="paper (published)")
    for row, value in zip(y, values):
        if not np.isfinite(value):
            ax.text(0.02, row, "not fitted", transform=ax.get_yaxis_transform(), va="center", fontsize=5.5, color="0.3")
    ax.axvline(0, color="0.8", lw=0.5)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("exponent (dimensionless)")
    set_title(ax, title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def exponents_of_runs(document: dict):
    return exponents_figure(_exponent_rows(document), "Fitted exponents (ours) beside the paper's", level=level_label(document))


# ---------------------------------------------------------------------------------------------- paper
def paper_loss_vs_tokens():
    fig, axes = new_figure(2.4)
    ax = axes[0, 0]
    sizes = paper.FITTING_SIZES + paper.HELDOUT_SIZES
    tokens = np.geomspace(*paper.FITTING_TOKENS, 50)
    for color, size in zip(color_cycle(len(sizes)), sizes):
        ax.plot(tokens * BILLION, paper.loss(size, tokens), "-" if size in paper.FITTING_SIZES else "--", color=color, label=f"N = {size}B")
    for size, t_b, published, measured in paper.LOSS_CHECKS:
        if paper.FITTING_TOKENS[0] <= t_b <= paper.FITTING_TOKENS[1]:
            ax.plot(t_b * BILLION, published, "*", color="red")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens T (video tokens)")
    ax.set_ylabel(f"{LOSS_LABEL}\nat the optimal (B, LR)")
    set_title(ax, "Published L(N, T) over the fitted budgets (*: published predictions); fixed-hyperparameter curves not published")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def paper_heatmaps(facts: dict):
    """The published heatmaps with the published laws' prediction and the interpolated optimum (``facts.figures.paper_heatmaps``)."""
    fig, axes = new_figure(4.2, nrows=2)
    optima = {o["t_billions"]: o for o in facts["figures"]["paper_heatmaps"]}
    for row, (t_b, values) in enumerate(sorted(paper.HEATMAPS.items())):
        optimum = optima[t_b]
        heatmap_panel(axes[row, 0], values, paper.HEATMAP_BATCH_TOKENS, paper.HEATMAP_LEARNING_RATES,
                       (optimum["predicted"]["batch_tokens"], optimum["predicted"]["learning_rate"]),
                       (optimum["interpolated"]["batch_tokens"], optimum["interpolated"]["learning_rate"]),
                       title=f"paper, N = {paper.HEATMAP_SIZE}B parameters (held out), T = {t_b:g}B tokens")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def paper_loss_law():
    fig, axes = new_figure(2.4)
    ax = axes[0, 0]
    tokens = np.geomspace(1.0, 200.0, 80)
    sizes = paper.FITTING_SIZES + paper.HELDOUT_SIZES
    for color, size in zip(color_cycle(len(sizes)), sizes):
        fitted = size in paper.FITTING_SIZES
        ax.plot(tokens * BILLION, paper.loss(size, tokens), "-" if fitted else "--", color=color, label=f"N = {size}B" + ("" if fitted else " (held out)"))
    for size, t_b, published, measured in paper.LOSS_CHECKS:
        ax.plot(t_b * BILLION, published, "*", color="red", markersize=5)
        if measured is not None:
            ax.plot(t_b * BILLION, measured, "D", mfc="none", color="black", markersize=3)
    ax.axvspan(paper.FITTING_TOKENS[0] * BILLION, paper.FITTING_TOKENS[1] * BILLION, color="0.92", lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens T (video tokens)")
    ax.set_ylabel(f"{LOSS_LABEL}\nat the optimal (B, LR)")
    set_title(ax, "Published law (lines; shaded: budgets fitted), predicted (*) and measured (open) held-out points")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def paper_compute_optimal(facts: dict):
    """The published N_opt laws and points, and the N_opt that minimising the published L(N, T) gives (``facts.figures``)."""
    fig, axes = new_figure(2.9)
    ax = axes[0, 0]
    derived = facts["figures"]["paper_compute_optimal"]
    flops = np.asarray(derived["flops"])
    for law, style, label in ((paper.COMPUTE_OPTIMAL_PRECISE, "-", "precise"), (paper.COMPUTE_OPTIMAL_EMPIRICAL, ":", "empirical")):
        ax.plot(flops, law["k"] * flops ** law["a"], style, color="C0", label=f"{label} (published): {law['k']} C^{law['a']}")
    ax.plot(flops, derived["parameters_6n"], "--", color="0.5", label="minimising L(N, T) under C = 6NT")
    target = f"{paper.TARGET_FLOPS:.0e}".replace("e+", "e")
    ax.plot([paper.TARGET_FLOPS], [paper.OPTIMAL_SIZE_AT_TARGET], "*", color="C0", markersize=7, label=f"precise at {target} (published point)")
    ax.plot([paper.TARGET_FLOPS], [paper.CONVENTIONAL_SIZE_AT_TARGET], "*", color="C3", markersize=7,
            label=f"conventional at {target} (published point)")
    ax.plot([paper.HELDOUT_BUDGET_FLOPS], [paper.HELDOUT_OPTIMAL_SIZE], "D", mfc="none", color="black",
            label=f"{paper.HELDOUT_OPTIMAL_SIZE / BILLION:g}B held out at {paper.HELDOUT_BUDGET_FLOPS:.3g}")
    ax.annotate(f"{100 * paper.MODEL_SIZE_REDUCTION:.1f}% smaller",
                xy=(paper.TARGET_FLOPS, np.sqrt(paper.OPTIMAL_SIZE_AT_TARGET * paper.CONVENTIONAL_SIZE_AT_TARGET)),
                xytext=(-4, 0), textcoords="offset points", ha="right", va="center", fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("compute-optimal N_opt (parameters)")
    set_title(ax, f"Published compute-optimal model size (the '{100 * paper.MODEL_SIZE_REDUCTION:.0f}% figure')")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1)
    return fig


def paper_exponents():
    rows = [(label, value, None, None) for label, value in PAPER_EXPONENTS.items()]
    return exponents_figure(rows, "Published exponents", show_paper=False)


CAPTIONS = {  # a "Caveat" banner above a plot of our runs flags laws that are degenerate or not fitted
    "loss_vs_tokens": "Loss vs training tokens per size at optimal and at fixed hyperparameters.",
    "heatmaps": "Validation loss over learning rate x batch size at two budgets; star: predicted optimum, x: interpolated optimum.",
    "loss_law": "Fitted L(N, T) for the fitting sizes, extrapolated to held-out sizes (dashed) with their measured points.",
    "compute_optimal": "Compute-optimal model size vs budget, precise vs conventional, extrapolated to the target budget.",
    "exponents": "Fitted exponents with their bootstrap intervals (at the fit's confidence level) beside the published ones.",
}


def _builders(which: str, document: dict | None, facts: dict) -> list[tuple[str, str, Callable]]:
    """``(folder, name, builder)`` of every figure of ``which``: ``paper/`` and ``runs/``."""
    builders = []
    if which in ("both", "paper"):
        builders += [("paper", "loss_vs_tokens", paper_loss_vs_tokens), ("paper", "heatmaps", lambda: paper_heatmaps(facts)),
                     ("paper", "loss_law", paper_loss_law), ("paper", "compute_optimal", lambda: paper_compute_optimal(facts)),
                     ("paper", "exponents", paper_exponents)]
    if which in ("both", "runs"):
        builders += [
            ("runs", "loss_vs_tokens", lambda: runs_loss_vs_tokens(document)),
            ("runs", "heatmaps", lambda: runs_heatmaps(document, facts)),
            ("runs", "loss_law", lambda: runs_loss_law(document)),
            ("runs", "compute_optimal", lambda: runs_compute_optimal(document)),
            ("runs", "exponents", lambda: exponents_of_runs(document)),
        ]
    return builders


def figure_paths(out: Path, which: str) -> list[Path]:
    """The files ``draw_all`` writes under ``out`` for ``which``, and ``index.json``."""
    folders = [folder for folder in ("paper", "runs") if which in ("both", folder)]
    return [out / folder / f"{name}.{suffix}" for folder in folders for name in FIGURE_NAMES for suffix in ("png", "pdf")] + [
        out / "index.json"]


def draw_all(out: Path, which: str, document: dict | None, facts: dict) -> list[Path]:
    """Every figure drawn first (so a laws or facts document that lacks what one shows fails before any file is
    written), then each saved."""
    drawn = []
    try:
        for folder, name, builder in _builders(which, document, facts):
            drawn.append((out / folder / name, builder()))
    except BaseException:
        for _, fig in drawn:
            plt.close(fig)
        raise
    written: list[Path] = []
    for stem, fig in drawn:
        written += save_figure(fig, stem)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", required=True, help="facts.json from analysis.facts")
    parser.add_argument("--laws", help="laws.json from analysis.fit (needed for --which runs/both)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--which", choices=("both", "runs", "paper"), default="both")
    args = parser.parse_args(argv)
    if args.which != "paper" and not args.laws:
        parser.error("--laws is required unless --which paper")
    out = Path(args.out)
    try:
        check_output_files(figure_paths(out, args.which), [args.facts, args.laws])
        document = read_laws(args.laws) if args.which != "paper" else None
        facts = read_facts(args.facts)
        written = draw_all(out, args.which, document, facts)
    except (OutputPathError, LawsFileError, FactsFileError) as error:
        print(f"analysis.figures: error: {error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError, IndexError) as error:  # something drawn missing, or of another type
        print(f"analysis.figures: error: {args.facts}" + (f" or {args.laws}" if document is not None else "")
              + f" lacks what the figures show ({type(error).__name__}: {error}); nothing was written", file=sys.stderr)
        return 2
    atomic_write_json(out / "index.json", {
        "figures": [str(p.relative_to(out)) for p in written],
        "captions": CAPTIONS,
        "provenance": provenance({"facts": args.facts, "laws": args.laws, "which": args.which}),
    })
    print(f"wrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
