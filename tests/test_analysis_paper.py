"""The paper's published laws as a regression target; the findings; the planner with --paper."""

import json
import re

import numpy as np
import pytest

from dit.provenance import provenance

from analysis.blas import limit_openblas_threads
from analysis import open_questions, paper
from analysis.allocation import AllocationSolver, FlopModel, WidthRule, inference_flops, loss_law_callable
from analysis.config import PAPER_INFERENCE
from analysis.facts import SCHEMA as FACTS_SCHEMA
from analysis.facts import published_numbers
from analysis.plan import main as plan_main
from analysis.report import main as report_main

limit_openblas_threads()  # as the fitting commands do: one OpenBLAS thread

# Units as REFERENCE.md: N and T in billions, B in tokens, C in FLOPs.

# The paper's printed laws, typed here from the paper (analysis/paper.py transcribes the same numbers):
# L = 0.0373 T^-0.2917 + 0.0082 N^-0.3188 + 0.4856; B_opt = 2.1797e4 T^0.8080 N^0.1906 (tokens);
# LR_opt = 2e-4 T^-0.0453 N^-0.1619; N_opt = 0.8705 C^0.4294; fit MSE of L 2.35e-7.
PRINTED_LOSS = (0.0373, 0.2917, 0.0082, 0.3188, 0.4856)
PRINTED_BATCH = (2.1797e4, 0.8080, 0.1906)
PRINTED_RATE = (2e-4, -0.0453, -0.1619)
PRINTED_FIT_MSE = 2.35e-7


def printed_loss(n, t):
    a, alpha, b, beta, floor = PRINTED_LOSS
    return a * t**-alpha + b * n**-beta + floor


def test_transcribed_laws_reproduce_the_papers_printed_numbers():
    """The one copying-error check: the laws as analysis.paper transcribes them give the values the paper
    prints beside them (loss checks, heatmap predictions and their cells, N_opt and the 40% figure)."""
    for n, t, published in [(1.07, 10, 0.51266), (1.07, 4, 0.5185), (0.72, 140, 0.50352)]:
        assert float(paper.loss(n, t)) == pytest.approx(published, abs=1e-4)
    assert float(paper.precise_optimal_parameters(1e22)) == pytest.approx(2.43e9, rel=0.01)
    assert float(paper.precise_optimal_parameters(5.85e20)) == pytest.approx(0.72e9, rel=0.01)
    for t, (batch, rate) in {4.0: (6.8e4, 1.86e-4), 10.0: (1.42e5, 1.78e-4)}.items():
        assert float(paper.optimal_batch_tokens(1.07, t)) == pytest.approx(batch, rel=0.01)
        assert float(paper.optimal_learning_rate(1.07, t)) == pytest.approx(rate, rel=0.01)
        # the cell the paper marks predicted is the heatmap's measured best
        values = np.array(paper.HEATMAPS[t])
        i, j = np.unravel_index(np.argmin(values), values.shape)
        assert (paper.HEATMAP_BATCH_TOKENS[i], paper.HEATMAP_LEARNING_RATES[j]) == paper.HEATMAP_PREDICTIONS[t][2]
    assert 1 - paper.OPTIMAL_SIZE_AT_TARGET / paper.CONVENTIONAL_SIZE_AT_TARGET == pytest.approx(paper.MODEL_SIZE_REDUCTION, abs=5e-4)
    assert [paper.LOSS_OPTIMAL[k] for k in ("a", "alpha", "b", "beta", "L_inf")] == list(PRINTED_LOSS)
    assert [paper.BATCH_SIZE[k] for k in "abc"] == list(PRINTED_BATCH)
    assert [paper.LEARNING_RATE[k] for k in "abc"] == list(PRINTED_RATE)


def test_minimising_the_published_law_under_6n_matches_the_closed_form():
    """Open question 1's starting point: 0.1031 C^0.478, 3.35e9 at 1e22."""
    flops = np.geomspace(1e18, 1e23, 7)
    n = open_questions.derived_optimal_parameters(flops, "6n")
    alpha, beta = paper.LOSS_OPTIMAL["alpha"], paper.LOSS_OPTIMAL["beta"]
    slope = np.polyfit(np.log(flops), np.log(n), 1)[0]
    assert slope == pytest.approx(alpha / (alpha + beta), abs=1e-4)
    assert open_questions.derived_optimal_parameters([1e22], "6n")[0] == pytest.approx(3.35e9, rel=0.005)
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


