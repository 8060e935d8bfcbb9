"""The paper's open questions, computed from its published coefficients (``analysis.paper``) for ``FINDINGS.md``.

Nothing is tuned to match: each reading of an unstated detail is computed and its distance to the
published number reported.

1. How ``N_opt = k C^a`` (the published precise law) follows from the published ``L(N, T)``:
   continuous minimisation under ``C = 6NT`` (closed form) and under the paper's ``C_token``
   (registry widths), unit readings, minimisation over the discrete set of the paper's sizes over
   several budget ranges, and what exponents the published number would require.
2. Which inference-cost definition gives the published inference-cost reduction: parameters alone,
   FLOPs per generated video with and without attention, over sampling steps, text lengths and
   guidance, per-token training cost.
3. The exponent gaps between the empirical and the precise N_opt laws, and how large such a gap is
   on a synthetic grid drawn from a known law, where there is no true gap.

Plus the regression checks: the published laws give the numbers the paper prints beside them.
"""

from __future__ import annotations

import numpy as np

from dit.flops import paper_flops_per_token
from dit.sizes import get_size, width_for_parameters

from analysis import paper
from analysis.allocation import (
    BILLION,
    AllocationSolver,
    FlopModel,
    SizeCurve,
    WidthRule,
    empirical_flops_grid,
    empirical_optimal_sizes,
    inference_flops,
    loss_law_callable,
    power_law_through,
)
from analysis.config import InferenceSetup
from analysis.synthetic_runs import SyntheticDesign, SyntheticTruth

PUBLISHED_LOSS = np.array([[paper.LOSS_OPTIMAL[k] for k in ("a", "alpha", "b", "beta", "L_inf")]])
#: A reading "matches" the published N_opt law when N_opt(1e22) is within this fraction and the exponent within
#: ``EXPONENT_MATCH`` of the published ones.
SIZE_MATCH = 0.05
EXPONENT_MATCH = 0.005
#: An inference-cost definition "gives" the published reduction when it lands within this many percentage points.
REDUCTION_MATCH = 0.0005


def derived_optimal_parameters(flops, convention: str = "6n", width_family: str = "paper") -> np.ndarray:
    """N_opt (raw) minimising the published L(N, T) subject to ``C = T * C_token(N)``."""
    model = FlopModel(convention, paper.CONTEXT_TOKENS, WidthRule("registry", width_family))
    solver = AllocationSolver(model, (1e5, 1e14))
    flops = np.atleast_1d(np.asarray(flops, dtype=float))
    n, _, _ = solver.optimal(loss_law_callable(PUBLISHED_LOSS), flops[None, :])
    return n[0]


def _power_law(flops, n) -> tuple[float, float]:
    k, a = power_law_through(np.asarray(flops), np.asarray(n)[None, :])
    return float(k[0]), float(a[0])


def question_one() -> dict:
    """How the published N_opt law relates to the published L(N, T) (module docstring)."""
    readings = _continuous_readings()
    derived = [r["N_opt_target"] for r in readings if r["reading"].startswith("continuous minimum")]
    discrete = _discrete_readings()
    published_a = paper.COMPUTE_OPTIMAL_PRECISE["a"]
    alpha, beta = paper.LOSS_OPTIMAL["alpha"], paper.LOSS_OPTIMAL["beta"]
    return {
        "readings": readings,
        "derived_exponent": alpha / (alpha + beta),
        "derived_range": [min(derived), max(derived)],  # the continuous minima with the law's units as published
        "any_reading_matches": any(abs(r["error_target"]) < SIZE_MATCH and abs(r["exponent_error"] or 1) < EXPONENT_MATCH
                                   for r in readings[1:]),
        "match_tolerances": {"size": SIZE_MATCH, "exponent": EXPONENT_MATCH},
        "discrete": discrete,
        "closest_discrete": min(discrete, key=lambda r: abs(r["a"] - published_a)
                                + abs(np.log(r["N_opt_target"] / paper.OPTIMAL_SIZE_AT_TARGET))),
        "required": {
            "beta_if_alpha_fixed": alpha * (1 - published_a) / published_a,
            "alpha_if_beta_fixed": published_a * beta / (1 - published_a),
            "q_if_C_proportional_to_N_q_T": (alpha / published_a - beta) / alpha,
        },
        **_flatness(readings[1]["N_opt_target"]),
        "heldout_check": _heldout_budget_check(),
    }


