"""Where the batch axis turns: at each size and budget, the best cell of every batch size against the smallest batch's.

``python -m analysis.batch_axis --runs RUNS [--config FIT_YAML] --out OUT.json``: the fit config's
``bootstrap_resamples``, ``seed`` and ``confidence_level`` set the resamples and the level. An ``--out`` that is a
folder, below a file or one of the inputs is refused (exit 2) before any work.

The default grid's optima along B sit at one clip per step, the smallest batch there is (README, step 2). Whether
the loss turns at longer budgets is measured by training a size further (``config/batch-axis.yaml``, then
``snakemake batch_axis``) and read here from the runs table, as it can be from the default's:

* per (size, budget), the optimum of the project's finder on the cell means (``analysis.optima.find_optima``, as
  ``analysis.fit`` finds it), its batch and whether it is interior along B;
* per batch size, its *best cell*: the lowest cell mean over the learning rates, and its *excess*, that loss over the
  smallest batch's best cell, minus 1. Its interval comes from resampled runs (``analysis.resampling``): each run's
  curve scaled by ``1 + sigma z``, ``sigma`` the relative std between the replicate seeds of the cells that are their
  batch's best at some budget, pooled over them and the budgets (``analysis.runs.pooled_relative_std``; cells at
  high learning rates, near divergence, are several times noisier and compete for no optimum), drawn with the
  uncertainty of that estimate; each batch's best cell is found again in every resample, so the interval carries
  the choice of learning rate. A grid with one seed per cell takes the noise-floor seeds' relative std
  (``analysis.runs.run_to_run_noise``); with neither, no excess has an interval;
* the rule's verdict (``analysis.verdicts``) on the excess, whose positive sign is the larger batch being worse (the
  axis has not turned) and whose interval below 0 is the larger batch being better (it has turned). ``turned`` lists the
  budgets at which some larger batch is better.

A cell with a replicate that diverged before a budget has no loss there (``analysis.selection.cell_grid``) and is
never a best cell; a learning rate is a best cell's on the grid's edge when no measured rate lies on one side of it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from analysis import verdicts
from analysis.config import FitConfig, FitConfigError, load_config
from analysis.intervals import percentile_interval
from analysis.optima import SizeGrid, find_optima
from analysis.resampling import RunNoise
from analysis.runs import RunsTable, RunsTableError, load_runs, pooled_relative_std, run_to_run_noise
from analysis.selection import cell_grid
from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.provenance import provenance

SCHEMA = "analysis.batch_axis/1"


def size_grids(table: RunsTable, config: FitConfig, notes: list[str]) -> list[tuple[SizeGrid, list[float]]]:
    """Each size of the grid series (by N) with its cells' mean losses at its own milestones."""
    completed = table.completed(series=["grid"])
    if completed.empty:
        raise ValueError(f"{table.source} has no completed grid runs")
    order = completed.groupby("size")["non_embedding_parameters"].first().sort_values()
    out = []
    for size in order.index:
        budgets = table.default_budgets(config.token_match_tolerance, sizes=[size])
        out.append((cell_grid(table, completed[completed["size"] == size], size, budgets, config, notes), budgets))
    return out


def _best_cells(grid: SizeGrid, losses: np.ndarray, batch: float) -> tuple[np.ndarray, np.ndarray]:
    """Per resample and budget, the lowest loss among the cells of ``batch`` clips and that cell's row."""
    rows = np.flatnonzero(grid.batch_clips == batch)
    values = np.where(np.isfinite(losses[:, rows]), losses[:, rows], np.inf)  # (R + 1, cells, budgets)
    best = np.argmin(values, axis=1)
    loss = np.take_along_axis(values, best[:, None], 1)[:, 0]
    return np.where(np.isfinite(loss), loss, np.nan), rows[best]


def _rate_on_edge(grid: SizeGrid, measured: np.ndarray, row: int, budget: int) -> bool:
    """Whether the best cell's learning rate has no measured rate of the same batch on one side of it (``measured``:
    ``(cells, budgets)``, a loss or an unstable cell, which bounds the optimum from its side as in ``analysis.optima``)."""
    rates = grid.learning_rates[(grid.batch_clips == grid.batch_clips[row]) & measured[:, budget]]
    return bool(grid.learning_rates[row] <= rates.min() or grid.learning_rates[row] >= rates.max())


