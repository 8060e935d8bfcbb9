"""The results summary on constructed laws/runs inputs: percentages, intervals, sources and the verdict per claim."""

import copy
import json

import numpy as np
import pytest

from analysis.blas import limit_openblas_threads
from analysis import summary
from analysis.synthetic_runs import SyntheticDesign, SyntheticTruth, synthetic_runs

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread


def law(parameters, on_bound=(), edge=(0, 9), intervals=None, bootstrap=None, rmse_log=0.002, points=9):
    record = {
        "status": "fitted", "parameters": dict(parameters),
        "fit": {"on_bound": list(on_bound), "rmse_log": rmse_log, "points": points, "mse": 1e-6},
        "edge_points": {"used_on_edge": edge[0], "used": edge[1], "policy": "include"},
        "intervals": intervals if intervals is not None else {k: [v - 0.01, v + 0.01] for k, v in parameters.items()},
    }
    if bootstrap is not None:
        record["bootstrap"] = bootstrap
    return record


def estimate(value, interval):
    return {"value": value, "interval": interval}


LOSS = {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}


@pytest.fixture()
def document():
    """A laws document in the shape analysis.fit writes, with round numbers."""
    sizes = [{"size": "tiny-8k", "N": 8.192e-6, "parameters": 8192.0, "flops_per_token": 6.8e4, "runs": 6, "width": 16, "depth": 2},
             {"size": "tiny-18k", "N": 1.8432e-5, "parameters": 18432.0, "flops_per_token": 1.3e5, "runs": 6, "width": 24, "depth": 2}]
    budgets = [8192.0, 16384.0, 32768.0]
    return {
        "schema": "analysis.laws/1",
        "config": {"loss_column": "validation_loss", "token_match_tolerance": 0.05},
        "setup": {
            "fitting_sizes": sizes, "heldout_sizes": [], "budgets_tokens": budgets, "context_tokens": 64,
            "flop_model_description": "C = 6 N T",
            "noise": {"relative_std": 0.004, "source": "noise-floor seeds (series=noise)",
                      "detail": {"groups": [{"size": "tiny-18k", "batch_clips": 8, "learning_rate": 0.01, "seeds": 5, "runs": []}],
                                 "relative_std_by_budget": [{"tokens": b, "relative_std": 0.004} for b in budgets]}},
            "bootstrap": {"resamples": 50, "level": 0.95},
        },
        "laws": {
            "loss_optimal": law(LOSS, bootstrap={"resamples": 50, "usable": 50, "failed": 0, "on_bound": 0, "held_at_bound": []}),
            "loss_conventional": law(LOSS),
            "batch_size": law({"a": 512.0, "b": 0.0, "c": 0.0}, edge=(9, 9)),
            "learning_rate": law({"a": 0.02, "b": 0.3, "c": -0.2}, intervals={"a": [0.01, 0.03], "b": [0.1, 0.5], "c": [-0.9, 0.5]}),
        },
        "compute_optimal": {"precise": {"status": "fitted", "parameters": {"k": 1e-4, "a": 0.9}, "intervals": {"a": [0.85, 0.95]}}},
        "comparison": {
            "status": "computed", "target_flops": 7.25e11, "paired_resamples": 50, "flop_model": "C = 6 N T",
            "precise": {"parameters": estimate(1.389e7, [1.26e7, 1.43e7]), "loss": estimate(0.33816, None)},
            "conventional": {"parameters": estimate(1.361e7, [1.36e7, 1.37e7]), "loss": estimate(0.33858, None),
                             "cell": {"batch_clips": 8, "learning_rate": 0.01}},
            "model_size_reduction": estimate(-0.0208, [-0.046, 0.081]),
            "inference_flops_reduction": estimate(-0.0204, [-0.045, 0.079]),
            "loss_difference_precise_minus_conventional": estimate(-0.0004, [-0.009, 0.05]),
        },
        "optima": [{"size": s["size"], "tokens": t, "loss": 0.8} for s in sizes for t in budgets],
        "conventional_curves": [{"size": s["size"], "tokens": budgets, "loss": [0.8004] * 3} for s in sizes],
        "heldout": {"sizes": ["tiny-147k"], "summary": {"points": 3, "mean_absolute_relative_error": 0.0322,
                                                        "max_absolute_relative_error": 0.0424, "coverage": 0.0}},
    }


def render(document, runs=None, heldout=None):
    notes = []
    sources = {"laws": "results/laws.json", "runs": runs, "heldout": None, "protocol_spread": None,
               "caption_conditioning": None, "benchmarks": None}
    return summary.render(document, heldout, None, None, runs, None, notes, sources)


