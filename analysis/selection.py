"""Which runs enter the fit: step 1 of ``analysis.laws_document``.

Completed runs, and diverged runs up to their divergence (failed runs are left out; ``RunsTable.exclusions``
lists both with their reasons); the grid runs of the fitting sizes, one ``SizeGrid`` per size with its losses
interpolated to the common token budgets, one row per (batch, learning rate) cell: the mean of the cell's replicate
seeds (``grid.seeds_per_cell``), or the cell's one run; the held-out sizes' grid and ``heldout`` runs, cells by the
same rule; the grid cells (batch size, learning rate) run at every fitting size, each a candidate fixed cell of the
conventional recipe, and the configured one (or the cell of lowest mean loss rank); the run-to-run noise from the
noise-floor seeds; and the FLOP model that counts compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dit.sizes import SIZES

from analysis.allocation import FlopModel, WidthRule
from analysis.config import FitConfig
from analysis.optima import SizeGrid
from analysis.runs import RunsTable, run_to_run_noise, same_learning_rate


HELDOUT_SERIES = ("grid", "heldout")  # the runs that measure a held-out size's optima


class AnalysisError(ValueError):
    """The runs and the config do not allow the analysis; the message says what is missing."""


@dataclass
class Selection:
    """Runs and settings of one fit."""

    config: FitConfig
    table: RunsTable
    budgets: np.ndarray  # tokens
    fitting: list[SizeGrid]
    heldout: list[SizeGrid]
    conventional_cell: dict  # {batch_clips, learning_rate}; {} when no cell is common to the fitting sizes
    conventional_cell_source: str
    cells: list[dict]  # grid cells run at every fitting size, by batch then learning rate
    flop_model: FlopModel
    noise: dict | None  # runs.run_to_run_noise of the noise-floor seeds
    notes: list[str] = field(default_factory=list)

    @property
    def grid_run_ids(self) -> list[str]:
        """Every run behind the fitting sizes' cells (each cell's replicates, in order)."""
        return [run_id for grid in self.fitting for replicates in grid.replicates for run_id in replicates]

    @property
    def heldout_run_ids(self) -> list[str]:
        """Every run behind the held-out sizes' cells (a diverged one included: it counts up to its divergence)."""
        return [run_id for grid in self.heldout for replicates in grid.replicates for run_id in replicates]

    @property
    def seeds_per_cell(self) -> int:
        """Replicates behind a fitting cell's loss (the median over cells; 1 when there are none)."""
        counts = [len(replicates) for grid in self.fitting for replicates in grid.replicates]
        return int(np.median(counts)) if counts else 1

    def cell_runs(self, cell: dict) -> dict[str, list[str]]:
        """Fitting size -> its completed grid or conventional runs at ``cell`` (sizes without one left out)."""
        completed = self.table.completed(series=["grid", "conventional"])
        matches = completed[_matches_cell(completed, cell)]
        runs = {grid.size: list(matches.index[matches["size"] == grid.size]) for grid in self.fitting}
        return {size: ids for size, ids in runs.items() if ids}

    def resampled_run_ids(self) -> list[str]:
        """Every run whose loss a fit uses: the fitting sizes' grid runs and the conventional cell's runs."""
        ids = dict.fromkeys(self.grid_run_ids)
        for run_ids in self.cell_runs(self.conventional_cell).values() if self.conventional_cell else ():
            ids.update(dict.fromkeys(run_ids))
        return list(ids)


def select_runs(table: RunsTable, config: FitConfig) -> Selection:
    """Step 1 (module docstring); ``AnalysisError`` when the runs allow no fit at all."""
    notes: list[str] = []
    completed = table.completed()
    grid_runs = completed[completed["series"] == "grid"]
    sizes_by_n = list(grid_runs.groupby("size")["non_embedding_parameters"].first().sort_values().index)
    fitting_names = config.fitting_sizes if config.fitting_sizes is not None else [
        s for s in sizes_by_n if s not in config.heldout_sizes]
    missing = [s for s in fitting_names if s not in sizes_by_n]
    if missing:
        notes.append(f"fitting size(s) without completed grid runs: {', '.join(missing)}")
    fitting_names = [s for s in sizes_by_n if s in fitting_names]
    budgets = np.asarray(config.token_budgets or table.default_budgets(config.token_match_tolerance, sizes=fitting_names or None),
                         dtype=float)
    if budgets.size == 0:
        raise AnalysisError("no token budgets: there are no completed grid runs with milestones (series=grid, status=completed)")
    flop_model = FlopModel(config.flop_convention, float(_context_tokens(completed, config)), _width_rule(table, config, notes))
    fitting = [cell_grid(table, grid_runs[grid_runs["size"] == size], size, budgets, config, notes) for size in fitting_names]
    heldout = []
    for size in config.heldout_sizes:
        runs = completed[(completed["size"] == size) & completed["series"].isin(HELDOUT_SERIES)]
        if runs.empty:
            notes.append(f"held-out size {size} has no completed grid or heldout runs")
        else:
            heldout.append(cell_grid(table, runs, size, budgets, config, notes, series=HELDOUT_SERIES))
    cells = common_cells(fitting)
    cell = config.conventional_cell or _lowest_rank_cell(fitting, cells)
    source = "config" if config.conventional_cell else "lowest mean rank over the fitting sizes"
    noise = run_to_run_noise(table, budgets, config.loss_column, config.token_match_tolerance)
    return Selection(config, table, budgets, fitting, heldout, cell or {}, source, cells, flop_model, noise, notes)