def best_rows(grid: SizeGrid) -> list[int]:
    """The cells that are their batch's best cell at one budget or more: the cells the excesses compare."""
    rows = {int(r) for batch in set(grid.batch_clips.tolist()) for r in _best_cells(grid, grid.losses[None], batch)[1][0]}
    return sorted(r for r in rows if np.isfinite(grid.losses[r]).any())


def size_record(grid: SizeGrid, budgets: list[float], noise: RunNoise, level: float) -> dict:
    losses = noise.losses(grid.replicates, grid.losses)  # (R + 1, cells, budgets), row 0 as measured
    measured = np.isfinite(grid.losses) | (False if grid.unstable is None else np.asarray(grid.unstable, bool))
    optima = find_optima(grid)
    batches = sorted(set(grid.batch_clips.tolist()))
    best = {batch: _best_cells(grid, losses, batch) for batch in batches}  # (loss, row), each (R + 1, budgets)
    smallest = best[batches[0]][0]
    points = []
    for t, tokens in enumerate(budgets):
        by_batch = []
        for batch in batches:
            loss, rows = best[batch]
            entry = {"batch_clips": int(batch), "best_loss": None, "learning_rate": None, "learning_rate_on_edge": None}
            if np.isfinite(loss[0, t]):
                row = int(rows[0, t])
                entry.update(best_loss=float(loss[0, t]), learning_rate=float(grid.learning_rates[row]),
                             learning_rate_on_edge=_rate_on_edge(grid, measured, row, t))
            if batch != batches[0]:
                excess = loss[:, t] / smallest[:, t] - 1
                interval = list(percentile_interval(excess[1:], level)) if np.isfinite(excess[1:]).any() else None
                entry.update(excess=float(excess[0]) if np.isfinite(excess[0]) else None, excess_interval=interval,
                             verdict=verdicts.from_interval(interval))
            by_batch.append(entry)
        points.append({
            "tokens": float(tokens), "tokens_per_parameter": float(tokens / grid.parameters),
            "optimum": {"batch_clips": float(optima.batch_tokens[0, t] / (grid.batch_tokens[0] / grid.batch_clips[0])),
                        "learning_rate": float(optima.learning_rate[0, t]), "interior_batch": bool(optima.interior_batch[0, t])},
            "batches": by_batch,
            "turned": any(entry.get("verdict") == verdicts.CONTRADICTED for entry in by_batch),
        })
    return {"size": grid.size, "parameters": grid.parameters, "seeds_per_cell": grid.fewest_replicates,
            "batch_clips": [int(b) for b in batches], "learning_rates": sorted(set(grid.learning_rates.tolist())),
            "points": points, "turned_at_tokens": [p["tokens"] for p in points if p["turned"]]}


def batch_axis(table: RunsTable, resamples: int = 1000, seed: int = 0, level: float = 0.95,
               config: FitConfig | None = None) -> dict:
    """The document ``main`` writes (module docstring)."""
    config = config or FitConfig()
    notes: list[str] = []
    grids = size_grids(table, config, notes)
    groups = [({"size": grid.size, "batch_clips": int(grid.batch_clips[row]), "learning_rate": float(grid.learning_rates[row])},
               list(grid.replicates[row])) for grid, _ in grids for row in best_rows(grid)]
    budgets_of_all = sorted({b for _, budgets in grids for b in budgets})
    args = (budgets_of_all, config.loss_column, config.token_match_tolerance)
    noise_record = pooled_relative_std(table, groups, *args)
    source = "replicate seeds of the cells that are their batch's best at some budget"
    if noise_record is None:
        noise_record, source = run_to_run_noise(table, *args), "noise-floor seeds (series=noise) and the grid run of the same cell"
    noise = RunNoise.draw([run for grid, _ in grids for members in grid.replicates for run in members], resamples, seed)
    if noise_record is None:  # an unknown std: every resample's losses are NaN, so no excess has an interval
        notes.append("no grid cell has two replicate seeds and no noise-floor seeds were run: the noise of a cell is "
                     "unknown, so no excess has an interval")
    noise.set_std(np.nan if noise_record is None else noise_record["relative_std"],
                  None if noise_record is None else noise_record["degrees_of_freedom"], seed)
    return {
        "schema": SCHEMA, "level": level, "resamples": resamples, "seed": seed,
        "loss": f"{config.loss_column}, a cell's the mean over its replicate seeds",
        "noise": None if noise_record is None else {
            "source": source, **{key: noise_record[key] for key in ("relative_std", "degrees_of_freedom", "degrees_of_freedom_range")}},
        "verdict_rule": verdicts.RULE,
        "tested": "excess of a batch's best cell over the smallest batch's best cell (positive: the larger batch is worse)",
        "sizes": [size_record(grid, budgets, noise, level) for grid, budgets in grids],
        "notes": notes,
    }