def claim(text, number):
    return next(line for line in text.splitlines() if line.startswith(f"- **Claim {number}"))


def test_percentages_have_one_percent_sign_and_absent_intervals_are_said():
    assert summary._pct(-0.0208) == "-2.1%"
    assert summary._pct(-0.0001) == "0.0%"  # no "-0.0%"
    assert summary._pct_estimate(estimate(-0.0208, [-0.046, 0.081])) == "-2.1% [-4.6%, 8.1%]"
    assert summary._pct_estimate(estimate(-0.0208, None)) == "-2.1% (no interval)"
    assert summary._pct_estimate(estimate(-0.0208, [float("nan"), float("nan")])) == "-2.1% (no interval)"


def test_rendered_summary_has_no_double_percent_or_nan(document):
    without = copy.deepcopy(document)
    for key in ("model_size_reduction", "inference_flops_reduction"):
        without["comparison"][key]["interval"] = None
    without["laws"]["loss_optimal"]["intervals"] = {k: [float("nan"), float("nan")] for k in LOSS}
    without["laws"]["loss_optimal"]["bootstrap"] = {"resamples": 50, "usable": 0, "failed": 44, "on_bound": 6, "held_at_bound": [],
                                                    "no_interval_reason": "only 0 of 50 resamples usable (2 needed): 44 refits did not converge, 6 put a "
                                                                          "parameter on a bound the full-data fit is not on"}
    for doc in (document, without):
        text = render(doc)
        assert "%%" not in text and "nan" not in text.lower()
    text = render(without)
    assert "| model-size reduction 1 - N_precise / N_conventional | -2.1% (no interval) | 39.9% |" in text
    # a missing interval is explained in the laws table, not printed as [nan, nan]
    alpha = next(line for line in text.splitlines() if line.startswith("| L(N, T): T exponent alpha"))
    assert "no interval: only 0 of 50 resamples usable (2 needed): 44 refits did not converge" in alpha


def test_summary_names_its_sources_and_explains_the_terms(document):
    text = render(document, runs=None)
    assert "## Where the numbers come from" in text
    assert "`results/laws.json`" in text and "Runs table (grid spreads for claim 2): not given." in text
    assert "'precise' recipe" in text and "'conventional' recipe" in text and "Run-to-run noise" in text


def sensitivity_result(spreads_by_budget, noise=0.004, dof=12):
    """A sensitivity dict as ``summary.sensitivity`` returns it: one group per (size, budget), 6 cells each."""
    groups = []
    for tokens, spreads in spreads_by_budget.items():
        for size, spread in zip(("tiny-8k", "tiny-18k", "tiny-33k"), spreads):
            groups.append({"size": size, "tokens": tokens, "cells": 6, "spread": spread, "batch_spread": spread / 2, "batch_cells": 2,
                           "learning_rate_spread": spread / 2, "learning_rate_cells": 3})
    result = {"groups": groups, "noise": noise, "noise_dof": dof, "noise_text": "seeds", "batch_clips": [8, 16],
              "learning_rates": [0.005, 0.01, 0.02], "tokens_per_clip": 64}
    for key, cells in (("spread", "cells"), ("batch_spread", "batch_cells"), ("learning_rate_spread", "learning_rate_cells")):
        values = np.array([g[key] for g in groups])
        result[f"median_{key}"], result[f"max_{key}"] = float(np.median(values)), float(np.max(values))
        for g in groups:
            g[f"{key}_above_noise"] = g[key] > noise * summary.noise_range_factor(g[cells], dof)
        result[f"{key}_above_noise"] = sum(g[f"{key}_above_noise"] for g in groups)
        result[f"{key}_compared"] = len(groups)
        result[f"{key}_median_threshold"] = noise * summary.noise_range_factor(6, dof)
    return result


def test_a_spread_five_times_the_noise_everywhere_is_clear_sensitivity(document):
    sens = sensitivity_result({8192.0: [0.02, 0.025, 0.03], 16384.0: [0.02, 0.02, 0.022], 32768.0: [0.019, 0.02, 0.024]})
    line = claim("\n".join(summary.verdict(document, None, sens)), 2)
    assert "sensitive to batch size B and learning rate LR: yes.**" in line
    assert "by 2.00% (median over 9 size-budget pairs; up to 3.00%), 5.0x the run-to-run noise of 0.40%" in line
    assert "at 8.19k tokens 2.00% to 3.00% (3 of 3 sizes above noise)" in line