def cell_grid(table: RunsTable, runs: pd.DataFrame, size: str, budgets, config: FitConfig, notes: list[str],
              series: tuple[str, ...] = ("grid",), among=None) -> SizeGrid:
    """A size's grid with one row per (batch, learning rate) cell: the mean loss of the cell's replicates.

    ``runs`` are the size's completed runs of ``series``: the grid runs of a fitting size, the grid and ``heldout``
    runs of a held-out size (``HELDOUT_SERIES``), whose diverged runs count by the same rule as a fitting size's;
    ``among``: if given, only these run ids take part (completed or not).

    A cell's replicates are its grid runs with different seeds (``grid.seeds_per_cell``). The learning rate is
    constant after warm-up, so a run's loss at a budget is that of the same run trained to that budget: a run that
    diverged later counts at the budgets it reached. At a budget that a replicate did not reach because it diverged,
    the cell has no loss and is *unstable* there (``SizeGrid.unstable``: it bounds the optimum, ``analysis.optima``);
    a mean of the stable replicates alone would be biased low. A cell with a replicate that failed for another reason
    is left out, with a note. One completed replicate per cell gives the runs themselves, ids unchanged.
    """
    every = table.runs()
    every = every[every["series"].isin(series) & (every["size"] == size)]
    if among is not None:  # only these runs (a held-out proposal's group), whatever their status
        every = every[every.index.isin(list(among))]
    if all(len(group) == 1 for _, group in runs.groupby(["batch_clips", "learning_rate"], sort=False)) and len(every) == len(runs):
        return _size_grid(table, runs, size, budgets, config)
    keep, replicates, diverged = [], [], []
    for (batch, rate), group in every.groupby(["batch_clips", "learning_rate"], sort=False):
        failed = group[~group["status"].isin(["completed", "diverged"])]
        if len(failed):
            notes.append(f"{size} cell batch_clips={int(batch)}, learning_rate={rate:g}: {len(failed)} of {len(group)} "
                         f"replicates {'/'.join(sorted(set(failed['status'])))}; the cell is left out")
            continue
        keep.append(group.index[0])
        replicates.append(tuple(group.sort_values("seed").index))
        diverged.append(group["status"].to_numpy() == "diverged")
    ids = [run_id for group in replicates for run_id in group]
    losses = table.loss_matrix(ids, budgets, config.loss_column, config.token_match_tolerance)
    rows = np.cumsum([0] + [len(group) for group in replicates])
    cell_losses = np.stack([losses[a:b].mean(axis=0) for a, b in zip(rows[:-1], rows[1:])]) if replicates \
        else np.empty((0, len(budgets)))
    stopped = _stopped_short(table, ids, np.concatenate(diverged) if diverged else np.empty(0, bool),
                             every.index, budgets, config.token_match_tolerance)
    unstable = np.stack([np.any(stopped[a:b], axis=0)  # a diverged replicate stopped short of the budget ...
                         & np.all(flags[:, None] | np.isfinite(losses[a:b]), axis=0)  # ... that the stable ones reached
                         for flags, a, b in zip(diverged, rows[:-1], rows[1:])]) if replicates else np.empty((0, len(budgets)), bool)
    first = every.loc[keep]
    return SizeGrid(
        size=size,
        parameters=float(first["non_embedding_parameters"].iloc[0]),
        run_ids=["+".join(group) for group in replicates],
        learning_rates=first["learning_rate"].to_numpy(float),
        batch_tokens=first["batch_tokens"].to_numpy(float),
        batch_clips=first["batch_clips"].to_numpy(float),
        losses=cell_losses,
        flops_per_token=float(np.nanmedian(table.flops_per_token(ids, config.flop_convention))),
        width=int(first["width"].iloc[0]),
        depth=int(first["depth"].iloc[0]),
        members=replicates,
        unstable=unstable & np.isnan(cell_losses),
    )


