"""How the figures look: one paper column wide, small fonts with units, caveat banners, atomic PNG and PDF with the
code version in their metadata, and the heatmap panel both our grid and the paper's are drawn with."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dit.atomic import atomic_path  # noqa: E402
from dit.provenance import code_version  # noqa: E402

from analysis.formatting import count, level  # noqa: E402

COLUMN_WIDTH = 3.4  # inches
STYLE = {
    "font.size": 7, "axes.labelsize": 7, "axes.titlesize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
    "ytick.labelsize": 6, "lines.linewidth": 1.0, "lines.markersize": 3, "axes.linewidth": 0.6, "legend.frameon": False,
    "savefig.dpi": 300, "pdf.fonttype": 42,
}
#: Characters per title line at column width and 7 pt.
TITLE_WIDTH = 60
LOSS_LABEL = "validation loss (epsilon MSE)"


def new_figure(height: float = 2.4, ncols: int = 1, nrows: int = 1):
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, height), constrained_layout=True, squeeze=False)
    return fig, axes


def set_title(ax, text: str) -> None:
    """A title wrapped to the column width."""
    ax.set_title(textwrap.fill(text, TITLE_WIDTH))


def add_caveat(fig, text: str) -> None:
    """A boxed caveat above the plot (e.g. 'not fitted: ...'), in space the layout reserves for it."""
    banner = fig.legend(handles=[Patch(visible=False)], labels=[textwrap.fill("Caveat: " + text, 72)], loc="outside upper center",
                        handlelength=0, handletextpad=0, frameon=True, fontsize=5.5)
    banner.get_frame().set_facecolor("#fff4d6")
    banner.get_frame().set_edgecolor("0.6")
    banner.get_frame().set_linewidth(0.5)


def level_label(document: dict) -> str:
    """The fit's confidence level as a percentage, for labels: 0.95 -> '95%'."""
    return level(document["config"]["confidence_level"])


def color_cycle(count: int):
    return plt.cm.viridis(np.linspace(0.0, 0.9, max(count, 1)))


def save_figure(fig, stem: Path) -> list[Path]:
    """PNG and PDF (atomically), each carrying the code version in its metadata."""
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


def heatmap_panel(ax, losses, batch_values, rate_values, predicted=None, interpolated=None, title="", batch_label="batch size B (tokens)"):
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
    ax.set_yticks(range(len(batch_values)), [count(v) for v in batch_values])
    ax.set_xlabel("learning rate (constant, dimensionless)")
    ax.set_ylabel(batch_label)
    set_title(ax, title)

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
