"""Grid cells trained with replicate seeds (``grid.seeds_per_cell``): a cell's loss is the mean of its seeds', its
bootstrap noise the run-to-run noise over the square root of the seeds; a seed that diverged counts at the budgets it
reached and makes its cell unstable at the later ones, and a cell with a failed seed is left out."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.blas import limit_openblas_threads
from analysis.config import config_from_dict
from analysis.laws_document import fit_laws
from analysis.resampling import RunNoise
from analysis.runs import RunsTable
from analysis.selection import select_runs
from analysis.synthetic_runs import SyntheticDesign, synthetic_runs

limit_openblas_threads()

DESIGN = SyntheticDesign(fitting_sizes=["tiny-8k", "tiny-18k", "tiny-33k", "tiny-66k"], heldout_sizes=[], noise_size="tiny-18k",
                         include_failures=False)
SEEDS = (0, 1000, 2000)


def replicated(frame: pd.DataFrame, extra_seeds=SEEDS[1:], scale: float = 0.01, seed: int = 5) -> pd.DataFrame:
    """``frame`` with every grid run repeated at ``extra_seeds``, each copy's losses times ``1 + scale z`` (one z per copy)."""
    rng = np.random.default_rng(seed)
    copies = []
    for extra in extra_seeds:
        for run_id, rows in frame[frame["series"] == "grid"].groupby("run_id", sort=False):
            rows = rows.copy()
            factor = 1 + scale * rng.standard_normal()
            rows["run_id"], rows["seed"] = f"{run_id}_s{extra}", extra
            rows["validation_loss"] *= factor
            rows["train_loss"] *= factor
            copies.append(rows)
    return pd.concat([frame, *copies], ignore_index=True)


@pytest.fixture(scope="module")
def frame():
    return replicated(synthetic_runs(design=DESIGN, seed=2))


def test_a_cells_loss_is_the_mean_of_its_replicates(frame):
    selection = select_runs(RunsTable.from_frame(frame), config_from_dict({}))
    grid_rows = frame[frame["series"] == "grid"]
    expected = grid_rows.groupby(["size", "batch_clips", "learning_rate", "tokens"])["validation_loss"].agg(["mean", "count"])
    assert (expected["count"] == len(SEEDS)).all()
    assert selection.seeds_per_cell == len(SEEDS)
    for grid in selection.fitting:
        assert len(grid.run_ids) == len(DESIGN.batch_clips) * len(DESIGN.learning_rates)
        for i, replicates in enumerate(grid.replicates):
            assert sorted(frame.set_index("run_id").loc[list(replicates), "seed"].unique()) == list(SEEDS)
            assert grid.run_ids[i] == "+".join(replicates)
            for j, budget in enumerate(selection.budgets):
                mean = expected.loc[(grid.size, int(grid.batch_clips[i]), grid.learning_rates[i], int(budget)), "mean"]
                assert grid.losses[i, j] == pytest.approx(mean, rel=1e-12)
    assert len(selection.grid_run_ids) == len(set(selection.grid_run_ids)) == len(grid_rows["run_id"].unique())


def _victim(frame: pd.DataFrame, size: str = "tiny-33k") -> pd.Series:
    return frame[(frame["series"] == "grid") & (frame["size"] == size) & (frame["seed"] == 1000)].iloc[0]