def _stopped_short(table: RunsTable, run_ids: list[str], diverged: np.ndarray, size_runs, budgets, tolerance: float) -> np.ndarray:
    """``(runs, budgets)``: the run diverged before reaching the budget, which lies inside the size's schedule (between
    the first and the last milestone any of its grid runs reached); a budget outside the schedule is no run's."""
    def milestones(run_id: str) -> np.ndarray:
        tokens, losses = table.curve(run_id)
        return tokens[np.isfinite(losses) & (tokens > 0)]

    reached = [t for t in map(milestones, size_runs) if t.size]
    budgets = np.asarray(budgets, dtype=float)
    if not reached:
        return np.zeros((len(run_ids), budgets.size), dtype=bool)
    first, last = min(t.min() for t in reached), max(t.max() for t in reached)
    inside = (budgets >= first * (1 - tolerance)) & (budgets <= last * (1 + tolerance))
    out = np.zeros((len(run_ids), budgets.size), dtype=bool)
    for i, run_id in enumerate(run_ids):
        if diverged[i]:
            run_tokens = milestones(run_id)
            furthest = run_tokens.max() if run_tokens.size else 0.0
            out[i] = inside & (budgets > furthest * (1 + tolerance))
    return out


def _size_grid(table: RunsTable, runs: pd.DataFrame, size: str, budgets, config: FitConfig) -> SizeGrid:
    run_ids = list(runs.index)
    first = runs.iloc[0]
    return SizeGrid(
        size=size,
        parameters=float(first["non_embedding_parameters"]),
        run_ids=run_ids,
        learning_rates=runs["learning_rate"].to_numpy(float),
        batch_tokens=runs["batch_tokens"].to_numpy(float),
        batch_clips=runs["batch_clips"].to_numpy(float),
        losses=table.loss_matrix(run_ids, budgets, config.loss_column, config.token_match_tolerance),
        flops_per_token=float(np.nanmedian(table.flops_per_token(run_ids, config.flop_convention))),
        width=int(first["width"]),
        depth=int(first["depth"]),
    )


def _matches_cell(runs: pd.DataFrame, cell: dict) -> pd.Series:
    """Runs at ``cell``: the same batch size in clips and the same learning rate."""
    return (runs["batch_clips"] == cell["batch_clips"]) & same_learning_rate(runs["learning_rate"], cell["learning_rate"])


def _context_tokens(completed: pd.DataFrame, config: FitConfig) -> int:
    if config.context_tokens is not None:
        return int(config.context_tokens)
    tokens_per_clip = sorted(set(completed["tokens_per_clip"].astype(int))) if not completed.empty else []
    if len(tokens_per_clip) == 1:
        return tokens_per_clip[0]
    if not tokens_per_clip:
        raise AnalysisError("no completed runs: cannot infer context_tokens (tokens per clip); set context_tokens in the fit config")
    raise AnalysisError(f"runs have different tokens_per_clip {tokens_per_clip}; set context_tokens in the fit config")


def _width_rule(table: RunsTable, config: FitConfig, notes: list[str]) -> WidthRule:
    sizes = table.runs().groupby("size")[["non_embedding_parameters", "width"]].first()
    if config.width_rule == "fitted":
        try:
            return WidthRule.fit(sizes["non_embedding_parameters"], sizes["width"])
        except ValueError as error:
            if not all(s in SIZES for s in sizes.index):
                raise AnalysisError(f"width_rule: fitted: {error}") from None
            notes.append(f"width_rule: fitted: {error}; using the size registry's rule instead")
    family = config.size_family
    if family is None:
        families = {SIZES[s].family for s in sizes.index if s in SIZES}
        unregistered = [s for s in sizes.index if s not in SIZES]
        if len(families) != 1 or unregistered:
            raise AnalysisError(
                "width_rule: registry needs every size in one registered family; "
                f"families {sorted(families)}, unregistered sizes {unregistered}: set size_family or width_rule: fitted"
            )
        family = families.pop()
    return WidthRule("registry", family)


def common_cells(fitting: list[SizeGrid]) -> list[dict]:
    """The (batch_clips, learning_rate) cells run at every fitting size, by batch then learning rate."""
    common = None
    for grid in fitting:
        cells = {(int(b), float(r)) for b, r in zip(grid.batch_clips, grid.learning_rates)}
        common = cells if common is None else common & cells
    return [{"batch_clips": b, "learning_rate": r} for b, r in sorted(common or ())]


def _lowest_rank_cell(fitting: list[SizeGrid], cells: list[dict]) -> dict | None:
    """The common cell with the lowest mean loss rank over the fitting sizes and budgets."""
    if not cells:
        return None
    ranks = {(c["batch_clips"], c["learning_rate"]): [] for c in cells}
    for grid in fitting:
        with np.errstate(invalid="ignore"):
            rank = np.argsort(np.argsort(np.where(np.isfinite(grid.losses), grid.losses, np.inf), axis=0), axis=0)
        for i, key in enumerate(zip(grid.batch_clips.astype(int), grid.learning_rates)):
            if key in ranks:
                ranks[key].append(float(np.mean(rank[i])))
    best = min(ranks, key=lambda key: (np.mean(ranks[key]), key))
    return {"batch_clips": int(best[0]), "learning_rate": float(best[1])}
