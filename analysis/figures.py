"""Figures for our runs and for the paper's published laws: ``python -m analysis.figures --runs results/runs.csv --laws results/laws.json --out results/figures``.

Writes ``OUT/runs/NAME.{png,pdf}`` (from the runs and the fitted laws; needs ``--runs`` and
``--laws``) and ``OUT/paper/NAME.{png,pdf}`` (from the published laws and REFERENCE tables), with
NAME in ``FIGURE_NAMES``, plus ``OUT/index.json`` (files, captions, provenance). ``--which runs``
or ``--which paper`` draws one set only. Matplotlib Agg, 3.4 in wide (one paper column), fonts of
at least 5.5 pt, units on every axis, legends outside the plot. When a law behind a figure of our
runs is not fitted, ended with a parameter on its bound, or rests only on optima at the grid's edge,
a "Caveat" banner above the plot says so (``law_caveat``) and absent laws draw no curve.

* ``loss_vs_tokens``: loss vs training tokens per size, optimal (interpolated) vs fixed hyperparameters;
* ``heatmaps``: loss over LR x B at two budgets, predicted optimum (star) and interpolated optimum (x);
* ``loss_law``: fitted L(N, T) for the fitting sizes, extrapolated to the held-out ones (points: measured);
* ``compute_optimal``: N_opt vs C, precise vs conventional, extrapolated to the target budget with the
  reduction annotated (the "40% figure");
* ``exponents``: fitted exponents with their bootstrap intervals (ours) and the published ones.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dit.atomic import atomic_path, atomic_write_json  # noqa: E402
from dit.provenance import provenance  # noqa: E402

from analysis import paper  # noqa: E402
from analysis.allocation import BILLION  # noqa: E402
from analysis.config import config_from_dict  # noqa: E402
from analysis.law_set import LawSet, LawsFileError, read_laws  # noqa: E402
from analysis.optima import find_optima  # noqa: E402
from analysis.runs import RunsTableError, load_runs  # noqa: E402

FIGURE_NAMES = ("loss_vs_tokens", "heatmaps", "loss_law", "compute_optimal", "exponents")
COLUMN_WIDTH = 3.4  # inches
STYLE = {
    "font.size": 7, "axes.labelsize": 7, "axes.titlesize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
    "ytick.labelsize": 6, "lines.linewidth": 1.0, "lines.markersize": 3, "axes.linewidth": 0.6, "legend.frameon": False,
    "savefig.dpi": 300, "pdf.fonttype": 42,
}
#: Characters per title line at column width and 7 pt.
TITLE_WIDTH = 60
LOSS_LABEL = "validation loss (epsilon MSE)"


def _figure(height: float = 2.4, ncols: int = 1, nrows: int = 1):
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, height), constrained_layout=True, squeeze=False)
    return fig, axes


def _title(ax, text: str) -> None:
    """A title wrapped to the column width."""
    ax.set_title(textwrap.fill(text, TITLE_WIDTH))


def _caveat(fig, text: str) -> None:
    """A boxed caveat above the plot (e.g. 'not fitted: ...'), in space the layout reserves for it."""
    from matplotlib.patches import Patch

    banner = fig.legend(handles=[Patch(visible=False)], labels=[textwrap.fill("Caveat: " + text, 72)], loc="outside upper center",
                        handlelength=0, handletextpad=0, frameon=True, fontsize=5.5)
    banner.get_frame().set_facecolor("#fff4d6")
    banner.get_frame().set_edgecolor("0.6")
    banner.get_frame().set_linewidth(0.5)


def law_caveat(document: dict, name: str) -> str | None:
    """Why a fitted law should not be read at face value (or why it is absent); None when it is fine."""
    record = document.get("laws", {}).get(name, {})
    if record.get("status") != "fitted":
        return f"{name}: not fitted ({record.get('reason', 'absent from the laws file')})"
    caveats = []
    bound = (record.get("fit") or {}).get("on_bound") or []
    if bound:
        caveats.append(f"{', '.join(bound)} ended on its bound (degenerate fit)")
    edge = record.get("edge_points") or {}
    if edge.get("used") and edge.get("used_on_edge") == edge.get("used"):
        caveats.append("every optimum used lies on the grid's edge")
    return f"{name}: " + "; ".join(caveats) if caveats else None


def _short(value: float) -> str:
    """Tick label for a count: 256, 1.02k, 82k."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _colors(count: int):
    return plt.cm.viridis(np.linspace(0.0, 0.9, max(count, 1)))