def test_a_replicate_that_diverged_counts_before_its_divergence_and_makes_its_cell_unstable_after(frame):
    victim = _victim(frame)
    budgets = sorted(frame[frame["run_id"] == victim["run_id"]]["tokens"].unique())
    broken = frame.copy()
    broken.loc[broken["run_id"] == victim["run_id"], ["status", "status_reason"]] = ["diverged", "loss above 10.0"]
    broken = broken[~((broken["run_id"] == victim["run_id"]) & (broken["tokens"] > budgets[1]))]  # stopped after 2 milestones
    selection = select_runs(RunsTable.from_frame(broken), config_from_dict({}))
    grid = next(g for g in selection.fitting if g.size == "tiny-33k")
    assert len(grid.run_ids) == len(DESIGN.batch_clips) * len(DESIGN.learning_rates)
    row = next(i for i, replicates in enumerate(grid.replicates) if victim["run_id"] in replicates)
    same_cell = broken[(broken["series"] == "grid") & (broken["size"] == "tiny-33k")
                       & (broken["batch_clips"] == victim["batch_clips"]) & (broken["learning_rate"] == victim["learning_rate"])]
    for j, budget in enumerate(selection.budgets):
        losses = same_cell[same_cell["tokens"] == int(budget)]["validation_loss"]
        if budget <= budgets[1]:
            assert len(losses) == len(SEEDS) and grid.losses[row, j] == pytest.approx(losses.mean(), rel=1e-12)
            assert not grid.unstable[row, j]
        else:
            assert len(losses) == len(SEEDS) - 1 and np.isnan(grid.losses[row, j]) and grid.unstable[row, j]
    assert grid.unstable.sum() == len(selection.budgets) - 2  # no other cell is unstable anywhere


def test_a_cell_whose_seeds_all_diverged_is_unstable_only_inside_its_sizes_schedule(frame):
    victim = _victim(frame)
    cell = ((frame["series"] == "grid") & (frame["size"] == victim["size"]) & (frame["batch_clips"] == victim["batch_clips"])
            & (frame["learning_rate"] == victim["learning_rate"]))
    milestones = sorted(frame[cell]["tokens"].unique())
    broken = frame.copy()
    broken.loc[cell, ["status", "status_reason"]] = ["diverged", "loss above 10.0"]
    broken = broken[~(cell & (broken["tokens"] > milestones[1]))]  # every seed stopped after 2 milestones
    budgets = [float(milestones[0]) / 4] + [float(m) for m in milestones]  # the first budget lies before the schedule: no run's
    selection = select_runs(RunsTable.from_frame(broken), config_from_dict({"token_budgets": budgets}))
    grid = next(g for g in selection.fitting if g.size == victim["size"])
    row = next(i for i, replicates in enumerate(grid.replicates) if victim["run_id"] in replicates)
    assert np.isnan(grid.losses[:, 0]).all() and not grid.unstable[:, 0].any()
    assert np.isfinite(grid.losses[row, 1:3]).all() and not grid.unstable[row, 1:3].any()
    assert np.isnan(grid.losses[row, 3:]).all() and grid.unstable[row, 3:].all()


def test_a_cell_whose_replicate_failed_is_left_out_with_a_note(frame):
    victim = _victim(frame)
    broken = frame.copy()
    broken.loc[broken["run_id"] == victim["run_id"], ["status", "status_reason"]] = ["failed", "exit code 1"]
    selection = select_runs(RunsTable.from_frame(broken), config_from_dict({}))
    grid = next(g for g in selection.fitting if g.size == "tiny-33k")
    assert len(grid.run_ids) == len(DESIGN.batch_clips) * len(DESIGN.learning_rates) - 1
    assert not any(victim["run_id"] in replicates for replicates in grid.replicates)
    assert any(f"batch_clips={victim['batch_clips']}, learning_rate={victim['learning_rate']:g}: 1 of 3 replicates failed" in note
               for note in selection.notes)


def test_a_cells_resampled_factor_averages_its_replicates_draws():
    noise = RunNoise.draw(["a", "b", "c", "d"], resamples=20000, seed=0)
    noise.relative_std = 0.02
    factors = noise.factors([("a", "b", "c"), "d"])
    assert np.all(factors[0] == 1)
    assert np.allclose(factors[1:, 0], 1 + 0.02 * noise.draws[:, :3].mean(axis=1))
    assert np.allclose(factors[1:, 1], 1 + 0.02 * noise.draws[:, 3])
    assert np.std(factors[1:, 0]) == pytest.approx(0.02 / np.sqrt(3), rel=0.03)