def _continuous_readings() -> list[dict]:
    """N_opt at the target and at the held-out budget for each reading of the published L(N, T); the first row is
    the published precise law itself."""
    alpha, beta = paper.LOSS_OPTIMAL["alpha"], paper.LOSS_OPTIMAL["beta"]
    a, b = paper.LOSS_OPTIMAL["a"], paper.LOSS_OPTIMAL["b"]
    target, heldout = paper.TARGET_FLOPS, paper.HELDOUT_BUDGET_FLOPS
    readings = []

    def add(name, n_target, n_heldout, k, exponent, note):
        readings.append({
            "reading": name, "N_opt_target": float(n_target), "N_opt_heldout": float(n_heldout), "k": k, "a": exponent,
            "error_target": float(n_target / paper.OPTIMAL_SIZE_AT_TARGET - 1),
            "error_heldout": float(n_heldout / paper.HELDOUT_OPTIMAL_SIZE - 1),
            "exponent_error": float(exponent - paper.COMPUTE_OPTIMAL_PRECISE["a"]), "note": note,
        })

    add("published precise law", paper.precise_optimal_parameters(target), paper.precise_optimal_parameters(heldout),
        paper.COMPUTE_OPTIMAL_PRECISE["k"], paper.COMPUTE_OPTIMAL_PRECISE["a"], "the target")
    exponent = alpha / (alpha + beta)
    k_closed = BILLION * (beta * b / (alpha * a)) ** (1 / (alpha + beta)) * (6 * BILLION * BILLION) ** (-exponent)
    add("continuous minimum, C = 6NT (closed form)", k_closed * target**exponent, k_closed * heldout**exponent, k_closed, exponent,
        "a = alpha/(alpha+beta), k = 1e9 (beta b/(alpha a))^(1/(alpha+beta)) (6e18)^-a")
    flops_range = np.geomspace(1e18, 1e23, 40)
    k, e = _power_law(flops_range, derived_optimal_parameters(flops_range, "paper"))
    add("continuous minimum, paper C_token, registry widths", derived_optimal_parameters([target], "paper")[0],
        derived_optimal_parameters([heldout], "paper")[0], k, e, "exponent and k: least squares over C = 1e18..1e23")
    clips = paper.CONTEXT_TOKENS ** (-exponent)
    add("C = 6NT, law's T read as billions of clips", k_closed * clips * target**exponent, k_closed * clips * heldout**exponent,
        k_closed * clips, exponent, "changing units moves k only: N_opt scales by n_ctx^-a")
    raw = (BILLION ** beta) ** (1 / (alpha + beta))
    add("C = 6NT, law's N read as raw parameters", k_closed * raw * target**exponent, k_closed * raw * heldout**exponent,
        k_closed * raw, exponent, "b N^-beta with N in parameters: N_opt scales by (1e9^beta)^(1/(alpha+beta))")
    return readings


def _discrete_readings() -> list[dict]:
    """The N of lowest predicted loss among the paper's sizes at each C (an isoFLOP reading of the law), fitted over budget ranges."""
    rows = []
    for sizes_label, sizes in (("4 fitting sizes", paper.FITTING_SIZES), ("6 paper sizes", paper.FITTING_SIZES + paper.HELDOUT_SIZES)):
        for convention in ("6n", "paper"):
            model = paper.flop_model(convention)
            for low, high in ((1e17, 1e20), (1e18, 1e21), (1e17, 1e22), (2e17, 2e19)):
                flops = np.geomspace(low, high, 200)
                curves = [SizeCurve(f"{size}B", size * BILLION, flops,
                                    paper.loss(size, flops / model.flops_per_token(size * BILLION) / BILLION)[None, :]) for size in sizes]
                for method in ("discrete", "parabola"):
                    n_opt, bracketed = empirical_optimal_sizes(curves, flops, method)
                    k, e = power_law_through(flops, n_opt, None if method == "discrete" else bracketed)
                    rows.append({"sizes": sizes_label, "convention": convention, "range": [low, high], "method": method,
                                 "k": float(k[0]), "a": float(e[0]), "N_opt_target": float(k[0] * paper.TARGET_FLOPS ** e[0]),
                                 "points": int(np.sum(bracketed[0])) if method == "parabola" else flops.size})
    return rows