def test_sensitivity_only_at_early_budgets_is_partly_and_within_noise_is_not_shown(document):
    early = sensitivity_result({8192.0: [0.06, 0.08, 0.11], 16384.0: [0.005, 0.006, 0.007], 32768.0: [0.004, 0.005, 0.006]})
    line = claim("\n".join(summary.verdict(document, None, early)), 2)
    assert ": partly.**" in line and "(3 of 3 sizes above noise)" in line and "(0 of 3 sizes above noise)" in line
    flat = sensitivity_result({8192.0: [0.004, 0.005, 0.006], 16384.0: [0.005, 0.006, 0.007]})
    assert ": not shown.**" in claim("\n".join(summary.verdict(document, None, flat)), 2)


def test_noise_range_grows_with_cells_and_shrinks_with_degrees_of_freedom():
    assert summary.noise_range_factor(6, np.inf) == pytest.approx(4.03, abs=0.01)  # range of 6 normal draws, 95%
    assert summary.noise_range_factor(2, np.inf) == pytest.approx(2.77, abs=0.01)
    assert summary.noise_range_factor(6, 3) > summary.noise_range_factor(6, 30) > summary.noise_range_factor(6, np.inf)


def test_sensitivity_from_a_runs_table_matches_the_grid(tmp_path):
    design = SyntheticDesign(fitting_sizes=["tiny-8k", "tiny-18k"], heldout_sizes=[], noise_size="tiny-8k", include_failures=False,
                             milestones_tokens=[2**19, 2**20])
    runs = tmp_path / "runs.csv"
    frame = synthetic_runs(SyntheticTruth(), design, seed=1)
    frame.to_csv(runs, index=False)
    document = {"config": {}, "setup": {"budgets_tokens": [2.0**19, 2.0**20], "context_tokens": design.tokens_per_clip,
                                        "fitting_sizes": [{"size": s} for s in design.fitting_sizes],
                                        "noise": {"relative_std": 3e-4, "source": "seeds"}}}
    sens = summary.sensitivity(str(runs), document, [])
    assert len(sens["groups"]) == 4 and sens["batch_clips"] == [8, 16, 32]
    grid = frame[(frame["series"] == "grid") & (frame["size"] == "tiny-8k") & (frame["tokens"] == 2**19)]
    expected = grid["validation_loss"].max() / grid["validation_loss"].min() - 1
    first = next(g for g in sens["groups"] if g["size"] == "tiny-8k" and g["tokens"] == 2.0**19)
    assert first["cells"] == 12 and first["spread"] == pytest.approx(expected, rel=1e-9)
    assert sens["spread_above_noise"] == 4


def test_comparison_verdict_follows_the_interval(document):
    def line(interval, value=-0.02):
        doc = copy.deepcopy(document)
        doc["comparison"]["model_size_reduction"] = estimate(value, interval)
        return claim("\n".join(summary.verdict(doc, None, None)), "3c")

    assert "not reproduced.**" in line([-0.046, 0.081]) and "includes zero" in line([-0.046, 0.081])
    assert "yes, in direction.**" in line([0.1, 0.3], 0.2)
    assert "no, the opposite.**" in line([-0.3, -0.1], -0.2)
    assert "not judged.**" in line(None)
    # why the reduction is small: the fixed cell is only 0.05% above the optimum here
    assert "is 0.05% above the interpolated optimum" in line([-0.046, 0.081])


def test_degenerate_or_edge_laws_are_not_reported_as_reproduced(document):
    doc = copy.deepcopy(document)
    doc["laws"]["loss_optimal"] = law({**LOSS, "L_inf": 0.0, "alpha": 1.9}, on_bound=["L_inf"], edge=(9, 9), rmse_log=0.011,
                                      bootstrap={"resamples": 50, "usable": 49, "failed": 1, "on_bound": 0, "held_at_bound": ["L_inf"]})
    text = "\n".join(summary.verdict(doc, None, None))
    first = claim(text, 1)
    assert ": partly.**" in first and "degenerate: L_inf ended on its bound" in first and "only an upper bound" in first
    batch = next(line for line in text.splitlines() if "best batch size" in line)
    assert "not tested.** All 9 optima lie on the grid's edge" in batch
    rows = {row[0]: row for row in summary.law_rows(doc)}
    assert "interval conditional on L_inf at its bound" in rows["L(N, T): T exponent alpha"][3]
    assert "ended on its bound (not estimated)" in rows["L(N, T): irreducible loss L_inf"][3]
    # a well-determined law within noise is reproduced
    assert ": yes.**" in claim("\n".join(summary.verdict(document, None, None)), 1)


