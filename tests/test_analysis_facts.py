"""The facts document and the reports rendered from it: the one verdict rule, each claim's test against an
independent computation, the confidence level flowing from the fit config to every label and count, the
scorecard's keys, and the shape rules the reports rely on (no typed numbers or verdict words outside their
owners, short functions and modules, imports at the top, nothing of the pipeline but its formats)."""

import ast
import copy
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis import claims, measurements, verdicts
from analysis.batch_axis import main as batch_axis_main
from analysis.blas import limit_openblas_threads
from analysis.config import load_config
from analysis.facts import CLAIMS, build_facts, scorecard
from analysis.facts import main as facts_main
from analysis.fit import main as fit_main
from analysis.formatting import level, percent, percent_estimate, percent_significant, percent_significant_interval
from analysis.heldout import main as heldout_main
from analysis.intervals import basic_interval, bounds_with_dropped
from analysis.law_forms import LOSS_LAW
from analysis.laws_document import fit_laws
from analysis.propose import main as propose_main
from analysis.report import main as report_main
from analysis.runs import RunsTable
from analysis.sensitivity import noise_range_factor
from analysis.synthetic_runs import SyntheticDesign, SyntheticTruth, synthetic_proposal_runs, synthetic_runs

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"
TRUTH = SyntheticTruth()
DESIGN = SyntheticDesign(heldout_sizes=["tiny-262k"])
LEVEL = 0.9


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The analysis end to end at confidence level 0.9: fit, held-out proposal and its runs, facts, summary."""
    folder = tmp_path_factory.mktemp("facts")
    runs = folder / "runs.csv"
    synthetic_runs(TRUTH, DESIGN, seed=3).to_csv(runs, index=False)
    (folder / "fit.yaml").write_text(yaml.safe_dump({
        "heldout_sizes": DESIGN.heldout_sizes, "conventional_cell": {"batch_clips": 16, "learning_rate": 2e-3},
        "bootstrap_resamples": 40, "seed": 5, "confidence_level": LEVEL}))
    laws = folder / "laws.json"
    assert fit_main(["--runs", str(runs), "--config", str(folder / "fit.yaml"), "--out", str(laws), "--quiet"]) == 0
    proposal = folder / "proposal.json"
    assert propose_main(["--laws", str(laws), "--size", "tiny-262k", "--tokens", str(2**24), "--batch-clips", "8", "16", "32",
                         "--learning-rates", "5e-4,1e-3,2e-3,4e-3", "--out", str(proposal)]) == 0
    table = pd.concat([pd.read_csv(runs), synthetic_proposal_runs(json.loads(proposal.read_text()), TRUTH, DESIGN)])
    table.to_csv(folder / "runs_all.csv", index=False)
    heldout = folder / "heldout.json"
    assert heldout_main(["--runs", str(folder / "runs_all.csv"), "--laws", str(laws), "--proposal", str(proposal),
                         "--out", str(heldout)]) == 0
    facts, card, summary = folder / "facts.json", folder / "scorecard.json", folder / "summary.md"
    batch_axis = folder / "batch_axis.json"
    assert batch_axis_main(["--runs", str(runs), "--config", str(folder / "fit.yaml"), "--out", str(batch_axis)]) == 0
    assert facts_main(["--laws", str(laws), "--runs", str(runs), "--heldout", str(heldout), "--batch-axis", str(batch_axis),
                       "--out", str(facts), "--scorecard", str(card)]) == 0
    assert report_main(["--facts", str(facts), "--summary", str(summary), "--findings", str(folder / "FINDINGS.md")]) == 0
    return {"laws": json.loads(laws.read_text()), "heldout": json.loads(heldout.read_text()), "facts": json.loads(facts.read_text()),
            "scorecard": json.loads(card.read_text()), "summary": summary.read_text(), "findings": (folder / "FINDINGS.md").read_text(),
            "runs": runs, "batch_axis": json.loads(batch_axis.read_text())}


def claim_line(text: str, number: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"- **Claim {number},"))


# ---------------------------------------------------------------------------------------------- the rule
def test_the_verdict_rule():
    assert verdicts.from_interval([0.1, 0.3]) == verdicts.SUPPORTED
    assert verdicts.from_interval([-0.3, -0.1]) == verdicts.CONTRADICTED
    assert verdicts.from_interval([-0.1, 0.3]) == verdicts.INCONCLUSIVE
    assert verdicts.from_interval([0.3, 0.6], reference=0.25) == verdicts.SUPPORTED  # a rate against its chance rate
    assert verdicts.from_interval([None, 0.3]) == verdicts.INCONCLUSIVE  # an open end reaches past the reference
    assert verdicts.from_interval(None) == verdicts.NOT_TESTED
    assert verdicts.flipped([-0.3, None]) == [None, 0.3]
    assert verdicts.all_of([verdicts.SUPPORTED, verdicts.SUPPORTED]) == verdicts.SUPPORTED
    assert verdicts.all_of([verdicts.SUPPORTED, verdicts.INCONCLUSIVE]) == verdicts.INCONCLUSIVE
    assert verdicts.all_of([verdicts.NOT_TESTED, verdicts.CONTRADICTED]) == verdicts.CONTRADICTED
    assert verdicts.all_of([verdicts.NOT_TESTED, verdicts.SUPPORTED]) == verdicts.NOT_TESTED


def test_every_claim_has_one_verdict_of_the_rule(results):
    facts = results["facts"]
    assert set(facts["verdicts"]) == set(CLAIMS) and set(facts["verdicts"].values()) <= set(verdicts.VERDICTS)
    for name in CLAIMS:
        claim = facts["claims"][name]
        if claim["tests"]:
            assert claim["verdict"] == verdicts.all_of(verdicts.from_interval(t["interval"], t["reference"]) for t in claim["tests"])
        else:
            assert claim["verdict"] == verdicts.NOT_TESTED and claim["reason"]
    assert results["scorecard"]["verdicts"] == facts["verdicts"]


# ---------------------------------------------------------------------------------------------- level 0.9
def test_the_configured_confidence_level_reaches_every_interval_and_label(results):
    laws, text = results["laws"], results["summary"]
    samples = np.array(laws["laws"]["loss_optimal"]["bootstrap"]["samples"])
    low, high = np.percentile(samples[:, LOSS_LAW.parameter_names.index("alpha")], [5, 95])  # a 90% percentile interval
    assert laws["laws"]["loss_optimal"]["intervals"]["alpha"] == pytest.approx([low, high])
    row = next(line for line in text.splitlines() if line.startswith("| L(N, T): T exponent alpha |"))
    assert f"[{low:.3g}, {high:.3g}]" in row
    assert "ours [90% interval]" in text and "90% prediction interval" in text and "Intervals are 90% bootstrap" in text
    assert "95%" not in text and "95%" not in results["findings"]


def test_claim_four_counts_misses_at_the_configured_level(results):
    laws, heldout, text = results["laws"], results["heldout"], results["summary"]
    covered = [r["covered"] for r in laws["heldout"]["loss"]] + [
        g["covered"] for g in heldout["groups"] if g["kind"] == "compute_optimal" and g["status"] == "evaluated"]
    misses, points = sum(not c for c in covered), len(covered)
    chance = int(stats.binom.ppf(0.99, points, 1 - LEVEL))  # misses chance explains in 99% of cases at 90% intervals
    assert chance != int(stats.binom.ppf(0.99, points, 0.05))  # the count depends on the level
    line = claim_line(text, "4")
    assert f"{misses} of {points} points lie outside their 90% prediction intervals" in line
    assert f"where chance explains up to {chance} (the 99% binomial quantile at 90%)" in line
    records = laws["heldout"]["loss"] + [g for g in heldout["groups"] if g["kind"] == "compute_optimal" and g["status"] == "evaluated"]
    errors = np.array([r["relative_error"] for r in records])
    resampled = np.array([r["relative_error_resamples"] for r in records], dtype=float)  # (points, resamples)
    assert resampled.shape == (points, laws["config"]["bootstrap_resamples"]) and np.isfinite(resampled).all()
    claim = results["facts"]["claims"]["claim_4"]
    assert claim["mean_relative_error"] == pytest.approx(errors.mean())
    # the basic 90% interval of the mean over points, resample by resample (points share runs): 2 e - q
    q_low, q_high = np.percentile(resampled.mean(axis=0), [5, 95])
    assert claim["mean_relative_error_interval"] == pytest.approx([2 * errors.mean() - q_high, 2 * errors.mean() - q_low], rel=1e-5)


# ---------------------------------------------------------------------------------------------- claims
def test_claim_3c_follows_the_paired_interval_and_counts_dropped_resamples(results):
    document = copy.deepcopy(results["laws"])

    def verdict(interval, dropped=0, bounded=None):
        document["comparison"]["model_size_reduction"] = {"value": 0.1, "interval": interval, "dropped": dropped,
                                                          "interval_with_dropped": bounded}
        return claims.recipe_comparison(document)["verdict"]

    assert verdict([0.05, 0.3]) == verdicts.SUPPORTED
    assert verdict([-0.3, -0.05]) == verdicts.CONTRADICTED
    assert verdict([-0.05, 0.3]) == verdicts.INCONCLUSIVE
    assert verdict([0.05, 0.3], dropped=4, bounded=[-0.01, 0.4]) == verdicts.INCONCLUSIVE  # dropped resamples widen it
    assert verdict(None) == verdicts.NOT_TESTED
    comparison = results["laws"]["comparison"]
    paired = comparison["paired_resamples"] + comparison["dropped_resamples"]
    assert paired == results["laws"]["setup"]["bootstrap"]["resamples"]


def test_claim_3c_curves_cover_every_common_cell_from_the_smallest_run_to_100x_the_largest(results):
    curves, laws = results["laws"]["recipe_curves"], results["laws"]
    cells = {(c["batch_clips"], c["learning_rate"]) for c in curves["cells"]}
    assert cells == {(b, lr) for b in DESIGN.batch_clips for lr in DESIGN.learning_rates}
    assert [c for c in curves["cells"] if c["conventional"]] == [c for c in curves["cells"] if (c["batch_clips"], c["learning_rate"]) == (16, 2e-3)]
    run_flops = [o["flops"] for o in laws["optima"]]
    assert curves["flops"][0] == pytest.approx(min(run_flops)) and curves["flops"][-1] == pytest.approx(100 * max(run_flops))
    for cell in curves["cells"]:
        for point in cell["points"]:
            n_p, n_c = point["parameters_precise"], point["parameters_conventional"]
            assert point["model_size_reduction"]["value"] == pytest.approx(1 - n_p / n_c)


def test_hyperparameter_laws_with_optima_mostly_on_the_edge_are_untested(results):
    document = results["laws"]
    assert claims.hyperparameter_law(document, "batch_size", 0.6)["verdict"] == verdicts.NOT_TESTED
    tested = claims.hyperparameter_law(document, "learning_rate", 0.2)
    signs = {"b": np.sign(-0.0453), "c": np.sign(-0.1619)}  # the paper's LR exponents are negative
    for test, key in zip(tested["tests"], ("b", "c")):
        low, high = test["exponent_interval"]
        assert test["verdict"] == verdicts.from_interval(sorted([signs[key] * low, signs[key] * high]))


def test_claim_3a_places_the_papers_batch_optima_against_the_grid(results):
    """The paper's B_opt = 21797 T^0.808 N^0.1906 (tokens; N, T in billions), recomputed from the runs table."""
    runs = pd.read_csv(results["runs"])
    grid = runs[(runs["series"] == "grid") & ~runs["size"].isin(DESIGN.heldout_sizes)]  # the fitting sizes' grid
    pairs = grid[["non_embedding_parameters", "tokens"]].dropna().drop_duplicates()  # synthetic runs read at their budgets
    expected = 21797.0 * (pairs["tokens"] / 1e9) ** 0.808 * (pairs["non_embedding_parameters"] / 1e9) ** 0.1906
    low, high = grid["batch_tokens"].min(), grid["batch_tokens"].max()
    placed = results["facts"]["claims"]["claim_3a_batch_size"]["paper_on_grid"]
    assert placed["pairs"] == len(pairs) and placed["grid_batch_tokens"] == [low, high]
    assert placed["min_tokens"] == pytest.approx(expected.min()) and placed["max_tokens"] == pytest.approx(expected.max())
    assert placed["below_grid"] == int((expected < low).sum()) and placed["above_grid"] == int((expected > high).sum())
    assert "paper_on_grid" not in results["facts"]["claims"]["claim_3a_learning_rate"]


