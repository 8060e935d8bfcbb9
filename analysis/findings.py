"""The paper's open questions, computed: ``python -m analysis.findings --out results/paper/FINDINGS.md [--laws results/laws.json]``.

Everything in the written file is computed here from the published coefficients (``analysis.paper``)
and, with ``--laws``, from our fitted laws. Nothing is tuned to match: each reading of an unstated
detail is computed and its distance to the published number reported.

1. How ``N_opt = 0.8705 C^0.4294`` follows from ``L(N, T)``: continuous minimisation under
   ``C = 6NT`` and under the paper's ``C_token`` (registry widths), unit readings (N in parameters or
   billions, T in tokens or clips), minimisation over the discrete set of the paper's sizes over
   several budget ranges, and what exponents the published number would require.
2. Which inference-cost definition gives 40.1%: parameters alone, FLOPs per generated video with and
   without attention, over sampling steps, text lengths and guidance, per-token training cost.
3. The exponent gaps between the empirical and the precise N_opt laws (3.57% and 30.26%), and how
   large such a gap is on a synthetic grid drawn from a known law, where there is no true gap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dit.atomic import atomic_write_text
from dit.provenance import provenance
from dit.sizes import sizes_in_family, width_for_parameters

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
from analysis.config import InferenceSetup, PAPER_INFERENCE

PUBLISHED_LOSS = np.array([[paper.LOSS_OPTIMAL[k] for k in ("a", "alpha", "b", "beta", "L_inf")]])


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


# ---------------------------------------------------------------------------------------------- question 1
def question_one() -> dict:
    alpha, beta = paper.LOSS_OPTIMAL["alpha"], paper.LOSS_OPTIMAL["beta"]
    a, b = paper.LOSS_OPTIMAL["a"], paper.LOSS_OPTIMAL["b"]
    target, heldout = paper.TARGET_FLOPS, paper.HELDOUT_BUDGET_FLOPS
    published = {"k": paper.COMPUTE_OPTIMAL_PRECISE["k"], "a": paper.COMPUTE_OPTIMAL_PRECISE["a"]}
    readings = []

    def add(name, n_target, n_heldout, k, exponent, note=""):
        readings.append({
            "reading": name, "N_opt_1e22": float(n_target), "N_opt_5.85e20": float(n_heldout), "k": k, "a": exponent,
            "error_1e22": float(n_target / paper.OPTIMAL_SIZE_AT_TARGET - 1), "error_5.85e20": float(n_heldout / 0.72e9 - 1),
            "exponent_error": None if exponent is None else float(exponent - published["a"]), "note": note,
        })

    add("published precise law 0.8705 C^0.4294", paper.precise_optimal_parameters(target), paper.precise_optimal_parameters(heldout),
        published["k"], published["a"], "the target")
    # closed form under C = 6 N T with N, T in billions
    exponent = alpha / (alpha + beta)
    g = (beta * b / (alpha * a)) ** (1 / (alpha + beta))
    k_closed = BILLION * g * (6 * BILLION * BILLION) ** (-exponent)
    add("continuous minimum, C = 6NT (closed form)", k_closed * target**exponent, k_closed * heldout**exponent, k_closed, exponent,
        "a = alpha/(alpha+beta), k = 1e9 (beta b/(alpha a))^(1/(alpha+beta)) (6e18)^-a")
    flops_range = np.geomspace(1e18, 1e23, 40)
    for convention, label in (("paper", "continuous minimum, paper C_token, registry widths"),):
        n = derived_optimal_parameters(flops_range, convention)
        k, e = _power_law(flops_range, n)
        add(label, derived_optimal_parameters([target], convention)[0], derived_optimal_parameters([heldout], convention)[0], k, e,
            "exponent and k: least squares over C = 1e18..1e23")
    # units: T in clips (1280 tokens) instead of tokens; N in parameters instead of billions
    clips_factor = paper.CONTEXT_TOKENS ** (-exponent)
    add("C = 6NT, law's T read as billions of clips", k_closed * clips_factor * target**exponent,
        k_closed * clips_factor * heldout**exponent, k_closed * clips_factor, exponent,
        "changing units moves k only: N_opt scales by 1280^-a")
    n_params_factor = (BILLION ** beta) ** (1 / (alpha + beta))
    add("C = 6NT, law's N read as raw parameters", k_closed * n_params_factor * target**exponent / BILLION ** 0,
        k_closed * n_params_factor * heldout**exponent, k_closed * n_params_factor, exponent,
        "b N^-beta with N in parameters: N_opt scales by (1e9^beta)^(1/(alpha+beta))")
    # discrete sets of sizes and budget ranges
    discrete = []
    for sizes_label, sizes in (("4 fitting sizes", paper.FITTING_SIZES), ("6 paper sizes", paper.FITTING_SIZES + paper.HELDOUT_SIZES)):
        for convention in ("6n", "paper"):
            model = paper.flop_model(convention)
            for low, high in ((1e17, 1e20), (1e18, 1e21), (1e17, 1e22), (2e17, 2e19)):
                flops = np.geomspace(low, high, 200)
                curves = []
                for size in sizes:
                    n = size * BILLION
                    tokens = flops / model.flops_per_token(n)
                    curves.append(SizeCurve(f"{size}B", n, flops, paper.loss(size, tokens / BILLION)[None, :]))
                for method in ("discrete", "parabola"):
                    n_opt, interior = empirical_optimal_sizes(curves, flops, method)
                    mask = None if method == "discrete" else interior
                    k, e = power_law_through(flops, n_opt, mask)
                    discrete.append({
                        "sizes": sizes_label, "convention": convention, "range": [low, high], "method": method,
                        "k": float(k[0]), "a": float(e[0]), "N_opt_1e22": float(k[0] * target ** e[0]),
                        "points": int(np.sum(interior[0])) if method == "parabola" else flops.size,
                    })
    closest = min(discrete, key=lambda r: abs(r["a"] - published["a"]) + abs(np.log(r["N_opt_1e22"] / paper.OPTIMAL_SIZE_AT_TARGET)))
    # what the published exponent would require
    required = {
        "beta_if_alpha_fixed": alpha * (1 - published["a"]) / published["a"],
        "alpha_if_beta_fixed": published["a"] * beta / (1 - published["a"]),
        "q_if_C_proportional_to_N^q_T": (alpha / published["a"] - beta) / alpha,
    }
    # flatness of the loss along the budget at 1e22
    sizes = [paper.OPTIMAL_SIZE_AT_TARGET, readings[1]["N_opt_1e22"], paper.CONVENTIONAL_SIZE_AT_TARGET]
    flat = [{"N": n, "loss_6n": float(paper.loss(n / BILLION, target / (6 * n) / BILLION))} for n in sizes]
    grid = np.geomspace(1e9, 1e10, 2001)
    losses = paper.loss(grid / BILLION, target / (6 * grid) / BILLION)
    best = losses.min()
    within = grid[losses <= best + np.sqrt(paper.FIT_MSE["optimal_hyperparameters"])]
    # the 0.72B / 140B-token / 5.85e20 check
    implied = heldout / (0.72e9 * 140e9)
    d_registry = width_for_parameters(0.72e9, "paper")
    implied_width = paper.CONTEXT_TOKENS / (implied / 0.75 - 7)
    return {
        "readings": readings,
        "discrete": discrete,
        "closest_discrete": closest,
        "required": required,
        "flatness": flat,
        "flat_band": [float(within.min()), float(within.max())],
        "fit_rmse": float(np.sqrt(paper.FIT_MSE["optimal_hyperparameters"])),
        "heldout_check": {
            "implied_flops_per_token_over_N": float(implied),
            "paper_form_with_registry_width": float(0.75 * (7 + paper.CONTEXT_TOKENS / d_registry)),
            "registry_width": float(d_registry),
            "width_that_matches": float(implied_width),
            "context_that_matches": float((implied / 0.75 - 7) * d_registry),
            "tokens_6n": float(heldout / (6 * 0.72e9)),
            "tokens_paper_form": float(heldout / (0.75 * 0.72e9 * (7 + paper.CONTEXT_TOKENS / d_registry))),
        },
    }


# ---------------------------------------------------------------------------------------------- question 2
def question_two() -> dict:
    n_small_figure, n_large = paper.OPTIMAL_SIZE_AT_TARGET, paper.CONVENTIONAL_SIZE_AT_TARGET
    n_small_law = float(paper.precise_optimal_parameters(paper.TARGET_FLOPS))
    rows = []

    def add(definition, small, large, note=""):
        value = 1 - small / large
        rows.append({"definition": definition, "reduction": float(value), "distance_to_40.1": float(value - paper.INFERENCE_COST_REDUCTION), "note": note})

    for label, small in (("figure value 2.43e9", n_small_figure), (f"law value {n_small_law:.4g}", n_small_law)):
        add(f"parameters alone ({label})", small, n_large)
    rule = WidthRule("registry", "paper")
    for small_label, small in (("2.43e9", n_small_figure), (f"{n_small_law:.4g}", n_small_law)):
        for steps, text_tokens, guidance in ((1, 0, False), (50, 0, False), (50, 120, False), (50, 120, True), (50, 300, False), (1000, 120, False)):
            setup = InferenceSetup(steps, paper.CONTEXT_TOKENS, text_tokens, 16, 4096, guidance)
            add(f"FLOPs per video, attention included (N={small_label}, {steps} steps, {text_tokens} text tokens, guidance {'on' if guidance else 'off'})",
                float(inference_flops(small, rule, setup)), float(inference_flops(n_large, rule, setup)))
        model = paper.flop_model("paper")
        add(f"training FLOPs per token, paper C_token (N={small_label})", float(model.flops_per_token(small)), float(model.flops_per_token(n_large)),
            "equals forward FLOPs with self-attention, no text path")
        add(f"FLOPs per video without attention (N={small_label})", small, n_large, "2 x 14 d^2 per layer per token: proportional to N")
    required_small = n_large * (1 - paper.INFERENCE_COST_REDUCTION)
    required_large = n_small_figure / (1 - paper.INFERENCE_COST_REDUCTION)
    closest = min(rows, key=lambda r: abs(r["distance_to_40.1"]))
    widths = {n: width_for_parameters(n, "paper") for n in (n_small_figure, n_large)}
    return {
        "rows": rows, "closest": closest, "required_small": float(required_small), "required_large": float(required_large),
        "widths": widths, "attention_share": {
            n: float(paper.CONTEXT_TOKENS / (7 * widths[n])) for n in widths
        },
    }


# ---------------------------------------------------------------------------------------------- question 3
def synthetic_isoflop_gap() -> dict:
    """Exponent of the isoFLOP (empirical) law vs the law-derived one on noise-free synthetic data.

    Three cases: a smooth family (widths on one power law, 2x apart), the default design's
    registered tiny shapes with compute counted by the same smooth FLOP model as the law, and the
    same shapes with each size's own FLOPs (irregular width/depth ratios).
    """
    from dit.flops import paper_flops_per_token
    from dit.sizes import get_size

    from analysis.synthetic_runs import SyntheticDesign, SyntheticTruth

    truth, design = SyntheticTruth(), SyntheticDesign()
    budgets = np.asarray(design.milestones_tokens, dtype=float)
    registered = [get_size(n) for n in design.fitting_sizes]
    rule = WidthRule.fit([s.non_embedding_parameters for s in registered], [s.width for s in registered])
    model = FlopModel("paper", design.tokens_per_clip, rule)
    smooth_sizes = [registered[0].non_embedding_parameters * 2.0**k for k in range(len(registered))]
    cases = {
        "smooth family: 5 sizes 2x apart, widths on one power law": [(n, float(model.flops_per_token(n))) for n in smooth_sizes],
        "default design's registered tiny shapes, C from the same FLOP model as the law": [
            (s.non_embedding_parameters, float(model.flops_per_token(s.non_embedding_parameters))) for s in registered],
        "default design's registered tiny shapes, C from each size's own width": [
            (s.non_embedding_parameters, paper_flops_per_token(s.non_embedding_parameters, design.tokens_per_clip, s.width)) for s in registered],
    }
    solver = AllocationSolver(model, (1e2, 1e12))
    params = np.array([[truth.loss[k] for k in ("a", "alpha", "b", "beta", "L_inf")]])
    results = {}
    for label, sizes in cases.items():
        curves = [SizeCurve(f"{n:.0f}", n, budgets * per_token, truth.optimal_loss(n / BILLION, budgets / BILLION)[None, :]) for n, per_token in sizes]
        flops = empirical_flops_grid(curves)
        n_emp, interior = empirical_optimal_sizes(curves, flops, "parabola")
        k_emp, a_emp = power_law_through(flops, n_emp, interior)
        usable = flops[interior[0]]
        n_law, _, _ = solver.optimal(loss_law_callable(params), usable[None, :])
        k_law, a_law = power_law_through(usable, n_law)
        results[label] = {
            "empirical_exponent": float(a_emp[0]), "law_exponent": float(a_law[0]),
            "gap": float(abs(a_law[0] - a_emp[0]) / a_emp[0]), "interior_points": int(interior[0].sum()),
            "range": [float(usable.min()), float(usable.max())] if usable.size else None,
        }
    return results


def isoflop_of_published_law() -> dict:
    """The isoFLOP reading of the published law's own curves on the paper's 4 fitting sizes, 2-12B tokens."""
    tokens = np.geomspace(*paper.FITTING_TOKENS, 6)
    out = {}
    for convention in ("6n", "paper"):
        model = paper.flop_model(convention)
        curves = [SizeCurve(f"{s}B", s * BILLION, tokens * BILLION * float(model.flops_per_token(s * BILLION)),
                            paper.loss(s, tokens)[None, :]) for s in paper.FITTING_SIZES]
        flops = empirical_flops_grid(curves)
        for method in ("parabola", "discrete"):
            n_emp, interior = empirical_optimal_sizes(curves, flops, method)
            mask = interior if method == "parabola" else np.isfinite(n_emp)
            k, a = power_law_through(flops, n_emp, mask)
            usable = flops[mask[0]]
            a_law = [float("nan")]
            if usable.size >= 2:
                k_law, a_law = power_law_through(usable, derived_optimal_parameters(usable, convention)[None, :])
            out[f"{convention}, {method}"] = {
                "empirical_exponent": float(a[0]), "law_exponent": float(a_law[0]), "interior_points": int(mask[0].sum()),
                "range": [float(usable.min()), float(usable.max())] if usable.size else None,
            }
    return out


def question_three(document: dict | None) -> dict:
    precise, empirical = paper.COMPUTE_OPTIMAL_PRECISE["a"], paper.COMPUTE_OPTIMAL_EMPIRICAL["a"]
    derived = alpha_ratio = paper.LOSS_OPTIMAL["alpha"] / (paper.LOSS_OPTIMAL["alpha"] + paper.LOSS_OPTIMAL["beta"])
    result = {
        "gap_relative_to_empirical": abs(precise - empirical) / empirical,
        "gap_relative_to_precise": abs(precise - empirical) / precise,
        "derived_vs_empirical": abs(derived - empirical) / empirical,
        "derived_vs_precise": abs(derived - precise) / precise,
        "derived_exponent": alpha_ratio,
        "fixed_gap_published": paper.EXPONENT_GAP_FIXED,
        "fixed_candidates": {
            "if the empirical fixed-HP exponent equals the optimal one (0.4146)": [empirical * (1 + paper.EXPONENT_GAP_FIXED), empirical * (1 - paper.EXPONENT_GAP_FIXED)],
        },
        "synthetic": synthetic_isoflop_gap(),
        "published_law_isoflop": isoflop_of_published_law(),
    }
    if document is not None:
        result["ours"] = document.get("compute_optimal", {}).get("exponent_gap")
    return result


# ---------------------------------------------------------------------------------------------- regression targets
def regression_checks() -> list[dict]:
    rows = []
    for n, t, published, _ in paper.LOSS_CHECKS:
        value = float(paper.loss(n, t))
        rows.append({"quantity": f"L(N={n}, T={t:g})", "published": published, "computed": value, "difference": value - published})
    for flops, published in ((paper.TARGET_FLOPS, paper.OPTIMAL_SIZE_AT_TARGET), (paper.HELDOUT_BUDGET_FLOPS, 0.72e9)):
        value = float(paper.precise_optimal_parameters(flops))
        rows.append({"quantity": f"N_opt({flops:.3g}) precise law", "published": published, "computed": value, "difference": value / published - 1})
    for t_b, (batch, rate, cell) in sorted(paper.HEATMAP_PREDICTIONS.items()):
        b = float(paper.optimal_batch_tokens(paper.HEATMAP_SIZE, t_b))
        r = float(paper.optimal_learning_rate(paper.HEATMAP_SIZE, t_b))
        computed_cell = (paper.nearest_cell(b, paper.HEATMAP_BATCH_TOKENS), paper.nearest_cell(r, paper.HEATMAP_LEARNING_RATES))
        rows.append({"quantity": f"B_opt(1.07, {t_b:g}) tokens", "published": batch, "computed": b, "difference": b / batch - 1})
        rows.append({"quantity": f"LR_opt(1.07, {t_b:g})", "published": rate, "computed": r, "difference": r / rate - 1})
        rows.append({"quantity": f"nearest cell at T={t_b:g} (B, LR)", "published": cell, "computed": computed_cell, "difference": "match" if computed_cell == cell else "MISMATCH"})
    reduction = 1 - paper.OPTIMAL_SIZE_AT_TARGET / paper.CONVENTIONAL_SIZE_AT_TARGET
    rows.append({"quantity": "model-size reduction 1 - 2.43/4.04", "published": paper.MODEL_SIZE_REDUCTION, "computed": reduction, "difference": reduction - paper.MODEL_SIZE_REDUCTION})
    return rows


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(value, digits=4):
    if isinstance(value, float) and not np.isfinite(value):
        return "-"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_fmt(v, digits) for v in value) + ")"
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(document: dict | None = None, laws_path: str | None = None) -> str:
    one, two, three = question_one(), question_two(), question_three(document)
    checks = regression_checks()
    record = provenance({"laws": laws_path})
    out = [
        "# Findings on the paper's open questions",
        "",
        f"Generated by `python -m analysis.findings` (commit {record['code_version']['commit']}, {record['created_utc']}). "
        "Every number below is computed by `analysis/findings.py` from the published coefficients in `analysis/paper.py` "
        f"(source: {paper.SOURCE}){' and from our fitted laws in ' + laws_path if laws_path else ''}. "
        "Units: N and T in billions inside L(N, T); N_opt in parameters; C in FLOPs.",
        "",
        "Assumptions where the paper is silent:",
        "",
        *[f"- {a}" for a in paper.ASSUMPTIONS],
        "",
        "## 0. The published laws reproduce the published numbers",
        "",
        _table(["quantity", "published", "computed from the coefficients", "difference"],
               [[c["quantity"], _fmt(c["published"], 5), _fmt(c["computed"], 5), _fmt(c["difference"], 3)] for c in checks]),
        "",
        "## 1. How does N_opt = 0.8705 C^0.4294 follow from L(N, T)?",
        "",
        "**It does not follow from the published L(N, T) under any reading tried here.** Minimising "
        "L = 0.0373 T^-0.2917 + 0.0082 N^-0.3188 + 0.4856 on the budget line C = T C_token(N) gives an exponent "
        f"alpha/(alpha+beta) = {three['derived_exponent']:.4f} whatever the units (units move only the coefficient), "
        "and N_opt(1e22) between 3.3e9 and 3.7e9, not 2.43e9.",
        "",
        _table(["reading", "N_opt(1e22)", "vs 2.43e9", "N_opt(5.85e20)", "vs 0.72e9", "k", "a", "note"],
               [[r["reading"], _fmt(r["N_opt_1e22"]), f"{100 * r['error_1e22']:+.1f}%", _fmt(r["N_opt_5.85e20"]),
                 f"{100 * r['error_5.85e20']:+.1f}%", _fmt(r["k"]), _fmt(r["a"]), r["note"]] for r in one["readings"]]),
        "",
        "Minimising over a discrete set of sizes (the N with the lowest predicted loss at each C among the paper's "
        "sizes, as an isoFLOP reading of the law) and fitting N_opt = k C^a over a budget range:",
        "",
        _table(["sizes", "C_token", "C range (FLOPs)", "method", "k", "a", "N_opt(1e22)", "points"],
               [[r["sizes"], r["convention"], f"{r['range'][0]:.0e}-{r['range'][1]:.0e}", r["method"], _fmt(r["k"]), _fmt(r["a"]),
                 _fmt(r["N_opt_1e22"]), r["points"]] for r in one["discrete"]]),
        "",
        f"Closest discrete reading: {one['closest_discrete']['sizes']}, {one['closest_discrete']['convention']} C_token, "
        f"C = {one['closest_discrete']['range'][0]:.0e}-{one['closest_discrete']['range'][1]:.0e}, {one['closest_discrete']['method']}: "
        f"N_opt = {one['closest_discrete']['k']:.4g} C^{one['closest_discrete']['a']:.4f}, N_opt(1e22) = {one['closest_discrete']['N_opt_1e22']:.3g}. "
        "This is an artefact: over most of that range the best size is the largest one available, so the fit "
        "is to a staircase that saturates, not a property of the law.",
        "",
        "What the published exponent would need: with alpha = 0.2917 kept, beta = "
        f"{one['required']['beta_if_alpha_fixed']:.4f} (published 0.3188); with beta kept, alpha = {one['required']['alpha_if_beta_fixed']:.4f} "
        f"(published 0.2917); or a compute count growing as C ~ N^{one['required']['q_if_C_proportional_to_N^q_T']:.3f} T, "
        "which no FLOP convention here gives (the paper's C_token grows slightly slower than N, since n_ctx/d falls with N).",
        "",
        "The loss surface is flat along the budget: at C = 1e22 (C = 6NT),",
        "",
        _table(["N", "L(N, C/6N)"], [[_fmt(r["N"]), f"{r['loss_6n']:.6f}"] for r in one["flatness"]]),
        "",
        f"Every N in [{one['flat_band'][0]:.3g}, {one['flat_band'][1]:.3g}] is within the law's own fit RMSE ({one['fit_rmse']:.2g}, "
        "from the published MSE 2.35e-7) of the minimum, so the loss data cannot distinguish 2.43e9 from 3.35e9 or 4.04e9: "
        "the compute-optimal size is determined by the fitted functional form, not by the losses.",
        "",
        "The held-out check (0.72B at 5.85e20 FLOPs trained on 140B tokens) implies C / (N T) = "
        f"{one['heldout_check']['implied_flops_per_token_over_N']:.3f} FLOPs per parameter per token. 6N gives 6 "
        f"({one['heldout_check']['tokens_6n'] / 1e9:.1f}B tokens); the paper's C_token with our registry width d = "
        f"{one['heldout_check']['registry_width']:.0f} gives {one['heldout_check']['paper_form_with_registry_width']:.3f} "
        f"({one['heldout_check']['tokens_paper_form'] / 1e9:.1f}B tokens). The paper form matches 140B tokens with d = "
        f"{one['heldout_check']['width_that_matches']:.0f} at n_ctx = 1280, or n_ctx = {one['heldout_check']['context_that_matches']:.0f} at d = "
        f"{one['heldout_check']['registry_width']:.0f}: the paper's widths (not published) may differ from our registry, or 140 is rounded.",
        "",
        "## 2. Which inference-cost definition gives 40.1%?",
        "",
        "**None that we could construct.** Parameters alone give 39.9% (39.7% with the law's unrounded 2.435e9). "
        "Every FLOP count that includes attention gives less, not more: attention costs about n_ctx/(7d) of the "
        f"linear layers per token ({100 * two['attention_share'][paper.OPTIMAL_SIZE_AT_TARGET]:.1f}% at 2.43e9 with d = "
        f"{two['widths'][paper.OPTIMAL_SIZE_AT_TARGET]:.0f}, {100 * two['attention_share'][paper.CONVENTIONAL_SIZE_AT_TARGET]:.1f}% at 4.04e9 "
        f"with d = {two['widths'][paper.CONVENTIONAL_SIZE_AT_TARGET]:.0f}), a larger share for the narrower, smaller model. "
        "Text-path and embedding terms are the same for both sizes or grow with width, and also shrink the reduction. "
        "Sampling steps and guidance scale both costs alike and cancel.",
        "",
        _table(["definition", "reduction", "minus 40.1%"],
               [[r["definition"], f"{100 * r['reduction']:.2f}%", f"{100 * r['distance_to_40.1']:+.2f} pt"] for r in two["rows"]]),
        "",
        f"To get 40.1% from sizes alone the precise size would have to be {two['required_small']:.4g} (vs 2.43e9) or the "
        f"conventional one {two['required_large']:.4g} (vs 4.04e9); both are within the rounding of figure values read to "
        "three digits only if the figure's 2.43 was itself rounded from about 2.42. The 40.1% is most likely the size ratio "
        "from unrounded or slightly different N_opt values than those printed; it cannot be derived from the printed ones.",
        "",
        "## 3. The exponent gaps",
        "",
        f"- Published: empirical a = 0.4146, precise a = 0.4294; |0.4294 - 0.4146| / 0.4146 = {100 * three['gap_relative_to_empirical']:.2f}% "
        f"(relative to the empirical exponent: this reproduces the published 3.57%; relative to the precise one it would be "
        f"{100 * three['gap_relative_to_precise']:.2f}%).",
        f"- The exponent that the published L(N, T) implies, {three['derived_exponent']:.4f}, is {100 * three['derived_vs_empirical']:.1f}% "
        f"from the empirical 0.4146 and {100 * three['derived_vs_precise']:.1f}% from the published precise 0.4294; the small 3.57% gap "
        "holds only for the published precise law, whose derivation is question 1.",
        f"- The 30.26% gap with fixed hyperparameters cannot be checked: neither fixed-hyperparameter exponent is published. "
        f"If the fixed-HP empirical exponent were 0.4146 too, the fixed-HP law exponent would be "
        f"{three['fixed_candidates']['if the empirical fixed-HP exponent equals the optimal one (0.4146)'][0]:.4f} or "
        f"{three['fixed_candidates']['if the empirical fixed-HP exponent equals the optimal one (0.4146)'][1]:.4f}.",
        "- Is a gap a property of the isoFLOP method? Reading the published law's own curves the paper's way (4 fitting "
        "sizes, 2-12B tokens, optimum at each C by a parabola in log N) against minimising the same law:",
        "",
        _table(["C_token, method", "isoFLOP a", "law a", "budgets used"],
               [[k, _fmt(v["empirical_exponent"]), _fmt(v["law_exponent"]), v["interior_points"]]
                for k, v in three["published_law_isoflop"].items()]),
        "",
        "  Over the paper's own budgets the law's optimum is rarely bracketed by three available sizes (parabola: few or no "
        "usable budgets), and the discrete best size is a staircase; the isoFLOP reading of the published law does not "
        "give 0.4146 either.",
        "",
        "  and on noise-free synthetic losses drawn from a known law (analysis.synthetic_runs's default truth), where there is no true gap:",
        "",
        _table(["case", "isoFLOP a", "law a", "gap", "interior budgets"],
               [[label, f"{r['empirical_exponent']:.4f}", f"{r['law_exponent']:.4f}", f"{100 * r['gap']:.1f}%", r["interior_points"]]
                for label, r in three["synthetic"].items()]),
        "",
        "  With compute counted the same way for both, the isoFLOP method recovers the law's exponent closely even "
        "from five sizes 2x apart. When each size's compute uses its own width and the shapes are irregular "
        "(C_token/N jumps between neighbouring sizes), the isoFLOP exponent moves by tens of percent over a one-decade "
        "budget range. So the published gaps (3.57% with optimal, 30.26% with fixed hyperparameters) and the 15% gap "
        "between the empirical 0.4146 and the law-implied 0.4778 can come from compute accounting and model shapes alone; "
        "without the paper's widths and depths they cannot be attributed to the hyperparameter policy. "
        "(Our fit's config key empirical_flops chooses the accounting; its default, model, counts both laws alike.)",
        "",
    ]
    if three.get("ours"):
        out += ["", "Our runs (bootstrap intervals; definition |a_law - a_empirical| / a_empirical):", ""]
        out.append(_table(["hyperparameters", "law a", "empirical a", "gap", "interval"],
                          [[k, f"{v['law_exponent']:.4f}", f"{v['empirical_exponent']:.4f}", f"{100 * v['value']:.1f}%",
                            "-" if not v.get("interval") else f"[{100 * v['interval'][0]:.1f}, {100 * v['interval'][1]:.1f}]%"]
                           for k, v in three["ours"].items()]))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.findings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Markdown file to write (e.g. results/paper/FINDINGS.md)")
    parser.add_argument("--laws", help="optional laws.json from analysis.fit: adds our exponent gaps")
    args = parser.parse_args(argv)
    document = None
    if args.laws:
        from analysis.law_set import LawsFileError, read_laws

        try:
            document = read_laws(args.laws)
        except LawsFileError as error:
            print(f"analysis.findings: error: {error}", file=sys.stderr)
            return 2
    atomic_write_text(Path(args.out), render(document, args.laws))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
