"""dit.noise_sources: the k x k design of initialisation seeds by data seeds, and its variance components.

The design's runs are checked against ordinary runs (the diagonal matches a run of that seed trained
alone within 1e-5 relative, an off-diagonal run shares its initialisation with its row and its data with its column), and the
analysis of variance against a direct computation on tables with known structure.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dit.config import config_from_dict
from dit.noise_sources import decompose, main, seeds_for
from training_runs import loss_rows, read_metrics, tiny_run_config, train_in_process, write_config


def test_decompose_recovers_rows_columns_and_residual():
    rng = np.random.default_rng(0)
    k = 40
    rows, columns = rng.normal(0, 0.02, k), rng.normal(0, 0.01, k)
    table = np.log(0.1) + rows[:, None] + columns[None, :] + rng.normal(0, 0.005, (k, k))
    result = decompose(table)
    variance = result["relative_variance"]
    assert variance["initialisation"] == pytest.approx(np.var(rows, ddof=1), rel=0.15)
    assert variance["data"] == pytest.approx(np.var(columns, ddof=1), rel=0.15)
    assert variance["interaction"] == pytest.approx(0.005**2, rel=0.15)
    assert result["relative_std"] == pytest.approx(math.sqrt(sum(variance.values())))
    assert sum(result["share"].values()) == pytest.approx(1.0)
    assert result["diagonal_relative_std"] == pytest.approx(np.std(np.diag(table), ddof=1))


def test_decompose_of_a_pure_row_effect_has_no_data_share():
    table = np.log(np.array([[0.10, 0.10, 0.10], [0.11, 0.11, 0.11], [0.09, 0.09, 0.09]]))
    result = decompose(table)
    assert result["relative_variance"]["data"] == 0 and result["relative_variance"]["interaction"] == pytest.approx(0, abs=1e-20)
    assert result["relative_variance"]["initialisation"] == pytest.approx(np.var(table[:, 0], ddof=1))


def test_seeds_for_a_target():
    assert seeds_for(0.015, 0.007) == math.ceil((0.015 / 0.007) ** 2) == 5
    assert seeds_for(0.001, 0.007) == 1


@pytest.mark.slow
def test_the_design_trains_ordinary_runs_and_decomposes_their_losses(prepared_data, tmp_path):
    config = tiny_run_config(prepared_data, schedule={"milestones_tokens": [2048, 4096]}, checkpoint={"every_steps": 100})
    path = write_config(tmp_path / "cell.yaml", config)
    out = tmp_path / "sources.json"
    assert main(["--config", str(path), "--seeds", "2", "--first-seed", "3", "--out", str(out), "--target", "0.01"]) == 0
    document = json.loads(out.read_text())
    work = tmp_path / "sources.work" / "runs"
    # the diagonal: ordinary runs of seeds 3 and 4, trained alone
    for seed in (3, 4):
        alone = tmp_path / f"alone{seed}"
        assert train_in_process({**config, "seed": seed}, alone) == 0
        mine = [tuple(float(v) for v in row) for row in loss_rows(work / f"init{seed}_data{seed}")]
        theirs = [tuple(float(v) for v in row) for row in loss_rows(alone)]
        assert np.allclose(mine, theirs, rtol=1e-5, atol=0)
    # an off-diagonal run differs from both runs that share one of its seeds
    def final(name):
        return float(read_metrics(work / name)[-1]["validation_loss"])
    assert final("init3_data4") not in (final("init3_data3"), final("init4_data4"))
    table = np.array([[final(f"init{i}_data{j}") for j in (3, 4)] for i in (3, 4)])
    last = document["milestones"][-1]
    assert last["milestone_tokens"] == 4096 and np.allclose(last["validation_loss"], table)
    assert last["relative_std"] == pytest.approx(decompose(np.log(table))["relative_std"])
    pooled = np.mean([[m["relative_variance"][c] for c in ("initialisation", "data", "interaction")]
                      for m in document["milestones"]], axis=0)
    assert document["pooled"]["relative_std"] == pytest.approx(math.sqrt(pooled.sum()))
    assert document["pooled"]["seeds_for"]["0.01"] == seeds_for(document["pooled"]["relative_std"], 0.01)
    assert document["design"]["runs"] == 4 and document["provenance"]["config"]["seeds"] == 2
    assert config_from_dict(document["provenance"]["config"]["config"]).seed == 7


def test_bad_input_is_a_configuration_error(prepared_data, tmp_path, capsys):
    path = write_config(tmp_path / "cell.yaml", tiny_run_config(prepared_data))
    assert main(["--config", str(path), "--seeds", "1", "--out", str(tmp_path / "x.json")]) == 2
    assert "at least 2" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