def test_claim_3b_compares_the_predicted_cell_with_its_best_neighbour_within_the_noise(results):
    group = next(g for g in results["heldout"]["groups"] if g["kind"] == "hyperparameters")
    sigma = results["laws"]["setup"]["noise"]["relative_std"]
    predicted = group["predicted_cell"]
    per_clip = results["laws"]["setup"]["context_tokens"]
    others = [c["loss"] for c in group["cells"] if not (np.isclose(c["batch_clips"] * per_clip, predicted["batch_tokens"])
                                                       and np.isclose(c["learning_rate"], predicted["learning_rate"]))]
    margin = min(others) / predicted["measured_loss"] - 1
    resampled = np.array(group["margin_resamples"], dtype=float)  # the best other cell found again in each resample
    assert resampled.size == results["laws"]["config"]["bootstrap_resamples"] and np.isfinite(resampled).all()
    # a margin compares two cells' means of k runs: its resampled spread is about sqrt(2) sigma / sqrt(k), less when
    # several cells compete for the minimum
    k = group["replicates"]
    assert 0.5 * np.sqrt(2 / k) * sigma < resampled.std() < 1.5 * np.sqrt(2 / k) * sigma
    q_low, q_high = np.percentile(resampled, [50 - 50 * LEVEL, 50 + 50 * LEVEL])
    test = results["facts"]["claims"]["claim_3b"]["tests"][0]
    assert test["value"] == pytest.approx(margin)
    assert test["interval"] == pytest.approx([2 * margin - q_high, 2 * margin - q_low])  # the basic bootstrap interval


def test_claim_1_is_untested_on_a_guard_bound_of_the_optimiser_only(results):
    """An exponent at the optimiser's cap (a guard bound) leaves the law not identified: not tested. L_inf at 0 is a bound
    of the model (the constrained estimate): tested. A laws file written before ``guard_bounds`` names only ``on_bound``."""
    document = copy.deepcopy(results["laws"])
    fit, parameters = document["laws"]["loss_optimal"]["fit"], document["laws"]["loss_optimal"]["parameters"]
    fit.update(on_bound=["beta"], guard_bounds=["beta"])
    guarded = claims.loss_law(document, 0.01)
    assert guarded["verdict"] == verdicts.NOT_TESTED and "beta" in guarded["reason"] and guarded["guard_bounds"] == ["beta"]
    fit.update(on_bound=["L_inf"], guard_bounds=[])
    parameters["L_inf"] = 0.0
    at_floor = claims.loss_law(document, 0.01)
    assert at_floor["tests"] and at_floor["l_inf"]["on_bound"] and at_floor["l_inf"]["at_floor"]
    assert at_floor["verdict"] == verdicts.all_of(verdicts.from_interval(t["interval"]) for t in at_floor["tests"])
    del fit["guard_bounds"]  # an older laws file: L_inf at 0 is its floor, beta at 5 a guard
    assert claims.loss_law(document, 0.01)["tests"]
    fit["on_bound"] = ["beta"]
    assert claims.loss_law(document, 0.01)["verdict"] == verdicts.NOT_TESTED
    fitted = claims.loss_law(results["laws"], 0.01)
    l_inf = results["laws"]["laws"]["loss_optimal"]["intervals"]["L_inf"]
    assert fitted["l_inf"]["excludes_zero"] == (l_inf[0] > 0) and not fitted["l_inf"]["on_bound"]