def test_each_resample_draws_the_noise_level_from_its_estimates_uncertainty():
    noise = RunNoise.draw(["a", "b"], resamples=40000, seed=0)
    noise.set_std(0.02, degrees_of_freedom=6.0, seed=0)
    factors = noise.factors(["a", ("a", "b")])
    # sigma_hat z sqrt(nu / chi2_nu) is sigma_hat times Student's t on nu degrees of freedom
    t_draws = (factors[1:, 0] - 1) / 0.02
    for q in (0.9, 0.975, 0.995):
        assert np.quantile(t_draws, q) == pytest.approx(stats.t.ppf(q, 6), rel=0.04)
    assert np.all(factors[0] == 1)
    # the per-run draws are those of a known noise level, so the two schemes are paired run by run
    known = RunNoise.draw(["a", "b"], resamples=40000, seed=0)
    known.relative_std = 0.02
    assert np.array_equal(np.sign(known.factors(["a"])[1:] - 1), np.sign(factors[1:, :1] - 1))
    noise.set_std(0.02, degrees_of_freedom=None, seed=0)  # None: the level is known
    assert np.array_equal(noise.factors(["a"]), known.factors(["a"]))


def test_the_laws_see_the_noise_of_a_cells_mean(frame):
    table = RunsTable.from_frame(frame)
    document = fit_laws(table, config_from_dict({"bootstrap_resamples": 20, "seed": 1}))
    noise = document["setup"]["noise"]
    # The run-to-run noise, computed here from the noise cell's seeds: pooled relative std over the budgets.
    cell = frame[(frame["size"] == DESIGN.noise_size) & (frame["batch_clips"] == DESIGN.conventional_cell[0])
                 & np.isclose(frame["learning_rate"], DESIGN.conventional_cell[1])]
    by_budget = cell.groupby("tokens")["validation_loss"]
    assert cell["seed"].nunique() == len(SEEDS) + DESIGN.noise_seeds
    run_std = float(np.sqrt(np.mean((by_budget.std(ddof=1) / by_budget.mean()) ** 2)))
    assert noise["run_relative_std"] == pytest.approx(run_std, rel=1e-9)
    assert noise["seeds_per_cell"] == len(SEEDS)
    assert noise["relative_std"] == pytest.approx(run_std / np.sqrt(len(SEEDS)), rel=1e-12)
    config = document["config"]
    assert document["setup"]["huber_delta_loss"] == pytest.approx(max(config["huber_delta_in_noise_std"] * run_std / np.sqrt(3), 1e-3))
    assert sorted(document["runs"]["grid"]) == sorted(frame[frame["series"] == "grid"]["run_id"].unique())


def test_a_heldout_run_that_diverged_counts_before_its_divergence_and_makes_its_cell_unstable_after():
    design = SyntheticDesign(fitting_sizes=DESIGN.fitting_sizes, heldout_sizes=["tiny-262k"], noise_size="tiny-18k",
                             include_failures=False)
    frame = synthetic_runs(design=design, seed=2)
    heldout_runs = frame[(frame["series"] == "grid") & (frame["size"] == "tiny-262k")]
    victim = heldout_runs.iloc[0]
    milestones = sorted(heldout_runs["tokens"].unique())
    broken = frame.copy()
    broken.loc[broken["run_id"] == victim["run_id"], ["status", "status_reason"]] = ["diverged", "loss above 10.0"]
    broken = broken[~((broken["run_id"] == victim["run_id"]) & (broken["tokens"] > milestones[1]))]  # stopped after 2
    selection = select_runs(RunsTable.from_frame(broken), config_from_dict({"heldout_sizes": ["tiny-262k"]}))
    grid, = selection.heldout
    assert len(grid.run_ids) == heldout_runs["run_id"].nunique()  # the diverged run's cell is kept
    row = grid.run_ids.index(victim["run_id"])
    victim_losses = broken[broken["run_id"] == victim["run_id"]].set_index("tokens")["validation_loss"]
    for j, budget in enumerate(selection.budgets):
        if budget <= milestones[1]:
            assert np.isfinite(grid.losses[row, j]) == (budget >= milestones[0]) and not grid.unstable[row, j]
            if budget >= milestones[0]:
                assert grid.losses[row, j] == pytest.approx(victim_losses.loc[int(budget)], rel=1e-12)
        else:
            assert np.isnan(grid.losses[row, j]) and grid.unstable[row, j] == (budget <= milestones[-1])
    assert grid.unstable.sum() == np.sum((selection.budgets > milestones[1]) & (selection.budgets <= milestones[-1]))
    assert victim["run_id"] in selection.heldout_run_ids