def test_open_questions_answer_the_three_questions():
    """Each answer against the same quantity computed here from the printed laws."""
    a, alpha, b, beta, _ = PRINTED_LOSS
    one = open_questions.question_one()
    closed = one["readings"][1]
    assert closed["a"] == pytest.approx(alpha / (alpha + beta), abs=1e-9)
    k = 1e9 * (beta * b / (alpha * a)) ** (1 / (alpha + beta)) * (6e18) ** (-alpha / (alpha + beta))
    assert closed["N_opt_target"] == pytest.approx(k * 1e22 ** (alpha / (alpha + beta)), rel=1e-9)
    assert one["required"]["beta_if_alpha_fixed"] == pytest.approx(alpha * (1 - 0.4294) / 0.4294, rel=1e-9)
    assert not one["any_reading_matches"]  # none within 5% of 2.43e9 with the exponent within 0.005 of 0.4294
    two = open_questions.question_two()
    assert two["rows"][0]["reduction"] == pytest.approx(1 - 2.43 / 4.04, rel=1e-9)
    assert all(r["reduction"] < paper.INFERENCE_COST_REDUCTION for r in two["rows"])
    assert two["required_small"] == pytest.approx(4.04e9 * (1 - 0.401), rel=1e-9)
    three = open_questions.question_three(None)
    assert three["gap_relative_to_empirical"] == pytest.approx(abs(0.4294 - 0.4146) / 0.4146, rel=1e-9)
    smooth = three["synthetic"][0]
    assert smooth["case"].startswith("smooth family") and smooth["gap"] < 0.02


def test_findings_report_writes_the_numbers_of_the_published_laws(tmp_path):
    """The markdown's numbers against the same quantities computed here from the printed laws."""
    facts = {"schema": FACTS_SCHEMA, "open_questions": open_questions.open_questions(), "paper": published_numbers(), "confidence_level": 0.95,
             "provenance": provenance({}), "sources": {"paths": {"laws": "results/laws.json"}}}
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    out = tmp_path / "paper" / "FINDINGS.md"
    assert report_main(["--facts", str(tmp_path / "facts.json"), "--findings", str(out)]) == 0
    text = out.read_text()
    for heading in ("## 1. How does N_opt = 0.8705 C^0.4294", "## 2. Which inference-cost definition gives 40.1%?", "## 3. The exponent gaps"):
        assert heading in text
    alpha, beta = PRINTED_LOSS[1], PRINTED_LOSS[3]
    assert f"{alpha / (alpha + beta):.4g}" in text  # N_opt exponent of the printed L under C = 6NT
    assert f"{100 * (1 - 2.43 / 4.04):.2f}%" in text  # the model-size reduction of the paper's N_opt pair
    assert f"{100 * (0.4294 - 0.4146) / 0.4146:.2f}%" in text  # gap of the precise and empirical exponents
    assert f"| L(N=1.07, T=10) | 0.51266 | {printed_loss(1.07, 10):.5f} |" in text
    assert "nan" not in text.lower() and not re.search(r"\bNone\b(?! that)", text)  # no missing value printed