def test_claim_1_with_l_inf_at_its_floor_is_read_from_its_exponents():
    """Synthetic runs with a true L_inf of 0 whose full-data fit puts L_inf at 0 (seed 5): claim 1's verdict follows from
    the exponents' intervals, recomputed from the kept bootstrap samples, and L_inf is still reported on its bound."""
    truth = SyntheticTruth(loss={"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.0}, run_noise=3e-3)
    frame = synthetic_runs(truth, SyntheticDesign(include_failures=False), seed=5)
    config = load_config(None, {"bootstrap_resamples": 50, "heldout_sizes": ["tiny-262k", "tiny-590k"]})
    document = json.loads(json.dumps(fit_laws(RunsTable.from_frame(frame), config), default=float))
    law = document["laws"]["loss_optimal"]
    assert law["fit"]["on_bound"] == ["L_inf"] and law["parameters"]["L_inf"] == 0.0
    claim = claims.loss_law(document, document["setup"]["noise"]["relative_std"])
    samples, bootstrap = np.array(law["bootstrap"]["samples"]), law["bootstrap"]
    dropped = bootstrap["failed"] + bootstrap["on_bound"]
    expected = []
    for name in ("alpha", "beta"):
        column = samples[:, LOSS_LAW.parameter_names.index(name)]
        tail = 100 * (1 - config.confidence_level) / 2
        interval = bounds_with_dropped(column, dropped, config.confidence_level) if dropped else list(np.percentile(column, [tail, 100 - tail]))
        expected.append(verdicts.from_interval(interval))
    assert claim["verdict"] == verdicts.all_of(expected) != verdicts.NOT_TESTED
    assert claim["l_inf"]["on_bound"] and claim["l_inf"]["at_floor"] and law["fit"]["guard_bounds"] == []
    card = scorecard(build_facts(document, {}))
    assert card["loss_law"]["on_bound"] is True and card["loss_law"]["l_inf"] == 0.0


def test_laws_table_flags_guard_bounds_as_degenerate_and_l_inf_at_zero_as_the_models_floor(results):
    document = copy.deepcopy(results["laws"])
    law = document["laws"]["loss_optimal"]
    law["fit"].update(on_bound=["L_inf"], guard_bounds=[])
    law["parameters"]["L_inf"] = 0.0
    rows = {(r["law"], r["parameter"]): r for r in measurements.laws_table(document)}
    assert rows[("loss_optimal", "L_inf")]["at_model_bound"] and rows[("loss_optimal", "L_inf")]["on_bound"]
    assert rows[("loss_optimal", "alpha")]["degenerate"] == [] and rows[("precise", "a")]["degenerate"] == []
    law["fit"].update(on_bound=["beta"], guard_bounds=["beta"])
    rows = {(r["law"], r["parameter"]): r for r in measurements.laws_table(document)}
    assert rows[("loss_optimal", "alpha")]["degenerate"] == ["beta"] and rows[("precise", "a")]["degenerate"] == ["beta"]
    assert not rows[("loss_optimal", "L_inf")]["at_model_bound"]


def test_claim_1_reads_each_exponent_with_its_dropped_resamples_at_either_extreme_and_says_so(results):
    from analysis.report import render

    document = copy.deepcopy(results["laws"])
    law = document["laws"]["loss_optimal"]
    # 3 of the 40 resamples dropped: a 5% tail (level 0.9) holds 2, so at either extreme they leave both ends open
    law["bootstrap"].update(failed=1, on_bound=2)
    law["bootstrap"]["intervals_with_dropped"].update(alpha=[None, None], beta=[None, None])
    claim = claims.loss_law(document, 0.01)
    assert (claim["dropped_resamples"], claim["failed_resamples"], claim["on_bound_resamples"]) == (3, 1, 2)
    assert claim["resamples"] == law["bootstrap"]["resamples"]
    assert claim["tests"][0]["interval"] == [None, None] and claim["verdict"] == verdicts.INCONCLUSIVE
    line = claim_line(render("summary.md.j2", {**results["facts"], "claims": {**results["facts"]["claims"], "claim_1": claim}}), "1")
    assert f"the 3 of {law['bootstrap']['resamples']} bootstrap resamples that were dropped (2 put a parameter" in line
    assert "1 did not converge" in line
    kept = results["facts"]["claims"]["claim_1"]
    if not kept.get("dropped_resamples"):
        assert "bootstrap resamples that were dropped" not in claim_line(results["summary"], "1")


def test_sensitivity_matches_the_grid_and_the_studentized_range(results):
    laws, sens = results["laws"], results["facts"]["sensitivity"]
    grid = next(g for g in laws["grids"] if g["role"] == "fitting")
    column = np.array([row[0] for row in grid["losses"]], dtype=float)
    pair = next(p for p in sens["pairs"] if p["size"] == grid["size"] and p["tokens"] == laws["setup"]["budgets_tokens"][0])
    assert pair["whole"]["spread"] == pytest.approx(column.max() / column.min() - 1)
    dof = sens["noise_degrees_of_freedom"]
    q = stats.studentized_range.ppf(LEVEL, column.size, dof)
    assert noise_range_factor(column.size, dof, LEVEL) == pytest.approx(q)
    sigma = laws["setup"]["noise"]["relative_std"]
    assert pair["whole"]["interval"] == pytest.approx([pair["whole"]["spread"] - q * sigma, pair["whole"]["spread"] + q * sigma])
    assert noise_range_factor(6, None, 0.95) == pytest.approx(4.03, abs=0.01)  # range of 6 normal draws, 95%
    assert noise_range_factor(6, 3, 0.95) > noise_range_factor(6, 30, 0.95) > noise_range_factor(6, None, 0.95)


# ---------------------------------------------------------------------------------------------- scorecard
def test_scorecard_sections_and_keys(results):
    card = results["scorecard"]
    assert {"performance", "design", "loss_law", "heldout", "empirical_nopt_fitted", "claim_3c", "verdicts"} <= set(card)
    assert set(card["design"]) == {"fitting_sizes", "n_span", "t_span_min", "b_edge_fraction", "lr_edge_fraction", "noise_relative_std",
                                   "noise_relative_std_interval", "noise_degrees_of_freedom"}
    noise = results["laws"]["setup"]["noise"]
    dof, sigma = noise["degrees_of_freedom"], noise["relative_std"]
    expected = [sigma * np.sqrt(dof / stats.chi2.ppf(1 - (1 - LEVEL) / 2, dof)), sigma * np.sqrt(dof / stats.chi2.ppf((1 - LEVEL) / 2, dof))]
    assert card["design"]["noise_relative_std_interval"] == pytest.approx(expected)
    low, high = noise["detail"]["degrees_of_freedom_range"]
    assert card["design"]["noise_degrees_of_freedom"] == dof and low <= dof <= high
    assert set(card["loss_law"]) == {"l_inf", "l_inf_low", "l_inf_high", "on_bound"}
    assert set(card["heldout"]) == {"sizes", "mean_abs_error", "covered", "points", "expected_mean_abs_error"}
    assert {"points", "verdict", "cell"} <= set(card["claim_3c"])
    optima = results["laws"]["optima"]
    assert card["design"]["b_edge_fraction"] == pytest.approx(sum(not o["interior_batch"] for o in optima) / len(optima))
    # The synthetic grid's diverged run stopped after two milestones: its cell is unstable at every later budget.
    unstable = [(g["size"], t) for g in results["laws"]["grids"] if g["role"] == "fitting"
                for row in g["unstable"] for t, flag in zip(results["laws"]["setup"]["budgets_tokens"], row) if flag]
    assert len(unstable) == len(results["laws"]["setup"]["budgets_tokens"]) - 2
    assert results["facts"]["design"]["lr_unstable_bound"] == sum(o["unstable_bound_learning_rate"] for o in optima)
    assert card["design"]["n_span"] == pytest.approx(max(s["parameters"] for s in results["laws"]["setup"]["fitting_sizes"])
                                                     / min(s["parameters"] for s in results["laws"]["setup"]["fitting_sizes"]))
    performance = {"grid_model_flops": 2e12, "grid_job_seconds": 100.0, "matmul_flops_per_s": 1e11, "grid_fraction_of_matmul": 0.2,
                   "members_per_job": 4.0, "jobs": 6}
    assert set(measurements.performance(performance)) >= {"grid_model_flops", "grid_job_seconds", "matmul_flops_per_s",
                                                          "grid_fraction_of_matmul", "members_per_job"}
    assert "parts" not in measurements.performance(performance)  # a record of older code: no split of the seconds
    parts = {"training": {"model_flops": 1.5e12, "seconds": 60.0, "fraction_of_matmul": 0.25},
             "validation": {"model_flops": 0.5e12, "seconds": 25.0, "fraction_of_matmul": 0.2}}
    split = measurements.performance({**performance, "parts": parts})
    assert [p["part"] for p in split["parts"]] == ["training", "validation"]
    assert [p["model_flops_per_s"] for p in split["parts"]] == [pytest.approx(1.5e12 / 60.0), pytest.approx(0.5e12 / 25.0)]
    assert split["other_seconds"] == pytest.approx(100.0 - 60.0 - 25.0)
    assert "by_shape" not in split
    shapes = [{"width": 24, "depth": 1, "jobs": 3, "runs": 54, "model_flops": 1e12, "job_seconds": 70.0,
               "fraction_of_matmul": 1e12 / 70.0 / 1e11, "training_seconds": 60.0, "training_fraction_of_matmul": 0.15}]
    assert measurements.performance({**performance, "by_shape": shapes})["by_shape"] == shapes



def test_a_grid_performance_that_was_not_measured_renders_as_such(results):
    """A rerun of a grid whose runs had all finished measures nothing: the facts carry the reason, the scorecard no
    figures, and the summary says so instead of failing."""
    from analysis.report import render

    record = {"status": "not measured", "reason": "no job trained in this execution", "jobs": 6}
    performance = measurements.performance(record)
    assert performance == {"status": "not measured", "reason": "no job trained in this execution", "jobs": 6}
    facts = {**results["facts"], "performance": performance}
    assert scorecard(facts)["performance"] is None
    text = render("summary.md.j2", facts)
    assert "Grid training jobs, all together (`performance.json`): not measured (6 jobs): no job trained" in text


def test_learning_rate_edges_are_counted_by_where_the_best_cell_sits():
    """A grid built so that each place occurs a known number of times; interior optima are not counted."""
    rates, batches, budgets = [1e-3, 2e-3, 4e-3, 8e-3], [1, 2], [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0]
    cells = [{"batch_clips": b, "learning_rate": r} for b in batches for r in rates if (b, r) != (1, 4e-3)]  # (1, 4e-3) left out
    best = {100.0: (2, 8e-3), 200.0: (1, 2e-3), 300.0: (2, 1e-3), 400.0: (2, 4e-3), 500.0: (2, 2e-3), 600.0: (2, 2e-3),
            700.0: (2, 2e-3)}
    losses = [[0.5 if (c["batch_clips"], c["learning_rate"]) == best[t] else 1.0 for t in budgets] for c in cells]
    unstable = [[False] * len(budgets) for _ in cells]
    above = cells.index({"batch_clips": 2, "learning_rate": 4e-3})
    losses[above][budgets.index(600.0)] = float("nan")  # no loss at 600 ...
    losses[above][budgets.index(700.0)] = float("nan")  # ... nor at 700, where a seed of the cell had diverged
    unstable[above][budgets.index(700.0)] = True
    interior = {500.0}
    document = {
        "setup": {"budgets_tokens": budgets},
        "grids": [{"size": "s", "role": "fitting", "cells": cells, "losses": losses, "unstable": unstable},
                  {"size": "h", "role": "heldout", "cells": cells[:1], "losses": [[1.0] * len(budgets)]}],
        "optima": [{"size": "s", "tokens": t, "interior_learning_rate": t in interior} for t in budgets]
        + [{"size": "h", "tokens": 100.0, "interior_learning_rate": False}],
    }
    assert measurements.learning_rate_edges(document) == {
        "highest_rate": 1, "lowest_rate": 1, "next_to_left_out": 2, "interpolated_to_edge": 2}


def test_caption_match_rates_are_judged_against_chance():
    match = {"confidence_level": 0.95, "samples": {"colour": {"rate": 0.5, "interval": [0.4, 0.6], "chance": 0.25, "count": 32, "of": 64},
                                                   "direction": {"rate": 0.3, "interval": [0.15, 0.45], "chance": 0.25, "count": 6, "of": 20}}}
    rates = measurements.captions(None, match, None)["match"]["rates"]
    assert rates["colour"]["verdict"] == verdicts.SUPPORTED and rates["direction"]["verdict"] == verdicts.INCONCLUSIVE
    gain = measurements.captions({"differences": {"null_minus_captions": {"mean": 0.002, "relative": 0.01}}}, None, {"relative_std": 0.001})
    assert gain["gain"]["multiple"] == pytest.approx(10.0) and gain["gain"]["meets_target"]


def test_data_reuse_counts_epochs_and_tells_memorising_from_instability(results):
    design = SyntheticDesign(fitting_sizes=["tiny-8k", "tiny-18k"], heldout_sizes=[], noise_size="tiny-8k", include_failures=False,
                             milestones_tokens=[2**18, 2**19, 2**20])
    frame = synthetic_runs(TRUTH, design, seed=1)
    grid = frame[frame["series"] == "grid"]
    memorising, unstable = grid["run_id"].unique()[:2]
    last = frame["tokens"] == 2**20
    frame.loc[(frame["run_id"] == memorising) & last, "validation_loss"] *= 1.2  # validation up, training still falling
    frame.loc[frame["run_id"] == memorising, "train_loss"] = frame.loc[frame["run_id"] == memorising, "tokens"].map(
        {2**18: 0.5, 2**19: 0.4, 2**20: 0.3})
    frame.loc[(frame["run_id"] == unstable) & last, ["validation_loss", "train_loss"]] *= 3.0  # both jump
    document = {"setup": {"fitting_sizes": [{"size": s} for s in design.fitting_sizes], "noise": {"relative_std": 0.01}}}
    reuse = measurements.data_reuse(RunsTable.from_frame(frame), {"counts": {"train_clips": 1000, "validation_clips": 50}}, document)
    assert reuse["max_epochs"] == pytest.approx(2**20 / (design.tokens_per_clip * 1000))
    assert set(reuse["turned_up"]) == {memorising, unstable} and reuse["memorising"] == [memorising]
    assert reuse["largest_rise"] == pytest.approx(2.0, rel=0.2) and reuse["runs"] == grid["run_id"].nunique()
    assert "tiny-18k" in reuse["curve"]["run_id"] and [p["tokens"] for p in reuse["curve"]["points"]] == [2**18, 2**19, 2**20]


def test_formatting():
    assert percent(-0.0208) == "-2.1%" and percent(-0.0001) == "0.0%" and percent(0.0568, 2, signed=True) == "+5.68%"
    assert percent_estimate({"value": -0.0208, "interval": [-0.046, 0.081]}) == "-2.1% [-4.6%, 8.1%]"
    assert percent_estimate({"value": -0.0208, "interval": None}) == "-2.1% (no interval)"
    assert percent_estimate({"value": 0.1, "interval": [None, 0.2]}) == "10.0% [-inf, 20.0%]"
    assert level(0.9) == "90%" and level(0.975) == "97.5%"


def test_rendered_reports_have_no_missing_values(results):
    for text in (results["summary"], results["findings"]):
        assert "%%" not in text and "nan" not in text.lower() and not re.search(r"\bNone\b(?! that)", text)


def test_the_batch_axis_counts_are_those_of_its_reading(results):
    """The facts' batch-axis summary counts, per larger batch, the (size, budget) pairs of the reading by the verdict
    of their excess, and takes the median of the excesses."""
    facts, document = results["facts"]["batch_axis"], results["batch_axis"]
    entries = [e for size in document["sizes"] for p in size["points"] for e in p["batches"] if "verdict" in e]
    assert entries and [b["batch_clips"] for b in facts["batches"]] == sorted({e["batch_clips"] for e in entries})
    for record in facts["batches"]:
        mine = [e for e in entries if e["batch_clips"] == record["batch_clips"]]
        assert record["pairs"] == len(mine)
        assert record["worse"] == sum(e["verdict"] == verdicts.SUPPORTED for e in mine)
        assert record["better"] == sum(e["verdict"] == verdicts.CONTRADICTED for e in mine)
        assert record["within_noise"] == sum(e["verdict"] == verdicts.INCONCLUSIVE for e in mine)
        assert record["median_excess"] == pytest.approx(float(np.median([e["excess"] for e in mine])))
    assert facts["smallest_batch_clips"] == min(DESIGN.batch_clips)
    assert results["facts"]["sources"]["paths"]["batch_axis"].endswith("batch_axis.json")


def test_facts_from_older_code_are_refused_with_their_commit_and_nothing_written(results, tmp_path, capsys):
    """A facts document that lacks a fact the templates show (one written before the fact existed) is an error that
    names the commit that wrote it; a document of another schema is refused before rendering; no report is written."""
    older = json.loads(json.dumps(results["facts"]))
    del older["claims"]["claim_3b"]
    older["provenance"]["code_version"]["commit"] = "0123456789abcdef"
    path, summary, findings = tmp_path / "facts.json", tmp_path / "summary.md", tmp_path / "FINDINGS.md"
    path.write_text(json.dumps(older))
    assert report_main(["--facts", str(path), "--summary", str(summary), "--findings", str(findings)]) == 2
    error = capsys.readouterr().err
    assert "claim_3b" in error and "0123456789ab" in error and not summary.exists() and not findings.exists()
    path.write_text(json.dumps({**results["facts"], "schema": "analysis.facts/0"}))
    assert report_main(["--facts", str(path), "--summary", str(summary)]) == 2
    assert "analysis.facts/0" in capsys.readouterr().err and not summary.exists()


# ---------------------------------------------------------------------------------------------- shape
def analysis_sources():
    return sorted(ANALYSIS.rglob("*.py")) + sorted(ANALYSIS.rglob("*.j2"))


def test_verdict_words_live_only_in_the_verdict_rule():
    for path in analysis_sources():
        if path.name == "verdicts.py":
            continue
        for word in verdicts.VERDICTS:
            assert not re.search(rf"\b{word}\b", path.read_text()), f"{path.name} types the verdict {word!r}"


def test_published_numbers_are_typed_only_in_the_paper_module():
    for path in analysis_sources():
        if path.name != "paper.py":
            for literal in ("0.4778", "3.3e9", "3.7e9", "39.7%", "39.9%", "0.03%", "0.15%"):
                assert literal not in path.read_text(), f"{path.name} types {literal}"


def test_functions_modules_and_imports_are_short_and_at_the_top():
    for path in sorted(ANALYSIS.rglob("*.py")):
        text = path.read_text()
        assert text.count("\n") <= 500, f"{path.name}: {text.count(chr(10))} lines"
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{path.name}: {node.name} is {node.end_lineno - node.lineno + 1} lines"
                inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{path.name}: {node.name} imports inside a function"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                assert node.module == "pipeline.formats", f"{path.name} imports {node.module}"


def test_an_estimate_with_dropped_resamples_shows_the_interval_its_verdict_reads():
    """The verdict rule reads the interval with the dropped resamples counted at either extreme; the report shows
    that interval beside the kept resamples' one, so a verdict never contradicts the interval printed next to it."""
    kept = [-3.9, -0.58]
    unbounded = {"value": -1.4, "interval": kept, "dropped": 76, "interval_with_dropped": [None, None]}
    assert verdicts.from_interval(unbounded["interval_with_dropped"]) == verdicts.INCONCLUSIVE
    assert verdicts.from_interval(kept) == verdicts.CONTRADICTED
    assert percent_estimate(unbounded).endswith("(76 resamples dropped; counted at either extreme: unbounded)")
    bounded = {"value": -1.4, "interval": kept, "dropped": 3, "interval_with_dropped": [-4.0, -0.5]}
    assert percent_estimate(bounded).endswith("counted at either extreme: [-400.0%, -50.0%])")
    assert "dropped" not in percent_estimate({"value": -1.4, "interval": kept, "dropped": 0})
    assert "(1 resample dropped;" in percent_estimate({**bounded, "dropped": 1})


def test_extra_learning_rates_are_those_beyond_the_rates_every_fitting_size_has():
    cells = [{"batch_clips": 1, "learning_rate": r} for r in (1e-3, 2e-3)]
    document = {"grids": [{"size": "a", "role": "fitting", "cells": cells + [{"batch_clips": 2, "learning_rate": 4e-3}]},
                          {"size": "b", "role": "fitting", "cells": cells},
                          {"size": "h", "role": "heldout", "cells": [{"batch_clips": 1, "learning_rate": 8e-3}]}]}
    assert measurements.extra_learning_rates(document, {1e-3, 2e-3}) == {"a": [4e-3]}


def test_the_held_out_error_expected_from_the_prediction_intervals_alone_against_a_simulation():
    """Each point's 95% prediction interval, read as a normal spread s (relative to the prediction), gives the
    |error| it would show on average; checked against the mean |error| of simulated normal errors."""
    from scipy.stats import norm

    level, z = 0.95, norm.ppf(0.975)
    spreads = [0.012, 0.02, 0.008]  # relative std of each point's error
    loss = [{"size": "tiny-1m", "tokens": 1e5 * (i + 1), "predicted_loss": 0.2, "measured_loss": 0.2 * (1 + e),
             "relative_error": -e / (1 + e), "covered": True, "prediction_interval": [0.2 * (1 - z * s), 0.2 * (1 + z * s)]}
             for i, (s, e) in enumerate(zip(spreads, [0.01, -0.02, 0.0]))]
    loss.append({**loss[0], "tokens": 9e5, "prediction_interval": None, "covered": None})  # no interval: not counted
    record = measurements.heldout({"heldout": {"loss": loss}}, None, level)
    draws = np.random.default_rng(0).standard_normal((400_000, 1)) * np.array(spreads)
    assert record["expected_points"] == 3
    assert record["expected_mean_abs_error"] == pytest.approx(np.abs(draws).mean(), rel=5e-3)
    assert record["mean_abs_error"] == pytest.approx(np.mean([abs(p["relative_error"]) for p in loss]))


def _caption_records(run_id: str, size: str, parameters: int, tokens: int, gain: float, loss: float, spread: float) -> dict:
    """The three evaluation records of one trained model, as dit.evaluate and dit.caption_match write them."""
    run = {"run_id": run_id, "size": size, "non_embedding_parameters": parameters, "tokens": tokens}
    differences = {"null_minus_captions": {"mean": gain, "relative": gain / loss},
                   "swapped_minus_captions": {"mean": gain / 400, "relative": gain / 400 / loss},
                   "exchanged_minus_captions": {"mean": -gain / 900, "relative": -gain / 900 / loss}}
    contrasts = {"swapped": {"pairs": [["down", "up"], ["left", "right"]], "clips_changed": 120},
                 "exchanged": {"words": ["red", "green", "blue"], "clips_changed": 97}}
    return {
        "caption_conditioning": {"run": run, "differences": differences, "contrasts": contrasts, "validation": {"clips": 128}},
        "protocol_spread": {"run": run, "relative_std": spread, "per_seed": {"0": loss, "1": loss * (1 + spread)}},
        "caption_match": {"confidence_level": LEVEL, "samples": {
            "colour": {"rate": 0.5, "interval": [0.4, 0.6], "chance": 0.25, "count": 32, "of": 64},
            "direction": {"rate": 0.1, "interval": [0.03, 0.2], "chance": 0.25, "count": 2, "of": 20}}},
    }


def test_caption_checks_of_the_largest_and_the_compute_optimal_model(results, tmp_path):
    """Both models' records through the command line: each gain over its own protocol spread, its run and tokens per
    parameter, the target judged on the largest model only, and the scorecard's and summary's copies."""
    laws = tmp_path / "laws.json"
    laws.write_text(json.dumps(results["laws"]))
    largest = _caption_records("heldout/tiny-1m/b1_lr0.00125_s0", "tiny-1m", 1_048_576, 131_072, 0.0002, 0.1, 0.003)
    optimal = _caption_records("compute_optimal/tiny-147k/b1_lr0.000625_s0", "tiny-147k", 147_456, 2_097_152, 0.005, 0.08, 0.004)
    arguments = []
    for prefix, records in (("", largest), ("compute-optimal-", optimal)):
        for name, record in records.items():
            path = tmp_path / f"{prefix}{name}.json"
            path.write_text(json.dumps(record))
            arguments += [f"--{prefix}{name.replace('_', '-')}", str(path)]
    facts, card, summary = tmp_path / "facts.json", tmp_path / "scorecard.json", tmp_path / "summary.md"
    assert facts_main(["--laws", str(laws), "--out", str(facts), "--scorecard", str(card), *arguments]) == 0
    assert report_main(["--facts", str(facts), "--summary", str(summary)]) == 0
    captions, scorecard = json.loads(facts.read_text())["captions"], json.loads(card.read_text())["captions"]
    for model, block, records in (("largest", captions, largest), ("compute_optimal", captions["compute_optimal"], optimal)):
        run = records["caption_conditioning"]["run"]
        relative = records["caption_conditioning"]["differences"]["null_minus_captions"]["relative"]
        assert block["run"]["tokens_per_parameter"] == pytest.approx(run["tokens"] / run["non_embedding_parameters"])
        assert block["gain"]["multiple"] == pytest.approx(relative / records["protocol_spread"]["relative_std"])
        assert scorecard[model]["run_id"] == run["run_id"]
        assert scorecard[model]["gain_multiple_of_protocol_spread"] == pytest.approx(block["gain"]["multiple"])
        assert scorecard[model]["meets_target"] is (relative >= 5 * records["protocol_spread"]["relative_std"])
        assert scorecard[model]["colour_verdict"] == verdicts.SUPPORTED
        assert scorecard[model]["direction_verdict"] == verdicts.CONTRADICTED
        spread = records["protocol_spread"]["relative_std"]
        differences = records["caption_conditioning"]["differences"]
        contrasts = {c["condition"]: c for c in block["contrasts"]}
        assert sorted(contrasts) == ["exchanged", "swapped"]
        for name, row in contrasts.items():
            difference = differences[f"{name}_minus_captions"]
            assert row["clips_changed"] == records["caption_conditioning"]["contrasts"][name]["clips_changed"]
            assert row["clips"] == 128
            assert row["multiple"] == pytest.approx(difference["relative"] / spread)
            assert row["share_of_gain"] == pytest.approx(difference["mean"] / differences["null_minus_captions"]["mean"])
            assert scorecard[model]["contrasts"][name]["multiple_of_protocol_spread"] == pytest.approx(row["multiple"])
        assert contrasts["swapped"]["pairs"] == [["down", "up"], ["left", "right"]]
        assert contrasts["exchanged"]["words"] == ["red", "green", "blue"]
    assert scorecard["largest"]["meets_target"] is False and scorecard["compute_optimal"]["meets_target"] is True
    text = summary.read_text()
    assert "`compute_optimal/tiny-147k/b1_lr0.000625_s0`" in text and "`heldout/tiny-1m/b1_lr0.00125_s0`" in text
    assert text.count("the target, set for the largest model") == 1
    assert text.count("down and up, left and right swapped in every caption (120 of 128 validation captions changed)") == 2
    assert text.count("the first two of red, green, blue in each caption trading places (97 of 128") == 2


# ---------------------------------------------------------------------------------------------- bounds, edges, budgets
def _facts_of(results, document, heldout):
    """Facts built in memory from a laws document and a held-out evaluation, with the fixture's sources to render."""
    facts = build_facts(document, {"heldout": heldout})
    return {**facts, "provenance": results["facts"]["provenance"], "sources": results["facts"]["sources"]}


def test_claim_3c_rows_whose_loss_law_is_on_a_guard_bound_are_not_tested(results):
    """Per fixed cell: a loss law on a guard bound (beta at the optimiser's cap) is not identified, so its row is not
    tested, with the reason in the summary's table; L_inf at its floor 0 is a bound of the model and keeps its verdict.
    The headline follows the same rule for the precise and conventional laws."""
    from analysis.report import render

    document = copy.deepcopy(results["laws"])
    cells = [c for c in document["recipe_curves"]["cells"] if c.get("status") == "computed" and not c["conventional"]]
    guarded, floored, old_style = cells[:3]
    guarded["loss_law"].update(on_bound=["beta"], guard_bounds=["beta"])
    guarded["loss_law"]["parameters"]["beta"] = 5.0
    floored["loss_law"].update(on_bound=["L_inf"], guard_bounds=[])
    floored["loss_law"]["parameters"]["L_inf"] = 0.0
    old_style["loss_law"] = {"parameters": {**old_style["loss_law"]["parameters"], "beta": 5.0}, "on_bound": ["beta"]}
    claim = claims.recipe_comparison(document)
    rows = {(r["batch_clips"], r["learning_rate"]): r for r in claim["by_cell"]}
    for cell in (guarded, old_style):
        row = rows[(cell["batch_clips"], cell["learning_rate"])]
        assert row["verdict"] == verdicts.NOT_TESTED and "beta ended on a guard bound" in row["reason"]
    last = floored["points"][-1]["model_size_reduction"]
    interval = last.get("interval_with_dropped") if last.get("dropped") else last["interval"]
    assert rows[(floored["batch_clips"], floored["learning_rate"])]["verdict"] == verdicts.from_interval(interval or last["interval"])
    text = render("summary.md.j2", {**results["facts"], "claims": {**results["facts"]["claims"], "claim_3c": claim}})
    row_line = next(line for line in text.splitlines()
                    if line.startswith(f"| B = {guarded['batch_clips']} clip{'s' if guarded['batch_clips'] != 1 else ''}, "
                                       f"LR = {guarded['learning_rate']:.4g} |"))
    assert row_line.endswith(f"{verdicts.NOT_TESTED}: {rows[(guarded['batch_clips'], guarded['learning_rate'])]['reason']} |")
    document["laws"]["loss_conventional"]["fit"].update(on_bound=["beta"], guard_bounds=["beta"])
    document["comparison"]["dropped_resamples"] = 7  # the headline untested, with dropped resamples: it still renders
    headline = claims.recipe_comparison(document)
    assert headline["verdict"] == verdicts.NOT_TESTED and "loss_conventional has beta" in headline["reason"] and headline["by_cell"]
    text = render("summary.md.j2", {**results["facts"], "claims": {**results["facts"]["claims"], "claim_3c": headline}})
    line = next(line for line in text.splitlines() if line.startswith("- **Claim 3c"))
    assert f"{verdicts.NOT_TESTED}.** A loss law is not identified: loss_conventional has beta" in line and "7 dropped)" in line


def test_the_target_budget_and_the_curves_span_only_the_size_budget_pairs_run():
    """Sizes with different budget ranges: the largest size stops early and the smallest starts late, so every size
    times every budget includes pairs never run. The target is 100x the largest run pair's compute and the curves
    start at the smallest, both read off the runs table."""
    design = SyntheticDesign(heldout_sizes=[], include_failures=False)
    frame = synthetic_runs(TRUTH, design, seed=2)
    largest, smallest = design.fitting_sizes[-1], design.fitting_sizes[0]
    frame = frame[~((frame["size"] == largest) & (frame["tokens"] > 2**22)) & ~((frame["size"] == smallest) & (frame["tokens"] < 2**20))]
    config = load_config(None, {"bootstrap_resamples": 8, "heldout_sizes": []})
    document = fit_laws(RunsTable.from_frame(frame), config)
    grid = frame[(frame["series"] == "grid") & frame["size"].isin(design.fitting_sizes)]
    assert (grid["tokens"] % grid["batch_tokens"] == 0).all()  # every milestone reached exactly: run compute = budget compute
    assert document["comparison"]["target_flops"] == pytest.approx(100 * grid["flops"].max(), rel=1e-9)
    assert document["recipe_curves"]["flops"][0] == pytest.approx(grid["flops"].min(), rel=1e-9)
    assert document["recipe_curves"]["flops"][-1] == pytest.approx(100 * grid["flops"].max(), rel=1e-9)
    per_token = grid.groupby("size")["flops"].max() / grid.groupby("size")["tokens"].max()
    assert 100 * per_token.max() * grid["tokens"].max() > 1.5 * document["comparison"]["target_flops"]  # the pairs never run
    assert document["compute_optimal"]["precise"]["fit_range_flops"][0] == pytest.approx(grid["flops"].min(), rel=1e-9)


def _margin_classes(margin, resamples, level):
    low, high = basic_interval(margin, resamples, level)
    return "better" if low > 0 else "worse" if high < 0 else "within"


def test_claim_3b_says_where_the_predicted_cell_stands_as_its_interval_does(results):
    """The margin's basic interval, recomputed, classifies the predicted cell: above 0 better than every other cell
    beyond the noise, containing 0 within the noise, below 0 worse; the summary's words and printed interval follow."""
    from analysis.report import render

    heldout = copy.deepcopy(results["heldout"])
    group = next(g for g in heldout["groups"] if g["kind"] == "hyperparameters")
    per_clip = results["laws"]["setup"]["context_tokens"]
    predicted = group["predicted_cell"]
    others = [c["loss"] for c in group["cells"] if not (np.isclose(c["batch_clips"] * per_clip, predicted["batch_tokens"])
                                                       and np.isclose(c["learning_rate"], predicted["learning_rate"]))]
    margin = min(others) / predicted["measured_loss"] - 1
    base = np.array(group["margin_resamples"], dtype=float)
    phrases = {"better": "better than every other cell beyond the noise", "within": "within the noise of the best measured neighbour",
               "worse": "worse than the best measured neighbour beyond the noise"}
    seen = set()
    # the basic interval [2 m - q_high, 2 m - q_low] moves by -shift: wholly below 0, wholly above, centred on 0
    for shift in (0.0, 2 * margin - base.min() + 0.02, 2 * margin - base.max() - 0.02, 2 * margin - np.median(base)):
        group["margin_resamples"] = list(base + shift)
        expected = _margin_classes(margin, group["margin_resamples"], LEVEL)
        claim = claims.heldout_cells(heldout, 0.01, LEVEL, per_clip)
        detail = claim["groups"][0]
        assert detail["comparison"] == expected and detail["within_noise_of_best"] == (expected == "within")
        assert claim["tests"][0]["verdict"] == {"better": verdicts.SUPPORTED, "within": verdicts.INCONCLUSIVE,
                                                "worse": verdicts.CONTRADICTED}[expected]
        line = claim_line(render("summary.md.j2", {**results["facts"], "claims": {**results["facts"]["claims"], "claim_3b": claim}}), "3b")
        assert f"so the predicted cell is {phrases[expected]}" in line
        assert percent_significant_interval(basic_interval(margin, group["margin_resamples"], LEVEL)) in line
        seen.add(expected)
    assert seen == {"better", "within", "worse"}


def test_a_small_positive_interval_end_does_not_read_zero():
    assert percent_significant(3.91e-5) == "0.00391%" and percent_significant(0.0485261) == "4.85%"
    assert percent_significant(-0.0311182) == "-3.11%" and percent_significant(0.009999) == "1.00%"
    assert percent_significant_interval([3.91e-5, 0.0485261]) == " [0.00391%, 4.85%]"
    assert percent(3.91e-5, 2) == "0.00%"  # what the fixed two decimals printed before


def _independent_place(grid, t, batch_tokens_optimum, per_clip):
    """Interior flags of the best measured cell among a held-out size's cells at budget ``t`` (neighbours both sides)."""
    cells = grid["cells"]
    losses = np.array([np.nan if row[t] is None else row[t] for row in grid["losses"]], dtype=float)
    unstable = [bool(row[t]) for row in grid["unstable"]]
    measured = [np.isfinite(v) or u for v, u in zip(losses, unstable)]
    best = cells[int(np.nanargmin(losses))]

    def interior(axis, other):
        line = [c[axis] for c, ok in zip(cells, measured) if ok and np.isclose(c[other], best[other])]
        return any(v < best[axis] * (1 - 1e-9) for v in line) and any(v > best[axis] * (1 + 1e-9) for v in line)

    lr, batch = interior("learning_rate", "batch_clips"), interior("batch_clips", "learning_rate")
    one_clip = not batch and batch_tokens_optimum <= per_clip * (1 + 1e-9)
    return {"learning_rate": lr, "batch": batch, "one_clip": one_clip, "on_edge": not lr or (not batch and not one_clip)}


def test_held_out_optima_on_the_edge_of_their_cells_are_reported(results):
    """Each held-out size's point: whether its best measured cell is interior along B and LR among that size's cells,
    recomputed from the cells; the counts in the facts and claim 4's sentence; the summary's table column."""
    laws, facts = results["laws"], results["facts"]
    per_clip, budgets = laws["setup"]["context_tokens"], laws["setup"]["budgets_tokens"]
    grids = {g["size"]: g for g in laws["grids"] if g["role"] == "heldout"}
    optima = {(h["size"], h["tokens"]): h for h in laws["heldout"]["hyperparameters"]}
    points = [p for p in facts["heldout"]["table"] if p["kind"] == "heldout size"]
    assert len(points) == len(laws["heldout"]["loss"]) > 0
    expected = []
    for point in points:
        place = _independent_place(grids[point["size"]], budgets.index(point["tokens"]),
                                   optima[(point["size"], point["tokens"])]["measured_batch_tokens"], per_clip)
        assert point["interior"] == {"batch": place["batch"], "learning_rate": place["learning_rate"]}
        assert point["on_edge"] == place["on_edge"] and point["at_one_clip_batch"] == place["one_clip"]
        expected.append(place)
    single = [p for p in facts["heldout"]["table"] if p["kind"] == "compute-optimal size"]
    edges = facts["heldout"]["edges"]
    assert edges["on_edge"] == sum(p["on_edge"] for p in expected) + len(single)
    assert edges["learning_rate"] == sum(not p["learning_rate"] for p in expected) and edges["single_cell"] == len(single)
    assert edges["batch"] == sum(not p["batch"] and not p["one_clip"] for p in expected)
    line = claim_line(results["summary"], "4")
    assert f"{edges['on_edge']} of {facts['heldout']['points']} points have their optimum on the edge of their held-out cells" in line
    assert "optimum along B / LR among its cells" in results["summary"]


def test_held_out_optima_at_one_clip_per_step_are_not_on_the_edge_along_b():
    """Constructed records: one clip per step along B is the smallest batch there is (as claim 1 counts it), an edge
    along LR or along B above one clip is an edge."""
    def loss(tokens):
        return {"size": "h", "tokens": tokens, "predicted_loss": 0.2, "measured_loss": 0.2, "relative_error": 0.0, "covered": True,
                "prediction_interval": [0.19, 0.21], "cells": 4, "measured_interior": False}

    places = [({"batch": False, "learning_rate": True}, 64.0), ({"batch": False, "learning_rate": False}, 64.0),
              ({"batch": False, "learning_rate": True}, 128.0), ({"batch": True, "learning_rate": True}, 128.0)]
    hyper = [{"size": "h", "tokens": float(i), "measured_interior": interior, "measured_batch_tokens": batch}
             for i, (interior, batch) in enumerate(places)]
    document = {"setup": {"context_tokens": 64, "fitting_sizes": []},
                "heldout": {"loss": [loss(float(i)) for i in range(4)], "hyperparameters": hyper}}
    record = measurements.heldout(document, None, 0.95)
    assert [p["on_edge"] for p in record["table"]] == [False, True, True, False]
    assert [p["at_one_clip_batch"] for p in record["table"]] == [True, True, False, False]
    assert record["edges"] == {"on_edge": 2, "learning_rate": 1, "batch": 1, "one_clip_batch": 2, "single_cell": 0}


def test_a_compute_optimal_run_at_a_held_out_size_stays_in_claim_4(results):
    facts, laws, heldout = results["facts"], results["laws"], results["heldout"]
    group = next(g for g in heldout["groups"] if g["kind"] == "compute_optimal")
    assert group["size"] not in facts["design"]["fitting_sizes"]
    assert facts["heldout"]["fitting_size_checks"] == []
    assert facts["heldout"]["points"] == len(laws["heldout"]["loss"]) + 1
    assert group["size"] in facts["heldout"]["sizes"] and results["scorecard"]["heldout"]["sizes"] == facts["heldout"]["sizes"]


def test_a_compute_optimal_run_at_a_fitting_size_is_a_separate_check_not_claim_4(results):
    """The compute-optimal run at a fitting size extrapolates the law in budget at a size it was fitted on: claim 4's
    statistics and the scorecard's held-out section are those of the held-out sizes alone, recomputed from the laws
    file; the run is checked apart, at its multiple of the size's largest fitted budget."""
    from analysis.report import render

    laws, heldout = results["laws"], copy.deepcopy(results["heldout"])
    fitting = DESIGN.fitting_sizes[-1]
    group = next(g for g in heldout["groups"] if g["kind"] == "compute_optimal")
    group["size"] = fitting
    facts = _facts_of(results, laws, heldout)
    records = laws["heldout"]["loss"]
    errors = np.array([r["relative_error"] for r in records])
    resampled = np.array([r["relative_error_resamples"] for r in records], dtype=float).mean(axis=0)
    q_low, q_high = np.percentile(resampled, [50 - 50 * LEVEL, 50 + 50 * LEVEL])
    claim = facts["claims"]["claim_4"]
    assert claim["mean_relative_error"] == pytest.approx(errors.mean())
    assert claim["mean_relative_error_interval"] == pytest.approx([2 * errors.mean() - q_high, 2 * errors.mean() - q_low], rel=1e-5)
    covered = [r["covered"] for r in records if r["covered"] is not None]
    z = stats.norm.ppf(0.5 + LEVEL / 2)
    expected = [np.sqrt(2 / np.pi) * (r["prediction_interval"][1] - r["prediction_interval"][0]) / (2 * z) / r["predicted_loss"]
                for r in records if r["prediction_interval"]]
    record = facts["heldout"]
    assert record["points"] == len(records) and record["misses"] == sum(not c for c in covered)
    assert record["expected_mean_abs_error"] == pytest.approx(np.mean(expected))
    assert record["mean_abs_error"] == pytest.approx(np.abs(errors).mean())
    card = scorecard(facts)["heldout"]
    assert card["sizes"] == sorted({r["size"] for r in records}) and fitting not in card["sizes"]
    assert card["points"] == len(covered) and card["covered"] == sum(covered)
    assert card["mean_abs_error"] == pytest.approx(np.abs(errors).mean())
    (check,) = record["fitting_size_checks"]
    largest = max(o["tokens"] for o in laws["optima"] if o["size"] == fitting)
    assert check["relative_error"] == group["relative_error"] and check["budget_multiple"] == pytest.approx(group["tokens"] / largest)
    assert check["relative_error_interval"] == pytest.approx(basic_interval(group["relative_error"], group["relative_error_resamples"], LEVEL))
    text = render("summary.md.j2", facts)
    assert f"A separate check, not of a held-out size: the compute-optimal run of {fitting}" in text
    assert f"{group['tokens'] / largest:.3g}x its largest fitted budget" in claim_line(text, "4")


def test_stage_timings_read_only_the_named_benchmark_files_in_their_order(tmp_path):
    """Files other targets or earlier runs left in the folder do not count when the files are named; a named file
    that is missing, or lies outside the folder, is noted, not read."""
    root = tmp_path / "benchmarks"
    seconds = {"prepare_data": [4.0], "train/grid/tiny-9k/b1": [10.0], "train/grid/tiny-9k/b2": [30.0],
               "train/grid/tiny-18k/b1": [20.0], "fit_laws": [2.5], "figures": [7.0], "samples": [9.0]}
    for name, values in seconds.items():
        path = root / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("s\th:m:s\tmax_rss\n" + "".join(f"{s}\t0:00:{int(s):02d}\t{100 + 10 * s}\n" for s in values))
    (tmp_path / "elsewhere.tsv").write_text("s\th:m:s\tmax_rss\n1.0\t0:00:01\t5\n")
    named = ["prepare_data", "train/grid/tiny-9k/b1", "train/grid/tiny-9k/b2", "train/grid/tiny-18k/b1", "fit_laws",
             "caption_match/largest"]
    notes: list[str] = []
    rows = measurements.stage_timings(str(root), notes, [str(root / f"{n}.tsv") for n in named] + [str(tmp_path / "elsewhere.tsv")])
    assert [r["stage"] for r in rows] == ["prepare_data", "train/grid/*", "fit_laws"]
    grid = rows[1]
    assert grid["jobs"] == 3 and grid["median_seconds"] == 20.0 and grid["total_seconds"] == 60.0 and grid["max_rss_mb"] == 400.0
    assert len(notes) == 2 and "caption_match/largest.tsv" in notes[0] and "elsewhere.tsv" in notes[1]
    everything = measurements.stage_timings(str(root), [])
    assert {r["stage"] for r in everything} == {"prepare_data", "train/grid/*", "fit_laws", "figures", "samples"}