def save_figure(fig, stem: Path) -> list[Path]:
    """PNG and PDF (atomically), each carrying the code version in its metadata."""
    from dit.provenance import code_version

    source = f"analysis.figures, commit {code_version()['commit']}"
    metadata = {"png": {"Software": source}, "pdf": {"Creator": source}}
    paths = []
    for suffix in ("png", "pdf"):
        path = Path(f"{stem}.{suffix}")
        with atomic_path(path, suffix=f".{suffix}") as tmp:
            fig.savefig(tmp, format=suffix, metadata=metadata[suffix])
        paths.append(path)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------- ours
def runs_loss_vs_tokens(document: dict):
    laws = LawSet(document)
    fig, axes = _figure(2.9)
    ax = axes[0, 0]
    sizes = document["setup"]["fitting_sizes"]
    colors = _colors(len(sizes))
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
    _title(ax, f"Loss at the interpolated optimal (B, LR) and at one {fixed}, with the fitted laws")
    caveats = [c for c in (law_caveat(document, "loss_optimal"), law_caveat(document, "loss_conventional")) if c]
    if caveats:
        _caveat(fig, "; ".join(caveats) + ".")
    from matplotlib.lines import Line2D

    style = [Line2D([], [], color="0.3", marker="o", ls="none", label="optimal (B, LR)"),
             Line2D([], [], color="0.3", marker="s", mfc="none", ls="none", markersize=5, label="fixed cell"),
             Line2D([], [], color="0.3", ls="-", label="law, optimal"), Line2D([], [], color="0.3", ls="--", label="law, fixed cell")]
    handles, _ = ax.get_legend_handles_labels()
    fig.legend(handles=handles + style, loc="outside lower center", ncol=3)
    return fig


def _heatmap_panel(ax, losses, batch_values, rate_values, predicted=None, interpolated=None, title="", batch_label="batch size B (tokens)"):
    losses = np.asarray(losses, dtype=float)
    image = ax.imshow(losses, origin="lower", aspect="auto", cmap="viridis_r")
    colorbar = ax.figure.colorbar(image, ax=ax, pad=0.02, fraction=0.05)
    colorbar.set_label(LOSS_LABEL)
    colorbar.ax.tick_params(labelsize=5)
    middle = np.nanmean(losses)
    for i in range(losses.shape[0]):
        for j in range(losses.shape[1]):
            if np.isfinite(losses[i, j]):
                ax.text(j, i, f"{losses[i, j]:.4f}", ha="center", va="center", fontsize=5, color="black" if losses[i, j] < middle else "white")
    ax.set_xticks(range(len(rate_values)), [f"{v:.2g}" for v in rate_values], rotation=45)
    ax.set_yticks(range(len(batch_values)), [_short(v) for v in batch_values])
    ax.set_xlabel("learning rate (constant, dimensionless)")
    ax.set_ylabel(batch_label)
    _title(ax, title)

    def position(batch, rate):
        x = np.interp(np.log(rate), np.log(rate_values), np.arange(len(rate_values)), left=np.nan, right=np.nan)
        y = np.interp(np.log(batch), np.log(batch_values), np.arange(len(batch_values)), left=np.nan, right=np.nan)
        # outside the grid: extrapolate one step linearly in log space
        if not np.isfinite(x):
            step = np.log(rate_values[1] / rate_values[0])
            x = (np.log(rate) - np.log(rate_values[0])) / step
        if not np.isfinite(y):
            step = np.log(batch_values[1] / batch_values[0]) if len(batch_values) > 1 else 1.0
            y = (np.log(batch) - np.log(batch_values[0])) / step
        return x, y

    if predicted is not None:
        x, y = position(*predicted)
        ax.plot(x, y, "*", color="red", markersize=7, markeredgecolor="white", markeredgewidth=0.4, label="predicted optimum (laws)", clip_on=False)
    if interpolated is not None:
        x, y = position(*interpolated)
        ax.plot(x, y, "x", color="magenta", markersize=5, markeredgewidth=1.2, label="interpolated optimum (quadratic)")
    return image


