"""The paper's published laws as a regression target; the findings; the planner with --paper."""

import analysis  # noqa: F401
import json

import numpy as np
import pytest

from analysis import findings, paper
from analysis.allocation import AllocationSolver, FlopModel, WidthRule, inference_flops, loss_law_callable
from analysis.config import PAPER_INFERENCE
from analysis.plan import main as plan_main

# Units as REFERENCE.md: N and T in billions, B in tokens, C in FLOPs.


@pytest.mark.parametrize("n, t, published", [(1.07, 10, 0.51266), (1.07, 4, 0.5185), (0.72, 140, 0.50352)])
def test_loss_law_reproduces_published_values(n, t, published):
    assert float(paper.loss(n, t)) == pytest.approx(published, abs=1e-4)


@pytest.mark.parametrize("flops, published", [(1e22, 2.43e9), (5.85e20, 0.72e9)])
def test_precise_compute_optimal_law(flops, published):
    assert float(paper.precise_optimal_parameters(flops)) == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize("t", [4.0, 10.0])
def test_hyperparameter_laws_land_in_the_published_heatmap_cells(t):
    batch, rate, (cell_batch, cell_rate) = paper.HEATMAP_PREDICTIONS[t]
    predicted_batch = float(paper.optimal_batch_tokens(1.07, t))
    predicted_rate = float(paper.optimal_learning_rate(1.07, t))
    assert predicted_batch == pytest.approx(batch, rel=0.01)
    assert predicted_rate == pytest.approx(rate, rel=0.01)
    assert paper.nearest_cell(predicted_batch, paper.HEATMAP_BATCH_TOKENS) == cell_batch
    assert paper.nearest_cell(predicted_rate, paper.HEATMAP_LEARNING_RATES) == cell_rate
    # and the published measured best cell of that heatmap is the predicted one
    values = np.array(paper.HEATMAPS[t])
    i, j = np.unravel_index(np.argmin(values), values.shape)
    assert (paper.HEATMAP_BATCH_TOKENS[i], paper.HEATMAP_LEARNING_RATES[j]) == (cell_batch, cell_rate)


def test_model_size_reduction():
    assert 1 - paper.OPTIMAL_SIZE_AT_TARGET / paper.CONVENTIONAL_SIZE_AT_TARGET == pytest.approx(0.399, abs=5e-4)


def test_minimising_the_published_law_under_6n_matches_the_closed_form():
    """Open question 1's starting point: 0.1031 C^0.478, 3.35e9 at 1e22."""
    flops = np.geomspace(1e18, 1e23, 7)
    n = findings.derived_optimal_parameters(flops, "6n")
    alpha, beta = paper.LOSS_OPTIMAL["alpha"], paper.LOSS_OPTIMAL["beta"]
    slope = np.polyfit(np.log(flops), np.log(n), 1)[0]
    assert slope == pytest.approx(alpha / (alpha + beta), abs=1e-4)
    assert findings.derived_optimal_parameters([1e22], "6n")[0] == pytest.approx(3.35e9, rel=0.005)
    assert np.exp(np.polyfit(np.log(flops), np.log(n), 1)[1]) == pytest.approx(0.1031, rel=0.01)


def test_allocation_solver_respects_a_size_cap():
    model = FlopModel("6n", 1280, WidthRule("registry", "paper"))
    solver = AllocationSolver(model, (1e6, 1e13))
    params = np.array([[paper.LOSS_OPTIMAL[k] for k in ("a", "alpha", "b", "beta", "L_inf")]])
    n, _, interior = solver.optimal(loss_law_callable(params), np.array([[1e22]]), max_parameters=1e9)
    assert n[0, 0] == pytest.approx(1e9, rel=1e-6) and interior[0, 0]


def test_inference_cost_includes_attention_and_reuses_dit_flops():
    rule = WidthRule("registry", "paper")
    small, large = inference_flops(np.array([2.43e9, 4.04e9]), rule, PAPER_INFERENCE)
    reduction = 1 - small / large
    assert 0.38 < reduction < 1 - 2.43 / 4.04  # attention makes the smaller (narrower) model relatively dearer


def test_findings_answer_the_three_questions():
    one = findings.question_one()
    assert one["readings"][1]["a"] == pytest.approx(0.4778, abs=1e-4)
    assert one["readings"][1]["N_opt_1e22"] == pytest.approx(3.35e9, rel=0.005)
    assert one["required"]["beta_if_alpha_fixed"] == pytest.approx(0.3876, abs=1e-3)
    two = findings.question_two()
    assert two["rows"][0]["reduction"] == pytest.approx(0.3985, abs=1e-4)
    assert all(r["reduction"] < paper.INFERENCE_COST_REDUCTION for r in two["rows"])
    assert two["required_small"] == pytest.approx(2.42e9, rel=0.001)
    three = findings.question_three(None)
    assert three["gap_relative_to_empirical"] == pytest.approx(0.0357, abs=5e-4)
    smooth = three["synthetic"]["smooth family: 5 sizes 2x apart, widths on one power law"]
    assert smooth["gap"] < 0.02


def test_findings_command_writes_the_markdown(tmp_path):
    out = tmp_path / "paper" / "FINDINGS.md"
    assert findings.main(["--out", str(out)]) == 0
    text = out.read_text()
    for heading in ("## 1. How does N_opt = 0.8705 C^0.4294", "## 2. Which inference-cost definition gives 40.1%?", "## 3. The exponent gaps"):
        assert heading in text
    assert "0.4778" in text and "39.85%" in text and "3.57%" in text
    assert "| L(N=1.07, T=10) | 0.51266 | 0.51268 |" in text


def test_planner_paper_json_at_1e22(capsys):
    assert plan_main(["--flops", "1e22", "--paper", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    r = plan["recommended"]
    assert r["parameters"] == pytest.approx(2.43e9, rel=0.01)
    assert r["tokens"] == pytest.approx(1e22 / r["parameters"] / (0.75 * (7 + 1280 / 1800)), rel=0.01)
    assert r["batch_tokens"] == pytest.approx(float(paper.optimal_batch_tokens(r["parameters_billions"], r["tokens"] / 1e9)))
    assert r["batch_clips"] == pytest.approx(r["batch_tokens"] / 1280)
    assert r["learning_rate"] == pytest.approx(1.29e-4, rel=0.01)
    low, high = r["predicted_loss"]["prediction_interval"]
    assert low < r["predicted_loss"]["value"] < high
    assert plan["conventional"]["parameters"] == pytest.approx(4.04e9)
    assert plan["reductions"]["model_size"] == pytest.approx(1 - r["parameters"] / 4.04e9)
    assert plan["warnings"]  # extrapolation beyond the paper's sizes and budgets is said


def test_planner_text_and_caps(capsys):
    assert plan_main(["--flops", "1e22", "--paper", "--max-parameters", "1e9"]) == 0
    text = capsys.readouterr().out
    assert "model size N        1e+09" in text and "binding" in text and "Conventional alternative" in text
    assert plan_main(["--flops", "1e21", "--paper", "--max-inference-flops", "1e14", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["recommended"]["inference_flops_per_video"] <= 1e14 * (1 + 1e-9)
    assert plan["conventional"]["status"] == "not published"
    assert plan_main(["--flops", "-1", "--paper"]) == 2