def test_heldout_verdict_uses_prediction_interval_coverage(document):
    assert ": not reproduced.**" in claim("\n".join(summary.verdict(document, None, None)), 4)
    doc = copy.deepcopy(document)
    doc["heldout"]["summary"].update({"points": 12, "coverage": 11 / 12, "mean_absolute_relative_error": 0.0003})
    line = claim("\n".join(summary.verdict(doc, None, None)), 4)
    assert ": yes.**" in line and "1 of 12 points fall outside" in line
    assert summary.allowed_misses(12) == 3 and summary.allowed_misses(3) == 1


def test_main_writes_the_file_and_reads_missing_inputs_as_notes(document, tmp_path):
    laws = tmp_path / "laws.json"
    laws.write_text(json.dumps(document))
    out = tmp_path / "summary.md"
    assert summary.main(["--laws", str(laws), "--out", str(out), "--caption-conditioning", str(tmp_path / "absent.json")]) == 0
    text = out.read_text()
    assert "caption conditioning" in text and "could not be read" in text
    assert f"`{laws}`" in text


def test_data_reuse_counts_epochs_and_tells_overfitting_from_instability(tmp_path):
    design = SyntheticDesign(fitting_sizes=["tiny-8k", "tiny-18k"], heldout_sizes=[], noise_size="tiny-8k", include_failures=False,
                             milestones_tokens=[2**18, 2**19, 2**20])
    frame = synthetic_runs(SyntheticTruth(), design, seed=1)
    grid = frame[frame["series"] == "grid"]
    overfit, unstable = grid["run_id"].unique()[:2]
    last = frame["tokens"] == 2**20
    # overfitting: validation loss up 20% at the last milestone while the training loss keeps falling
    frame.loc[(frame["run_id"] == overfit) & last, "validation_loss"] *= 1.2
    frame.loc[frame["run_id"] == overfit, "train_loss"] = frame.loc[frame["run_id"] == overfit, "tokens"].map(
        {2**18: 0.5, 2**19: 0.4, 2**20: 0.3})
    # instability: both losses jump
    frame.loc[(frame["run_id"] == unstable) & last, ["validation_loss", "train_loss"]] *= 3.0
    runs = tmp_path / "runs.csv"
    frame.to_csv(runs, index=False)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"counts": {"train_clips": 1000, "validation_clips": 50}}))
    document = {"config": {}, "setup": {"fitting_sizes": [{"size": s} for s in design.fitting_sizes],
                                        "noise": {"relative_std": 0.01, "source": "seeds"}}}
    notes = []
    reuse = summary.data_reuse(str(runs), str(manifest), document, notes)
    assert notes == []
    assert reuse["max_epochs"] == pytest.approx(2**20 / (design.tokens_per_clip * 1000))
    assert set(reuse["turned_up"]) == {overfit, unstable}
    assert reuse["overfitting"] == [overfit]
    assert reuse["largest_rise"] == pytest.approx(2.0, rel=0.2)
    assert reuse["runs"] == grid["run_id"].nunique()
    curve = reuse["curve"]
    assert "tiny-18k" in curve["run_id"] and [p["tokens"] for p in curve["points"]] == [2**18, 2**19, 2**20]
    text = "\n".join(summary.data_reuse_lines(reuse, str(manifest)))
    assert "2 of" in text and f"`{overfit}`" in text and "| tokens | epochs |" in text
    # a missing manifest is named in the notes, not skipped silently
    assert summary.data_reuse(str(runs), str(tmp_path / "absent.json"), document, notes) is None
    assert any("absent.json" in note for note in notes)


@pytest.mark.parametrize("best, excess, status", [(True, None, "yes"), (False, 0.002, "partly"), (False, 0.05, "no")])
def test_heldout_cell_verdict_counts_a_miss_within_noise_as_partly(document, best, excess, status):
    group = {"kind": "hyperparameters", "size": "tiny-147k", "tokens": 32768.0, "predicted_cell_is_best": best,
             "predicted_cell_excess_loss": excess,
             "predicted_cell": {"batch_tokens": 512.0, "learning_rate": 0.01, "measured_loss": 0.8},
             "cells": [{"loss": 0.8}, {"loss": 0.81}, {"loss": 0.83}]}
    text = "\n".join(summary.verdict(document, {"groups": [group]}, None))
    line = next(line for line in text.splitlines() if "Claim 3b" in line)
    assert f"not fitted on: {status}.**" in line, line
    assert ("within the run-to-run noise (0.40%)" in line) == (status == "partly"), line