def runs_heatmaps(document: dict, table, budgets_index=None):
    laws = LawSet(document)
    config = config_from_dict(document["config"])
    heldout = document["setup"].get("heldout_sizes") or []
    size = (heldout[-1] if heldout else document["setup"]["fitting_sizes"][-1])
    budgets = np.asarray(document["setup"]["budgets_tokens"])
    chosen = budgets_index or sorted({len(budgets) // 2, len(budgets) - 1})
    runs = table.completed(sizes=[size["size"]])
    runs = runs[runs["series"].isin(["grid", "heldout"])]
    losses = table.loss_matrix(list(runs.index), budgets[chosen], config.loss_column, config.token_match_tolerance)
    batch_values = np.unique(runs["batch_tokens"].to_numpy(float))
    rate_values = np.unique(runs["learning_rate"].to_numpy(float))
    fig, axes = _figure(2.0 * len(chosen), nrows=len(chosen))
    from analysis.optima import SizeGrid

    for row, (t, tokens) in enumerate(zip(chosen, budgets[chosen])):
        matrix = np.full((len(batch_values), len(rate_values)), np.nan)
        for k in range(len(runs)):
            i = int(np.searchsorted(batch_values, runs["batch_tokens"].iloc[k]))
            j = int(np.searchsorted(rate_values, runs["learning_rate"].iloc[k]))
            matrix[i, j] = losses[k, row]
        grid = SizeGrid(size["size"], size["parameters"], list(runs.index), runs["learning_rate"].to_numpy(float),
                        runs["batch_tokens"].to_numpy(float), runs["batch_clips"].to_numpy(float), losses[:, row : row + 1], float("nan"))
        optimum = find_optima(grid, None, config.optimum_method, config.optimum_band, config.optimum_max_gain)
        predicted = None
        if laws.has("batch_size") and laws.has("learning_rate"):
            n_b, t_b = size["N"], tokens / BILLION
            predicted = (float(laws.batch_tokens(n_b, t_b)), float(laws.learning_rate(n_b, t_b)))
        role = "held out" if heldout else "fitting"
        _heatmap_panel(axes[row, 0], matrix, batch_values, rate_values, predicted,
                       (optimum.batch_tokens[0, 0], optimum.learning_rate[0, 0]),
                       title=f"{size['size']} ({role}), T = {_short(tokens)} tokens")
    caveats = [c for c in (law_caveat(document, "batch_size"), law_caveat(document, "learning_rate")) if c]
    if caveats:
        text = "; ".join(caveats) + (": the star is no real prediction on that axis." if laws.has("batch_size") and laws.has("learning_rate")
                                     else ": no predicted optimum (no star).")
        _caveat(fig, text)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def runs_loss_law(document: dict):
    laws = LawSet(document)
    fig, axes = _figure(2.9)
    ax = axes[0, 0]
    fitting = document["setup"]["fitting_sizes"]
    heldout = document["setup"].get("heldout_sizes") or []
    budgets = np.asarray(document["setup"]["budgets_tokens"])
    grid = np.geomspace(budgets.min(), budgets.max() * 4, 60)
    colors = _colors(len(fitting) + len(heldout))
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
                  f"{covered} of {summary['points']} inside the 95% prediction interval")
    _title(ax, title)
    caveat = law_caveat(document, "loss_optimal")
    if caveat:
        _caveat(fig, caveat + ("; no law curves drawn." if not laws.has("loss_optimal") else "."))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def runs_compute_optimal(document: dict):
    compute = document.get("compute_optimal", {})
    comparison = document.get("comparison", {})
    fig, axes = _figure(3.0)
    ax = axes[0, 0]
    target = comparison.get("target_flops")
    setup = document.get("setup", {})
    run_flops = [s["flops_per_token"] * t for s in setup.get("fitting_sizes", []) for t in setup.get("budgets_tokens", [])]
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
    _title(ax, "Compute-optimal model size, precise vs conventional recipe"
           + (f", extrapolated to C = {target:.3g} FLOPs" if target else ""))
    if notes:
        _caveat(fig, "; ".join(notes) + ".")
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


def exponents_figure(rows, title: str, show_paper: bool = True):
    """Rows ``(label, value, interval, caveat)``: filled markers for sound fits, open grey ones for fits with a
    caveat (degenerate, every optimum on the grid's edge), 'not fitted' written in for absent laws."""
    fig, axes = _figure(2.9)
    ax = axes[0, 0]
    labels = [r[0] for r in rows]
    y = np.arange(len(rows))
    values = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=float)
    intervals = [r[2] if r[2] and all(np.isfinite(r[2])) else None for r in rows]
    low = np.array([i[0] if i else v for i, v in zip(intervals, values)])
    high = np.array([i[1] if i else v for i, v in zip(intervals, values)])
    questionable = np.array([bool(r[3]) and r[1] is not None for r in rows])
    sound = np.isfinite(values) & ~questionable
    ours = "published" if not show_paper else "this fit (95% interval)"
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
    _title(ax, title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def exponents_of_runs(document: dict):
    return exponents_figure(_exponent_rows(document), "Fitted exponents (ours) beside the paper's")


# ---------------------------------------------------------------------------------------------- paper
def paper_loss_vs_tokens():
    fig, axes = _figure(2.4)
    ax = axes[0, 0]
    sizes = paper.FITTING_SIZES + paper.HELDOUT_SIZES
    tokens = np.geomspace(*paper.FITTING_TOKENS, 50)
    for color, size in zip(_colors(len(sizes)), sizes):
        ax.plot(tokens * BILLION, paper.loss(size, tokens), "-" if size in paper.FITTING_SIZES else "--", color=color, label=f"N = {size}B")
    for size, t_b, published, measured in paper.LOSS_CHECKS:
        if paper.FITTING_TOKENS[0] <= t_b <= paper.FITTING_TOKENS[1]:
            ax.plot(t_b * BILLION, published, "*", color="red")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens T (video tokens)")
    ax.set_ylabel(f"{LOSS_LABEL}\nat the optimal (B, LR)")
    _title(ax, "Published L(N, T) over the fitted budgets (*: published predictions); fixed-hyperparameter curves not published")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def paper_heatmaps():
    from analysis.optima import SizeGrid

    fig, axes = _figure(4.2, nrows=2)
    batches, rates = np.meshgrid(paper.HEATMAP_BATCH_TOKENS, paper.HEATMAP_LEARNING_RATES, indexing="ij")
    for row, (t_b, values) in enumerate(sorted(paper.HEATMAPS.items())):
        predicted = (float(paper.optimal_batch_tokens(paper.HEATMAP_SIZE, t_b)), float(paper.optimal_learning_rate(paper.HEATMAP_SIZE, t_b)))
        grid = SizeGrid("paper-1.07b", paper.HEATMAP_SIZE * BILLION, [f"cell{i}" for i in range(batches.size)], rates.ravel(),
                        batches.ravel(), batches.ravel() / paper.CONTEXT_TOKENS, np.asarray(values, float).reshape(-1, 1), float("nan"))
        optimum = find_optima(grid)
        _heatmap_panel(axes[row, 0], values, paper.HEATMAP_BATCH_TOKENS, paper.HEATMAP_LEARNING_RATES, predicted,
                       (optimum.batch_tokens[0, 0], optimum.learning_rate[0, 0]),
                       title=f"paper, N = {paper.HEATMAP_SIZE}B parameters (held out), T = {t_b:g}B tokens")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def paper_loss_law():
    fig, axes = _figure(2.4)
    ax = axes[0, 0]
    tokens = np.geomspace(1.0, 200.0, 80)
    sizes = paper.FITTING_SIZES + paper.HELDOUT_SIZES
    for color, size in zip(_colors(len(sizes)), sizes):
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
    _title(ax, "Published law (lines; shaded: budgets fitted), predicted (*) and measured (open) held-out points")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def paper_compute_optimal():
    from analysis.findings import derived_optimal_parameters

    fig, axes = _figure(2.9)
    ax = axes[0, 0]
    flops = np.geomspace(1e18, 2e22, 100)
    ax.plot(flops, paper.precise_optimal_parameters(flops), "-", color="C0", label="precise (published): 0.8705 C^0.4294")
    ax.plot(flops, paper.empirical_optimal_parameters(flops), ":", color="C0", label="empirical (published): 1.5787 C^0.4146")
    derived = derived_optimal_parameters(flops, "6n")
    ax.plot(flops, derived, "--", color="0.5", label="minimising L(N, T) under C = 6NT")
    ax.plot([paper.TARGET_FLOPS], [paper.OPTIMAL_SIZE_AT_TARGET], "*", color="C0", markersize=7, label="precise at 1e22 (published point)")
    ax.plot([paper.TARGET_FLOPS], [paper.CONVENTIONAL_SIZE_AT_TARGET], "*", color="C3", markersize=7, label="conventional at 1e22 (published point)")
    ax.plot([paper.HELDOUT_BUDGET_FLOPS], [0.72e9], "D", mfc="none", color="black", label="0.72B held out at 5.85e20")
    reduction = 1 - paper.OPTIMAL_SIZE_AT_TARGET / paper.CONVENTIONAL_SIZE_AT_TARGET
    ax.annotate(f"{100 * reduction:.1f}% smaller", xy=(paper.TARGET_FLOPS, np.sqrt(paper.OPTIMAL_SIZE_AT_TARGET * paper.CONVENTIONAL_SIZE_AT_TARGET)),
                xytext=(-4, 0), textcoords="offset points", ha="right", va="center", fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("compute-optimal N_opt (parameters)")
    _title(ax, "Published compute-optimal model size (the '40% figure')")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1)
    return fig


def paper_exponents():
    rows = [(label, value, None, None) for label, value in PAPER_EXPONENTS.items()]
    return exponents_figure(rows, "Published exponents", show_paper=False)


PAPER_BUILDERS = {
    "loss_vs_tokens": paper_loss_vs_tokens, "heatmaps": paper_heatmaps, "loss_law": paper_loss_law,
    "compute_optimal": paper_compute_optimal, "exponents": paper_exponents,
}
CAPTIONS = {  # a "Caveat" banner above a plot of our runs flags laws that are degenerate or not fitted
    "loss_vs_tokens": "Loss vs training tokens per size at optimal and at fixed hyperparameters.",
    "heatmaps": "Validation loss over learning rate x batch size at two budgets; star: predicted optimum, x: interpolated optimum.",
    "loss_law": "Fitted L(N, T) for the fitting sizes, extrapolated to held-out sizes (dashed) with their measured points.",
    "compute_optimal": "Compute-optimal model size vs budget, precise vs conventional, extrapolated to the target budget.",
    "exponents": "Fitted exponents with 95% bootstrap intervals beside the published ones.",
}


def draw_all(out: Path, which: str, document: dict | None, table=None) -> list[Path]:
    written: list[Path] = []
    if which in ("both", "paper"):
        for name, builder in PAPER_BUILDERS.items():
            written += save_figure(builder(), out / "paper" / name)
    if which in ("both", "runs"):
        builders = {
            "loss_vs_tokens": lambda: runs_loss_vs_tokens(document),
            "heatmaps": lambda: runs_heatmaps(document, table),
            "loss_law": lambda: runs_loss_law(document),
            "compute_optimal": lambda: runs_compute_optimal(document),
            "exponents": lambda: exponents_of_runs(document),
        }
        for name, builder in builders.items():
            written += save_figure(builder(), out / "runs" / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", help="runs table (needed for --which runs/both)")
    parser.add_argument("--laws", help="laws.json from analysis.fit (needed for --which runs/both)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--which", choices=("both", "runs", "paper"), default="both")
    args = parser.parse_args(argv)
    document = table = None
    try:
        if args.which != "paper":
            if not args.runs or not args.laws:
                parser.error("--runs and --laws are required unless --which paper")
            document = read_laws(args.laws)
            table = load_runs(args.runs)
    except (LawsFileError, RunsTableError) as error:
        print(f"analysis.figures: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    written = draw_all(out, args.which, document, table)
    atomic_write_json(out / "index.json", {
        "figures": [str(p.relative_to(out)) for p in written],
        "captions": CAPTIONS,
        "provenance": provenance({"runs": args.runs, "laws": args.laws, "which": args.which}),
    })
    print(f"wrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
