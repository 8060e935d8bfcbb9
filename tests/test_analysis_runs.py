"""Runs table: validation messages name column and row; exclusions; losses at common budgets; optima."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.blas import limit_openblas_threads
from analysis.optima import SizeGrid, find_optima, near_optimal_band
from analysis.runs import (
    RunsTable,
    RunsTableError,
    cluster_budgets,
    effective_degrees_of_freedom,
    interpolate_loglog,
    load_runs,
    noise_degrees_of_freedom,
    noise_quantile,
    noise_std_interval,
    run_to_run_noise,
)
from analysis.synthetic_runs import SyntheticDesign, synthetic_runs

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread


@pytest.fixture(scope="module")
def frame():
    design = SyntheticDesign(fitting_sizes=["tiny-8k", "tiny-18k"], heldout_sizes=[], noise_size="tiny-8k")
    return synthetic_runs(design=design, seed=3)


def write_csv(frame, tmp_path):
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    return path


def test_valid_table_loads_from_csv_and_parquet(frame, tmp_path):
    table = load_runs(write_csv(frame, tmp_path))
    assert len(table.rows) == len(frame)
    frame.to_parquet(tmp_path / "runs.parquet", index=False)
    assert len(load_runs(tmp_path / "runs.parquet").rows) == len(frame)


def test_missing_column_is_named(frame, tmp_path):
    with pytest.raises(RunsTableError, match="missing column\\(s\\) 'learning_rate'"):
        load_runs(write_csv(frame.drop(columns=["learning_rate"]), tmp_path))


def test_non_numeric_value_names_column_row_and_line(frame, tmp_path):
    bad = frame.astype({"tokens": object}).copy()
    bad.loc[5, "tokens"] = "many"
    with pytest.raises(RunsTableError) as error:
        load_runs(write_csv(bad, tmp_path))
    message = str(error.value)
    assert "row 5" in message and "CSV line 7" in message and "'tokens'" in message and "'many'" in message
    assert frame.loc[5, "run_id"] in message


def test_missing_loss_of_completed_run_is_rejected(frame):
    bad = frame.copy()
    bad.loc[2, "validation_loss"] = np.nan
    with pytest.raises(RunsTableError, match="row 2 .*column 'validation_loss' is missing.*only for runs whose status is not 'completed'"):
        RunsTable.from_frame(bad)


def test_unknown_series_and_inconsistent_run_are_rejected(frame):
    bad = frame.copy()
    bad.loc[0, "series"] = "sweep"
    with pytest.raises(RunsTableError, match="row 0 .*column 'series': 'sweep' is not one of grid, conventional"):
        RunsTable.from_frame(bad)
    bad = frame.copy()
    bad.loc[1, "learning_rate"] = 0.123
    with pytest.raises(RunsTableError, match="row 1 .*column 'learning_rate'.*differs from .* on row 0 of the same run"):
        RunsTable.from_frame(bad)


def test_batch_tokens_must_match_clips_times_tokens_per_clip(frame):
    bad = frame.copy()
    bad.loc[3, "batch_tokens"] = 7
    with pytest.raises(RunsTableError, match="row 3 .*'batch_tokens': 7 != batch_clips x tokens_per_clip"):
        RunsTable.from_frame(bad)


def test_diverged_and_failed_runs_are_kept_and_excluded_with_reasons(frame):
    table = RunsTable.from_frame(frame)
    excluded = {e["run_id"]: e for e in table.exclusions()}
    statuses = sorted(e["status"] for e in excluded.values())
    assert statuses == ["diverged", "failed"]
    failed = next(e for e in excluded.values() if e["status"] == "failed")
    assert failed["reason"] == "failed: out of memory" and failed["milestones_reached"] == 0
    assert not set(excluded) & set(table.completed().index)


def test_a_run_that_reached_no_milestone_counts_none(frame, tmp_path):
    """pipeline.collect writes such a run once, with step and tokens 0 and empty losses (tests/test_pipeline_collect.py)."""
    from pipeline.collect import write_runs_table

    first = frame[frame["status"] == "completed"].iloc[0].to_dict()
    early = {**first, "run_id": "grid_early", "status": "diverged", "status_reason": "training loss 896.9 at step 2",
             "step": 0, "tokens": 0, **{key: np.nan for key in ("flops", "flops_6n", "train_loss", "validation_loss")}}
    path = tmp_path / "runs.csv"
    write_runs_table(path, [first, early])
    excluded = load_runs(path).exclusions()
    assert [(e["run_id"], e["milestones_reached"]) for e in excluded] == [("grid_early", 0)]


def test_loglog_interpolation_is_exact_for_power_laws_and_bounded():
    tokens = np.array([1e6, 2e6, 4e6])
    losses = 3.0 * tokens**-0.1
    budgets = np.array([0.97e6, 1.5e6, 4.1e6, 5e6])
    values = interpolate_loglog(tokens, losses, budgets, tolerance=0.05)
    assert np.allclose(values[:3], 3.0 * budgets[:3] ** -0.1, rtol=1e-12)
    assert np.isnan(values[3])  # beyond the last milestone by more than the tolerance


def test_budgets_cluster_whole_step_milestones():
    assert cluster_budgets([1000448, 1003520, 2000896, 2007040, 1e9], 0.05) == [1000448, 2000896, 1e9]


def test_noise_floor_from_seeds(frame):
    table = RunsTable.from_frame(frame)
    noise = run_to_run_noise(table, table.default_budgets(0.05), "validation_loss", 0.05)
    assert noise is not None and 0 < noise["relative_std"] < 2e-3
    assert noise["groups"][0]["seeds"] == 5  # 4 noise seeds and the grid run of the same cell


def test_the_noise_estimates_degrees_of_freedom_follow_the_correlation_between_budgets():
    rng = np.random.default_rng(0)
    runs, budgets, groups = 6, 5, 3

    def deviations(rho):
        # each run's relative deviations: equicorrelated normals across the budgets
        shared = rng.standard_normal((runs, 1))
        own = rng.standard_normal((runs, budgets))
        d = np.sqrt(rho) * shared + np.sqrt(1 - rho) * own
        return d - d.mean(axis=0)

    same = effective_degrees_of_freedom([np.tile(rng.standard_normal((runs, 1)), (1, budgets)) for _ in range(groups)])
    assert same["degrees_of_freedom"] == pytest.approx(groups * (runs - 1))  # one run, one deviation
    assert same["degrees_of_freedom_range"] == [groups * (runs - 1), groups * (runs - 1) * budgets]
    # Satterthwaite for equicorrelated budgets: (n - 1) m^2 / (m + m (m - 1) rho^2) per group; the correlation
    # is estimated from 3 groups of 6 runs, so the count only roughly matches and errs low
    for rho in (0.0, 0.5):
        exact = groups * (runs - 1) * budgets / (1 + (budgets - 1) * rho**2)
        counts = [effective_degrees_of_freedom([deviations(rho) for _ in range(groups)])["degrees_of_freedom"] for _ in range(200)]
        assert 0.6 * exact < np.median(counts) <= 1.02 * exact
    # a missing budget of one group is left out of that group's count
    partial = [deviations(0.0) for _ in range(groups)]
    partial[0][:, -1] = np.nan
    assert effective_degrees_of_freedom(partial)["degrees_of_freedom_range"] == [groups * (runs - 1),
                                                                                 (runs - 1) * (budgets - 1) + 2 * (runs - 1) * budgets]


def test_noise_interval_and_quantile_are_the_chi_square_and_students_t():
    low, high = noise_std_interval(0.02, 10.0, 0.95)
    assert low == pytest.approx(0.02 * np.sqrt(10 / stats.chi2.ppf(0.975, 10)))
    assert high == pytest.approx(0.02 * np.sqrt(10 / stats.chi2.ppf(0.025, 10)))
    assert noise_std_interval(0.02, None, 0.95) is None
    assert noise_quantile(0.95, 10.0) == pytest.approx(stats.t.ppf(0.975, 10))
    assert noise_quantile(0.95, None) == pytest.approx(1.959964, rel=1e-6)
    recorded = {"detail": {"degrees_of_freedom": 23.5, "groups": [{"seeds": 5}] * 3}}
    assert noise_degrees_of_freedom(recorded) == 23.5
    assert noise_degrees_of_freedom({"detail": {"groups": [{"seeds": 5}] * 3}}) == 12  # older record: the runs alone
    assert noise_degrees_of_freedom(None) is None


def quadratic_grid(center_lr=1.3e-3, center_batch=5000.0, lrs=(5e-4, 1e-3, 2e-3, 4e-3), batches=(2048, 4096, 8192)):
    rates, tokens = np.meshgrid(lrs, batches, indexing="ij")
    rates, tokens = rates.ravel(), tokens.ravel()
    # A valley that is exactly quadratic in log loss, the form analysis.optima fits.
    losses = 0.5 * np.exp(0.012 * np.log(rates / center_lr) ** 2 + 0.008 * np.log(tokens / center_batch) ** 2)
    return SizeGrid("tiny-8k", 8192, [f"r{i}" for i in range(rates.size)], rates, tokens, tokens / 256, losses[:, None], 10.0)


def test_quadratic_optimum_recovers_an_interior_optimum_exactly():
    grid = quadratic_grid()
    optimum = find_optima(grid)
    assert optimum.learning_rate[0, 0] == pytest.approx(1.3e-3, rel=1e-6)
    assert optimum.batch_tokens[0, 0] == pytest.approx(5000.0, rel=1e-6)
    assert optimum.loss[0, 0] == pytest.approx(0.5, abs=1e-9)
    assert not optimum.edge_batch[0, 0] and not optimum.edge_learning_rate[0, 0]
    band = near_optimal_band(grid, 0, 0.002)
    assert band and all(cell["loss"] <= band[0]["loss"] * 1.002 for cell in band)


def test_a_cell_that_stopped_learning_does_not_drag_the_optimum_below_the_data():
    grid = quadratic_grid()
    stuck = np.argmax(grid.learning_rates * grid.batch_tokens)  # largest LR and batch: loss stays near 1
    grid.losses[stuck, 0] = 1.0
    optimum = find_optima(grid)
    assert optimum.learning_rate[0, 0] == pytest.approx(1.3e-3, rel=1e-6)
    assert optimum.loss[0, 0] == pytest.approx(0.5, abs=1e-9)


def test_an_interpolated_loss_far_below_every_cell_falls_back():
    grid = quadratic_grid()
    best = np.argmin(grid.losses[:, 0])
    grid.losses[:, 0] = grid.losses[:, 0] * 3.0  # a steep valley ...
    grid.losses[best, 0] = 0.5 * 1.2  # ... whose measured floor sits far above the quadratic's minimum
    optimum = find_optima(grid, max_gain=0.01)
    assert optimum.loss[0, 0] >= 0.6 * (1 - 0.01)


def test_optimum_beyond_the_grid_is_clamped_and_flagged():
    grid = quadratic_grid(center_batch=20000.0)
    optimum = find_optima(grid)
    assert optimum.batch_tokens[0, 0] == pytest.approx(8192.0)
    assert optimum.edge_batch[0, 0] and not optimum.edge_learning_rate[0, 0]


def test_plus_shaped_cells_use_the_separable_fallback_and_best_cell_method():
    grid = quadratic_grid(lrs=(5e-4, 1e-3, 2e-3), batches=(2048, 4096, 8192))
    plus = np.isclose(grid.learning_rates, 1e-3) | np.isclose(grid.batch_tokens, 4096)
    losses = np.where(plus[:, None], grid.losses, np.nan)  # only the plus-shaped cells were run
    optimum = find_optima(grid, losses[None])
    assert optimum.method[0, 0] == 1  # separable
    assert optimum.learning_rate[0, 0] == pytest.approx(1.3e-3, rel=1e-6)
    best = find_optima(grid, method="best_cell")
    assert best.learning_rate[0, 0] == pytest.approx(1e-3) and best.batch_tokens[0, 0] == pytest.approx(4096)


def test_an_unstable_cell_bounds_the_learning_rate_optimum_and_is_flagged():
    # The valley falls towards 4e-3 (optimum at 8e-3, past it), where the runs diverged before the second budget.
    grid = quadratic_grid(center_lr=8e-3)
    grid.losses = np.repeat(grid.losses, 2, axis=1)
    top = np.isclose(grid.learning_rates, 4e-3)
    grid.losses[top, 1] = np.nan
    open_edge = find_optima(grid)  # the cells at 4e-3 merely missing at the second budget
    assert not open_edge.interior_learning_rate[0, 1] and not open_edge.unstable_bound_learning_rate[0, 1]
    grid.unstable = np.zeros(grid.losses.shape, dtype=bool)
    grid.unstable[top, 1] = True
    bounded = find_optima(grid)
    assert bounded.interior_learning_rate[0, 1] and bounded.unstable_bound_learning_rate[0, 1]
    assert bounded.learning_rate[0, 1] == pytest.approx(open_edge.learning_rate[0, 1])  # never fitted: same optimum
    assert bounded.learning_rate[0, 1] <= 2e-3 * (1 + 1e-9)  # inside the stable cells
    # At the first budget every cell is measured: 4e-3 is the grid's highest rate and the optimum lies beyond it.
    assert not bounded.interior_learning_rate[0, 0] and not bounded.unstable_bound_learning_rate[0, 0]
    assert not bounded.unstable_bound_batch.any()
    with pytest.raises(ValueError, match="unstable flags"):
        grid.unstable = grid.unstable[:, :1]
        find_optima(grid)