def test_planner_with_the_published_laws_derives_each_number_from_them(capsys):
    """At 1e22 FLOPs: N from the published N_opt law; T from the budget C = C_token(N) T with the paper's
    C_token = (3/4) N (7 + 1280/d), d from the paper-family sizes (log d fitted linearly in log N here);
    B, LR and L from the printed laws at (N, T); the prediction interval +-1.96 x the fit's RMSE."""
    from dit.sizes import sizes_in_family

    assert plan_main(["--flops", "1e22", "--paper", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    r = plan["recommended"]
    n = 0.8705 * 1e22**0.4294
    assert r["parameters"] == pytest.approx(n, rel=1e-9) and n == pytest.approx(2.43e9, rel=0.01)
    family = sizes_in_family("paper")
    slope, intercept = np.polyfit([np.log(s.non_embedding_parameters) for s in family], [np.log(s.width) for s in family], 1)
    width = np.exp(intercept + slope * np.log(n))  # N lies beyond the family's largest size
    tokens = 1e22 / (0.75 * n * (7 + 1280 / width))
    assert r["tokens"] == pytest.approx(tokens, rel=1e-9)
    n_b, t_b = n / 1e9, tokens / 1e9
    a, b, c = PRINTED_BATCH
    assert r["batch_tokens"] == pytest.approx(a * t_b**b * n_b**c, rel=1e-9)
    assert r["batch_clips"] == pytest.approx(r["batch_tokens"] / 1280, rel=1e-12)
    a, b, c = PRINTED_RATE
    assert r["learning_rate"] == pytest.approx(a * t_b**b * n_b**c, rel=1e-9)
    assert r["steps"] == pytest.approx(tokens / r["batch_tokens"], rel=1e-9)
    loss = printed_loss(n_b, t_b)
    assert r["predicted_loss"]["value"] == pytest.approx(loss, rel=1e-9)
    half = 1.959964 * np.sqrt(PRINTED_FIT_MSE) / PRINTED_LOSS[4] * loss
    assert r["predicted_loss"]["prediction_interval"] == pytest.approx([loss - half, loss + half], rel=1e-6)
    assert plan["conventional"]["parameters"] == 4.04e9  # the only published conventional point
    assert plan["reductions"]["model_size"] == pytest.approx(1 - n / 4.04e9, rel=1e-9)
    assert any("outside the sizes behind the laws" in w for w in plan["warnings"])  # 2.43B > the largest 1.07B
    # the published N_opt law and the published L(N, T) disagree at 1e22: the recommended size has the higher loss
    conventional_loss = printed_loss(4.04, 1e22 / (0.75 * 4.04e9 * (7 + 1280 / np.exp(intercept + slope * np.log(4.04e9)))) / 1e9)
    assert loss > conventional_loss
    warning = next(w for w in plan["warnings"] if "disagree" in w)
    assert f"{loss:.6f}" in warning and f"{conventional_loss:.6f}" in warning


def test_planner_text_and_caps(capsys):
    assert plan_main(["--flops", "1e22", "--paper", "--max-parameters", "1e9"]) == 0
    text = capsys.readouterr().out
    assert "model size N        1e+09" in text and "binding" in text and "Conventional alternative" in text
    assert plan_main(["--flops", "1e22", "--paper", "--max-parameters", "1e9", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    n_opt = 0.8705 * 1e22**0.4294
    assert plan["constraints"]["binding"] and plan["recommended"]["parameters"] == 1e9
    assert plan["recommended"]["unconstrained_parameters"] == pytest.approx(n_opt, rel=1e-9)
    # the laws' disagreement is about the N_opt law's own size, not the capped one
    warning = next(w for w in plan["warnings"] if "disagree" in w)
    assert f"recommends {n_opt:.4g} parameters" in warning and "recommends 1e+09" not in warning
    assert plan_main(["--flops", "1e21", "--paper", "--max-inference-flops", "1e14", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["recommended"]["inference_flops_per_video"] <= 1e14 * (1 + 1e-9)
    assert plan["conventional"]["status"] == "not published"
    assert plan_main(["--flops", "-1", "--paper"]) == 2


@pytest.mark.parametrize("arguments, option", [
    (["--flops", "inf"], "--flops"), (["--flops", "nan"], "--flops"),
    (["--flops", "1e22", "--max-inference-flops", "nan"], "--max-inference-flops"),
    (["--flops", "1e22", "--max-inference-flops", "0"], "--max-inference-flops"),
    (["--flops", "1e22", "--max-parameters", "inf"], "--max-parameters"),
])
def test_planner_refuses_budgets_and_caps_that_are_not_positive_finite_numbers(capsys, arguments, option):
    assert plan_main([*arguments, "--paper", "--json"]) == 2
    captured = capsys.readouterr()
    assert f"{option} must be a positive finite number" in captured.err and captured.out == ""