def summary(document: dict | None) -> dict | None:
    """What the facts show of a batch-axis document: per larger batch, how many (size, budget) pairs find it worse than
    the smallest batch beyond the noise, better, or within it (or have no interval), and the median excess."""
    if not document:
        return None
    outcome = {verdicts.SUPPORTED: "worse", verdicts.CONTRADICTED: "better", verdicts.INCONCLUSIVE: "within_noise",
               verdicts.NOT_TESTED: "no_interval"}
    batches: dict[int, dict] = {}
    for size in document["sizes"]:
        for point in size["points"]:
            for entry in point["batches"]:
                if "verdict" not in entry:
                    continue
                record = batches.setdefault(entry["batch_clips"], {"batch_clips": entry["batch_clips"], "pairs": 0, "excesses": [],
                                                                   **{name: 0 for name in outcome.values()}})
                record["pairs"] += 1
                record[outcome[entry["verdict"]]] += 1
                if entry["excess"] is not None:
                    record["excesses"].append(entry["excess"])
    for record in batches.values():
        excesses = record.pop("excesses")
        record["median_excess"] = float(np.median(excesses)) if excesses else None
    return {"smallest_batch_clips": min((s["batch_clips"][0] for s in document["sizes"]), default=None),
            "batches": [batches[b] for b in sorted(batches)], "noise": document.get("noise"), "level": document.get("level"),
            "turned": [{"size": s["size"], "tokens": t} for s in document["sizes"] for t in s["turned_at_tokens"]],
            "sizes": [s["size"] for s in document["sizes"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.batch_axis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="runs table (CSV or Parquet) with replicate seeds per grid cell")
    parser.add_argument("--config", help="fit config YAML (analysis.fit's): bootstrap_resamples, seed, confidence_level, "
                                         "loss_column, token_match_tolerance (default: FitConfig's defaults)")
    parser.add_argument("--out", required=True, help="output JSON (written atomically)")
    args = parser.parse_args(argv)
    try:
        check_output_files([args.out], [args.runs, args.config])
        config = load_config(args.config)
        document = batch_axis(load_runs(args.runs), config.bootstrap_resamples, config.seed, config.confidence_level, config)
    except (FitConfigError, RunsTableError, OutputPathError, OSError, ValueError) as error:
        print(f"analysis.batch_axis: error: {error}", file=sys.stderr)
        return 2
    document["provenance"] = provenance({"runs": args.runs, "fit_config": config.to_dict()})
    atomic_write_json(args.out, document)
    for size in document["sizes"]:
        for point in size["points"]:
            excess = ", ".join(f"{b['batch_clips']} clips {100 * b['excess']:+.2f}% "
                               + ("(no interval)" if b["excess_interval"] is None else
                                  "[{:+.2f}%, {:+.2f}%]".format(*(100 * v for v in b["excess_interval"])))
                               + f" {b['verdict']}" for b in point["batches"] if b.get("excess") is not None) or "no larger batch"
            print(f"{size['size']} at {point['tokens']:.4g} tokens: optimum {point['optimum']['batch_clips']:.3g} clips "
                  f"({'interior' if point['optimum']['interior_batch'] else 'edge'}); excess over "
                  f"{size['batch_clips'][0]} clip{'s' if size['batch_clips'][0] > 1 else ''}: {excess}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