def _flatness(n_continuous: float) -> dict:
    """The published loss along the target budget (C = 6NT) at the published, the continuous and the conventional size,
    and the range of N within the law's fit RMSE of the minimum."""
    sizes = [paper.OPTIMAL_SIZE_AT_TARGET, n_continuous, paper.CONVENTIONAL_SIZE_AT_TARGET]
    flatness = [{"N": n, "loss_6n": float(paper.loss(n / BILLION, paper.TARGET_FLOPS / (6 * n) / BILLION))} for n in sizes]
    grid = np.geomspace(1e9, 1e10, 2001)
    losses = paper.loss(grid / BILLION, paper.TARGET_FLOPS / (6 * grid) / BILLION)
    rmse = float(np.sqrt(paper.FIT_MSE["optimal_hyperparameters"]))
    within = grid[losses <= losses.min() + rmse]
    return {"flatness": flatness, "flat_band": [float(within.min()), float(within.max())], "fit_rmse": rmse}


def _heldout_budget_check() -> dict:
    """What C / (N T) the held-out check (its size at its budget and tokens) implies, against the FLOP conventions."""
    n, tokens, flops = paper.HELDOUT_OPTIMAL_SIZE, paper.HELDOUT_TOKENS, paper.HELDOUT_BUDGET_FLOPS
    implied = flops / (n * tokens)
    width = width_for_parameters(n, "paper")
    return {
        "implied_flops_per_token_over_N": float(implied),
        "paper_form_with_registry_width": float(0.75 * (7 + paper.CONTEXT_TOKENS / width)),
        "registry_width": float(width),
        "width_that_matches": float(paper.CONTEXT_TOKENS / (implied / 0.75 - 7)),
        "context_that_matches": float((implied / 0.75 - 7) * width),
        "tokens_6n": float(flops / (6 * n)),
        "tokens_paper_form": float(flops / (0.75 * n * (7 + paper.CONTEXT_TOKENS / width))),
    }


def question_two() -> dict:
    """Which definition of inference cost gives the published reduction (module docstring)."""
    n_figure, n_large = paper.OPTIMAL_SIZE_AT_TARGET, paper.CONVENTIONAL_SIZE_AT_TARGET
    n_law = float(paper.precise_optimal_parameters(paper.TARGET_FLOPS))
    rule, rows = WidthRule("registry", "paper"), []

    def add(definition, small_label, small, large, note=""):
        value = float(1 - small / large)
        rows.append({"definition": definition, "small": small_label, "reduction": value,
                     "distance": float(value - paper.INFERENCE_COST_REDUCTION), "note": note})

    add("parameters alone", "figure", n_figure, n_large)
    add("parameters alone", "law", n_law, n_large)
    for label, small in (("figure", n_figure), ("law", n_law)):
        for steps, text_tokens, guidance in ((1, 0, False), (50, 0, False), (50, 120, False), (50, 120, True), (50, 300, False), (1000, 120, False)):
            setup = InferenceSetup(steps, paper.CONTEXT_TOKENS, text_tokens, 16, 4096, guidance)
            add(f"FLOPs per video, attention included ({steps} steps, {text_tokens} text tokens, guidance {'on' if guidance else 'off'})",
                label, float(inference_flops(small, rule, setup)), float(inference_flops(n_large, rule, setup)))
        model = paper.flop_model("paper")
        add("training FLOPs per token, paper C_token", label, float(model.flops_per_token(small)), float(model.flops_per_token(n_large)),
            "equals forward FLOPs with self-attention, no text path")
        add("FLOPs per video without attention", label, small, n_large, "2 x 14 d^2 per layer per token: proportional to N")
    widths = {"small": width_for_parameters(n_figure, "paper"), "large": width_for_parameters(n_large, "paper")}
    return {
        "rows": rows, "law_size": n_law, "closest": min(rows, key=lambda r: abs(r["distance"])),
        "any_definition_matches": any(abs(r["distance"]) < REDUCTION_MATCH for r in rows), "match_tolerance": REDUCTION_MATCH,
        "required_small": float(n_large * (1 - paper.INFERENCE_COST_REDUCTION)),
        "required_large": float(n_figure / (1 - paper.INFERENCE_COST_REDUCTION)),
        "widths": widths, "attention_share": {k: float(paper.CONTEXT_TOKENS / (7 * w)) for k, w in widths.items()},
    }