def test_a_runs_own_draws_do_not_depend_on_the_runs_drawn_with_it():
    """Held-out runs are drawn group by group (``RunNoise.draw_per_run``): a run's draws are the same in any
    company, and two runs' draws are independent."""
    alone = RunNoise.draw_per_run(["heldout/a"], 4000, seed=3).draws[:, 0]
    together = RunNoise.draw_per_run(["heldout/b", "heldout/a"], 4000, seed=3).draws
    assert np.array_equal(together[:, 1], alone)
    assert abs(np.corrcoef(together[:, 0], together[:, 1])[0, 1]) < 4 / np.sqrt(4000)
    assert abs(alone.mean()) < 4 / np.sqrt(4000) and abs(alone.std() - 1) < 0.05
    assert not np.array_equal(RunNoise.draw_per_run(["heldout/a"], 4000, seed=4).draws[:, 0], alone)


def test_the_mean_heldout_error_interval_counts_points_of_shared_runs_as_one():
    """Claim 4's interval of the mean relative error: two points measured by the same runs (one draw moves both)
    and one measured by others; the interval's half-width is the normal quantile times sigma sqrt(5) / 3 (the
    mean of e + 2 d1 and d2 over 3 points), not the sigma / sqrt(3) of three independent points."""
    from analysis.measurements import mean_relative_error

    rng = np.random.default_rng(11)
    sigma, resamples = 0.01, 40000
    shared, own = rng.standard_normal(resamples) * sigma, rng.standard_normal(resamples) * sigma
    points = [{"relative_error": e} for e in (0.004, 0.006, -0.002)]
    record = mean_relative_error(points, [0.004 + shared, 0.006 + shared, -0.002 + own], 0.9)
    low, high = record["mean_relative_error_interval"]
    half = stats.norm.ppf(0.95) * sigma * np.sqrt(5) / 3
    assert record["mean_relative_error"] == pytest.approx(0.008 / 3)
    assert (high - low) / 2 == pytest.approx(half, rel=0.03) and (low + high) / 2 == pytest.approx(0.008 / 3, abs=3e-4)
    assert record["mean_relative_error_resamples"] == resamples and record["mean_relative_error_dropped"] == 0
    # resamples shifted by a bias (the winner's curse of an optimum found again) shift the interval the other way
    biased = mean_relative_error(points, [0.004 + shared + 0.003, 0.006 + shared + 0.003, -0.002 + own + 0.003], 0.9)
    assert biased["mean_relative_error_resample_bias"] == pytest.approx(0.003, abs=2e-4)
    assert biased["mean_relative_error_interval"] == pytest.approx([low - 0.003, high - 0.003], abs=2e-4)
    # a resample in which a point has no measurement is dropped and counted; none at all: no interval, a reason
    gap = [list(0.004 + shared), list(0.006 + shared), [None] + list(-0.002 + own[1:])]
    assert mean_relative_error(points, gap, 0.9)["mean_relative_error_dropped"] == 1
    missing = mean_relative_error(points, [None, None, None], 0.9)
    assert missing["mean_relative_error_interval"] is None and missing["mean_relative_error_reason"]
