"""``python -m analysis.batch_axis``: every batch size's best cell against the smallest batch's, per size and budget,
checked against an independent computation from the runs table, on a grid whose batch axis turns."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import verdicts
from analysis.batch_axis import main
from analysis.blas import limit_openblas_threads
from analysis.synthetic_runs import SyntheticDesign, synthetic_runs

limit_openblas_threads()

SEEDS = (0, 1000, 2000)
BUDGETS = (2**16, 2**17, 2**18)
RATES = (1e-3, 2e-3, 4e-3)
NOISE = 0.003


def true_loss(batch_clips: int, rate: float, tokens: float) -> float:
    """A valley in log LR whose best batch moves from 1 clip at the first budget to 2 clips at the last (10% apart)."""
    turn = np.log2(tokens / BUDGETS[0]) / 2  # 0, 0.5, 1 over the three budgets
    best_batch = 2.0 ** turn
    return 0.2 * (1 + 0.1 * np.log2(batch_clips / best_batch) ** 2 + 0.05 * np.log2(rate / 2e-3) ** 2)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    design = SyntheticDesign(fitting_sizes=["tiny-18k"], heldout_sizes=[], batch_clips=[1, 2, 4], learning_rates=list(RATES),
                             milestones_tokens=list(BUDGETS), tokens_per_clip=64, noise_size="tiny-18k", noise_seeds=0,
                             include_failures=False)
    base = synthetic_runs(design=design, seed=1)
    base = base[base["series"] == "grid"]
    rng = np.random.default_rng(7)
    copies = []
    for seed in SEEDS:
        for run_id, rows in base.groupby("run_id", sort=False):
            rows = rows.copy()
            rows["run_id"], rows["seed"] = f"{run_id}_s{seed}", seed
            offset = NOISE * rng.standard_normal()
            rows["validation_loss"] = [true_loss(b, r, t) * (1 + offset + NOISE * rng.standard_normal())
                                       for b, r, t in zip(rows["batch_clips"], rows["learning_rate"], rows["tokens"])]
            copies.append(rows)
    frame = pd.concat(copies, ignore_index=True)
    path = tmp_path_factory.mktemp("batch_axis") / "runs.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.fixture(scope="module")
def document(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_axis_out") / "batch_axis.json"
    config = out.parent / "fit.yaml"
    config.write_text("bootstrap_resamples: 200\nseed: 3\n")
    assert main(["--runs", str(table[0]), "--config", str(config), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_best_cells_and_excesses_match_the_runs_table(table, document):
    frame = table[1]
    means = frame.groupby(["batch_clips", "learning_rate", "tokens"])["validation_loss"].mean()
    (size,) = document["sizes"]
    assert size["size"] == "tiny-18k" and size["seeds_per_cell"] == len(SEEDS) and size["batch_clips"] == [1, 2, 4]
    assert document["resamples"] == 200 and document["seed"] == 3 and document["level"] == 0.95
    for point, tokens in zip(size["points"], sorted(frame["tokens"].unique())):
        assert point["tokens"] == pytest.approx(tokens)
        best = {b: means.xs((b, tokens), level=("batch_clips", "tokens")) for b in (1, 2, 4)}
        for entry in point["batches"]:
            b = entry["batch_clips"]
            assert entry["best_loss"] == pytest.approx(best[b].min(), rel=1e-12)
            assert entry["learning_rate"] == pytest.approx(best[b].idxmin())
            if b > 1:
                assert entry["excess"] == pytest.approx(best[b].min() / best[1].min() - 1, rel=1e-9)
                low, high = entry["excess_interval"]
                assert low < entry["excess"] < high and entry["verdict"] == verdicts.from_interval([low, high])


def test_the_turn_is_found_where_the_larger_batch_wins_beyond_the_noise(document):
    (size,) = document["sizes"]
    first, _, last = size["points"]
    excess = {p["tokens"]: {e["batch_clips"]: e for e in p["batches"]} for p in size["points"]}
    assert excess[first["tokens"]][2]["verdict"] == verdicts.SUPPORTED  # the smallest batch is better at first
    assert excess[last["tokens"]][2]["verdict"] == verdicts.CONTRADICTED  # 2 clips is better at the last budget
    assert not first["turned"] and last["turned"] and last["tokens"] in size["turned_at_tokens"]
    assert not first["optimum"]["interior_batch"] and first["optimum"]["batch_clips"] == pytest.approx(1)
    assert last["optimum"]["interior_batch"] and 1.5 < last["optimum"]["batch_clips"] < 3


def test_the_noise_is_the_spread_between_the_seeds_of_the_best_cells(table, document):
    frame = table[1]
    best_cells = {(e["batch_clips"], e["learning_rate"]) for p in document["sizes"][0]["points"] for e in p["batches"]}
    relative = []
    for (b, r), rows in frame.groupby(["batch_clips", "learning_rate"]):
        if any(b == cb and np.isclose(r, cr) for cb, cr in best_cells):
            by_tokens = rows.groupby("tokens")["validation_loss"]
            relative.extend(by_tokens.std(ddof=1) / by_tokens.mean())
    assert document["noise"]["relative_std"] == pytest.approx(np.sqrt(np.mean(np.square(relative))), rel=1e-9)
    assert 0.5 * NOISE < document["noise"]["relative_std"] < 3 * NOISE


def test_without_replicates_or_noise_seeds_no_excess_has_an_interval(table, tmp_path, capsys):
    single = table[1][table[1]["seed"] == 0]
    path, out = tmp_path / "runs.csv", tmp_path / "batch_axis.json"
    single.to_csv(path, index=False)
    assert main(["--runs", str(path), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["noise"] is None and any("noise of a cell is unknown" in note for note in document["notes"])
    entries = [e for p in document["sizes"][0]["points"] for e in p["batches"] if e["batch_clips"] > 1]
    assert entries and all(e["excess_interval"] is None and e["verdict"] == verdicts.NOT_TESTED for e in entries)
    assert all(e["excess"] is not None for e in entries)


def test_a_table_without_grid_runs_is_refused_and_nothing_is_written(table, tmp_path, capsys):
    path, out = tmp_path / "runs.csv", tmp_path / "batch_axis.json"
    table[1].assign(series="heldout").to_csv(path, index=False)
    assert main(["--runs", str(path), "--out", str(out)]) == 2
    assert "no completed grid runs" in capsys.readouterr().err and not out.exists()


def test_a_rate_bounded_by_an_unstable_cell_is_not_on_the_edge(table, tmp_path):
    """A cell whose replicate diverged before a budget has no loss there, never is a best cell, and bounds the best
    cell's learning rate from its side (as the optimum finder counts it)."""
    frame = table[1].copy()
    fast = (frame["batch_clips"] == 1) & np.isclose(frame["learning_rate"], RATES[-1])
    diverged = fast & (frame["seed"] == SEEDS[0])
    frame = frame[~(diverged & (frame["tokens"] > BUDGETS[0]))]
    frame.loc[diverged, ["status", "status_reason"]] = ["diverged", "loss above divergence_max_loss"]
    path, out = tmp_path / "runs.csv", tmp_path / "batch_axis.json"
    frame.to_csv(path, index=False)
    assert main(["--runs", str(path), "--out", str(out)]) == 0
    points = json.loads(out.read_text())["sizes"][0]["points"]
    for point in points[1:]:
        (one_clip,) = [e for e in point["batches"] if e["batch_clips"] == 1]
        assert one_clip["learning_rate"] == pytest.approx(2e-3) and one_clip["learning_rate_on_edge"] is False
    (first,) = [e for e in points[0]["batches"] if e["batch_clips"] == 1]
    assert first["learning_rate_on_edge"] is False  # the diverged seed reached the first budget: the cell has its mean