def synthetic_isoflop_gap() -> dict:
    """Exponent of the isoFLOP (empirical) law vs the law-derived one on noise-free synthetic data (no true gap).

    Three cases: a smooth family (widths on one power law, 2x apart), the default design's registered
    tiny shapes with compute counted by the same smooth FLOP model as the law, and the same shapes
    with each size's own FLOPs (irregular width/depth ratios).
    """
    truth, design = SyntheticTruth(), SyntheticDesign()
    budgets = np.asarray(design.milestones_tokens, dtype=float)
    registered = [get_size(n) for n in design.fitting_sizes]
    model = FlopModel("paper", design.tokens_per_clip,
                      WidthRule.fit([s.non_embedding_parameters for s in registered], [s.width for s in registered]))
    smooth = [registered[0].non_embedding_parameters * 2.0**k for k in range(len(registered))]
    cases = {
        "smooth family: 5 sizes 2x apart, widths on one power law": [(n, float(model.flops_per_token(n))) for n in smooth],
        "default design's registered tiny shapes, C from the same FLOP model as the law": [
            (s.non_embedding_parameters, float(model.flops_per_token(s.non_embedding_parameters))) for s in registered],
        "default design's registered tiny shapes, C from each size's own width": [
            (s.non_embedding_parameters, paper_flops_per_token(s.non_embedding_parameters, design.tokens_per_clip, s.width))
            for s in registered],
    }
    solver = AllocationSolver(model, (1e2, 1e12))
    params = np.array([[truth.loss[k] for k in ("a", "alpha", "b", "beta", "L_inf")]])
    results = []
    for label, sizes in cases.items():
        curves = [SizeCurve(f"{n:.0f}", n, budgets * per_token, truth.optimal_loss(n / BILLION, budgets / BILLION)[None, :])
                  for n, per_token in sizes]
        flops = empirical_flops_grid(curves)
        n_emp, bracketed = empirical_optimal_sizes(curves, flops, "parabola")
        _, a_emp = power_law_through(flops, n_emp, bracketed)
        usable = flops[bracketed[0]]
        _, a_law = power_law_through(usable, solver.optimal(loss_law_callable(params), usable[None, :])[0])
        results.append({"case": label, "empirical_exponent": float(a_emp[0]), "law_exponent": float(a_law[0]),
                        "gap": float(abs(a_law[0] - a_emp[0]) / a_emp[0]), "bracketed_points": int(bracketed[0].sum())})
    return {"cases": results}


def isoflop_of_published_law() -> list[dict]:
    """The isoFLOP reading of the published law's own curves on the paper's 4 fitting sizes over its fitted budgets."""
    tokens = np.geomspace(*paper.FITTING_TOKENS, 6)
    out = []
    for convention in ("6n", "paper"):
        model = paper.flop_model(convention)
        curves = [SizeCurve(f"{s}B", s * BILLION, tokens * BILLION * float(model.flops_per_token(s * BILLION)),
                            paper.loss(s, tokens)[None, :]) for s in paper.FITTING_SIZES]
        flops = empirical_flops_grid(curves)
        for method in ("parabola", "discrete"):
            n_emp, bracketed = empirical_optimal_sizes(curves, flops, method)
            mask = bracketed if method == "parabola" else np.isfinite(n_emp)
            _, a = power_law_through(flops, n_emp, mask)
            usable = flops[mask[0]]
            a_law = power_law_through(usable, derived_optimal_parameters(usable, convention)[None, :])[1][0] if usable.size >= 2 else None
            out.append({"convention": convention, "method": method, "empirical_exponent": float(a[0]),
                        "law_exponent": None if a_law is None else float(a_law), "points": int(mask[0].sum())})
    return out


def question_three(exponent_gap: dict | None) -> dict:
    """The published exponent gaps, the gap the published L(N, T) implies, and gaps on synthetic data (module docstring)."""
    precise, empirical = paper.COMPUTE_OPTIMAL_PRECISE["a"], paper.COMPUTE_OPTIMAL_EMPIRICAL["a"]
    derived = paper.LOSS_OPTIMAL["alpha"] / (paper.LOSS_OPTIMAL["alpha"] + paper.LOSS_OPTIMAL["beta"])
    return {
        "gap_relative_to_empirical": abs(precise - empirical) / empirical,
        "gap_relative_to_precise": abs(precise - empirical) / precise,
        "derived_exponent": derived,
        "derived_vs_empirical": abs(derived - empirical) / empirical,
        "derived_vs_precise": abs(derived - precise) / precise,
        "fixed_law_exponent_candidates": [empirical * (1 + paper.EXPONENT_GAP_FIXED), empirical * (1 - paper.EXPONENT_GAP_FIXED)],
        "synthetic": synthetic_isoflop_gap()["cases"],
        "published_law_isoflop": isoflop_of_published_law(),
        "ours": exponent_gap,
    }


def regression_checks() -> list[dict]:
    """The published laws against the numbers the paper prints beside them."""
    rows = []
    for n, t, published, _ in paper.LOSS_CHECKS:
        value = float(paper.loss(n, t))
        rows.append({"quantity": f"L(N={n:g}, T={t:g})", "published": published, "computed": value, "difference": value - published})
    for flops, published in ((paper.TARGET_FLOPS, paper.OPTIMAL_SIZE_AT_TARGET), (paper.HELDOUT_BUDGET_FLOPS, paper.HELDOUT_OPTIMAL_SIZE)):
        value = float(paper.precise_optimal_parameters(flops))
        rows.append({"quantity": f"N_opt({flops:.3g}) precise law", "published": published, "computed": value,
                     "difference": value / published - 1})
    for t_b, (batch, rate, cell) in sorted(paper.HEATMAP_PREDICTIONS.items()):
        b = float(paper.optimal_batch_tokens(paper.HEATMAP_SIZE, t_b))
        r = float(paper.optimal_learning_rate(paper.HEATMAP_SIZE, t_b))
        nearest = [paper.nearest_cell(b, paper.HEATMAP_BATCH_TOKENS), paper.nearest_cell(r, paper.HEATMAP_LEARNING_RATES)]
        rows.append({"quantity": f"B_opt({paper.HEATMAP_SIZE:g}, {t_b:g}) tokens", "published": batch, "computed": b, "difference": b / batch - 1})
        rows.append({"quantity": f"LR_opt({paper.HEATMAP_SIZE:g}, {t_b:g})", "published": rate, "computed": r, "difference": r / rate - 1})
        rows.append({"quantity": f"nearest cell at T={t_b:g} (B, LR)", "published": list(cell), "computed": nearest,
                     "difference": None, "match": nearest == list(cell)})
    reduction = 1 - paper.OPTIMAL_SIZE_AT_TARGET / paper.CONVENTIONAL_SIZE_AT_TARGET
    rows.append({"quantity": "model-size reduction 1 - N_precise / N_conventional", "published": paper.MODEL_SIZE_REDUCTION,
                 "computed": reduction, "difference": reduction - paper.MODEL_SIZE_REDUCTION})
    return rows


def open_questions(exponent_gap: dict | None = None) -> dict:
    """Everything ``FINDINGS.md`` shows."""
    return {"question_one": question_one(), "question_two": question_two(), "question_three": question_three(exponent_gap),
            "regression_checks": regression_checks(), "assumptions": list(paper.ASSUMPTIONS), "source": paper.SOURCE}
