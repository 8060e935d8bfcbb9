"""The paper's published laws and numbers, as a regression target.

Source: "Towards Precise Scaling Laws for Video Diffusion Transformers", Yin et al., arXiv 2411.17470
(CVPR 2025), as transcribed in the suite's ``REFERENCE.md`` (values marked *fig* were read off
figure annotations; only the abstract is quoted verbatim there). Units as in the paper: N and T in
billions, B in tokens, C in FLOPs; N_opt laws give N in parameters (raw count).

What the paper does not state and this module assumes (each one a parameter of the functions that
use it, and listed in ``ASSUMPTIONS``): 1280 video tokens per clip (5 latent frames x 16 x 16
patches), patch_dim 16 (4 latent channels x 1x2x2), text from T5-XXL (4096 wide, ~120 tokens),
50 sampling steps, no classifier-free guidance in the cost, widths from the suite's paper-family
registry (``dit.sizes``), and the paper's C_token convention.
"""

from __future__ import annotations

import numpy as np

from analysis.allocation import FlopModel, WidthRule
from analysis.config import PAPER_INFERENCE
from analysis.law_set import LAWS_SCHEMA

SOURCE = "Yin et al., arXiv 2411.17470 (CVPR 2025), as transcribed in REFERENCE.md; (fig) = read off a figure"

#: L(N, T) at optimal hyperparameters, N and T in billions.
LOSS_OPTIMAL = {"a": 0.0373, "alpha": 0.2917, "b": 0.0082, "beta": 0.3188, "L_inf": 0.4856}
#: B_opt(N, T) = a T^b N^c in tokens.
BATCH_SIZE = {"a": 2.1797e4, "b": 0.8080, "c": 0.1906}
#: LR_opt(N, T) = a T^b N^c; only "0.0002" is printed for the coefficient.
LEARNING_RATE = {"a": 2e-4, "b": -0.0453, "c": -0.1619}
#: N_opt = k C^a (N in parameters, C in FLOPs).
COMPUTE_OPTIMAL_PRECISE = {"k": 0.8705, "a": 0.4294}
COMPUTE_OPTIMAL_EMPIRICAL = {"k": 1.5787, "a": 0.4146}
#: Fit MSE of L reported by the paper.
FIT_MSE = {"optimal_hyperparameters": 2.35e-7, "fixed_hyperparameters": 4.31e-7}

TARGET_FLOPS = 1e22
#: Figure values at C = 1e22 FLOPs.
OPTIMAL_SIZE_AT_TARGET = 2.43e9
CONVENTIONAL_SIZE_AT_TARGET = 4.04e9
MODEL_SIZE_REDUCTION = 0.399
INFERENCE_COST_REDUCTION = 0.401
HELDOUT_BUDGET_FLOPS = 5.85e20
#: The held-out compute-optimal check: N_opt at HELDOUT_BUDGET_FLOPS (why 0.72B was the held-out model), trained on 140B tokens.
HELDOUT_OPTIMAL_SIZE = 0.72e9
HELDOUT_TOKENS = 140e9
#: Published relative errors of the held-out loss predictions: 1.07B at 10B tokens, 0.72B at 140B tokens.
HELDOUT_ERRORS = [{"N_billions": 1.07, "T_billions": 10.0, "relative_error": 0.0003},
                  {"N_billions": 0.72, "T_billions": 140.0, "relative_error": 0.0015}]

#: Published exponent gaps between the empirical and the precise N_opt laws (relative to the empirical exponent).
EXPONENT_GAP_OPTIMAL = 0.0357
EXPONENT_GAP_FIXED = 0.3026

#: (N billions, T billions, published L, measured L or None) checks of the loss law.
LOSS_CHECKS = [
    (1.07, 10.0, 0.51266, 0.5125),
    (1.07, 4.0, 0.5185, None),
    (0.72, 140.0, 0.50352, 0.5043),
]

#: Heatmap grid of the held-out 1.07B model (rows B in tokens, columns LR); values validation loss (fig).
HEATMAP_BATCH_TOKENS = [8.2e4, 1.6e5, 3.3e5]
HEATMAP_LEARNING_RATES = [7.5e-5, 1.1e-4, 1.7e-4, 2.5e-4, 3.8e-4, 5.7e-4]
HEATMAP_SIZE = 1.07
HEATMAPS = {
    4.0: [
        [0.5206, 0.5198, 0.5194, 0.5200, 0.5195, 0.5202],
        [0.5228, 0.5220, 0.5213, 0.5209, 0.5209, 0.5215],
        [0.5261, 0.5249, 0.5240, 0.5233, 0.5224, 0.5224],
    ],
    10.0: [
        [0.5134, 0.5132, 0.5129, 0.5141, 0.5137, 0.5144],
        [0.5140, 0.5133, 0.5125, 0.5126, 0.5130, 0.5141],
        [0.5158, 0.5150, 0.5141, 0.5140, 0.5140, 0.5133],
    ],
}
#: Published predictions for the heatmaps: T -> (B_opt tokens, LR_opt, nearest cell (B tokens, LR)).
HEATMAP_PREDICTIONS = {4.0: (6.8e4, 1.86e-4, (8.2e4, 1.7e-4)), 10.0: (1.42e5, 1.78e-4, (1.6e5, 1.7e-4))}

#: Sizes the paper fitted on and held out (billions of parameters).
FITTING_SIZES = [0.017, 0.057, 0.13, 0.26]
HELDOUT_SIZES = [0.72, 1.07]
#: Token budgets of the fitting runs (billions).
FITTING_TOKENS = (2.0, 12.0)

CONTEXT_TOKENS = 1280
ASSUMPTIONS = [
    "n_ctx = 1280 video tokens per clip (5 latent frames x 16 x 16 patches; matches B = 64/128/256 clips x 1280 on the heatmaps)",
    "patch_dim = 16 values per token (4 latent channels x 1 x 2 x 2)",
    "text: T5-XXL features, width 4096, about 120 tokens per caption",
    "50 sampling steps per video, one forward pass per step (no classifier-free guidance in the cost)",
    "width of a model of N parameters: dit.sizes.width_for_parameters(N, 'paper') (the suite's paper-family registry)",
    "C = C_token * T with C_token = (3/4) N (7 + n_ctx/d) (the paper's convention)",
]


def flop_model(convention: str = "paper") -> FlopModel:
    """The paper's compute accounting with the suite's paper-family width rule."""
    return FlopModel(convention=convention, context_tokens=CONTEXT_TOKENS, width_rule=WidthRule("registry", "paper"))


def loss(n_billions, t_billions):
    """The published L(N, T) at optimal hyperparameters (N, T in billions)."""
    p = LOSS_OPTIMAL
    return p["a"] * np.asarray(t_billions, float) ** -p["alpha"] + p["b"] * np.asarray(n_billions, float) ** -p["beta"] + p["L_inf"]


def optimal_batch_tokens(n_billions, t_billions):
    p = BATCH_SIZE
    return p["a"] * np.asarray(t_billions, float) ** p["b"] * np.asarray(n_billions, float) ** p["c"]


def optimal_learning_rate(n_billions, t_billions):
    p = LEARNING_RATE
    return p["a"] * np.asarray(t_billions, float) ** p["b"] * np.asarray(n_billions, float) ** p["c"]


def precise_optimal_parameters(flops):
    """N_opt (raw parameters) from the published precise law 0.8705 C^0.4294."""
    p = COMPUTE_OPTIMAL_PRECISE
    return p["k"] * np.asarray(flops, float) ** p["a"]


def nearest_cell(value: float, cells) -> float:
    """The grid value nearest to ``value`` in log space."""
    cells = np.asarray(cells, dtype=float)
    return float(cells[np.argmin(np.abs(np.log(cells) - np.log(value)))])


def laws_document() -> dict:
    """The published laws in the layout of ``results/laws.json`` (no intervals: none were published)."""
    flops_model = flop_model()

    def law(form, formula, parameters, units, note=""):
        return {
            "status": "fitted",
            "form": form,
            "formula": formula,
            "parameters": dict(parameters),
            "intervals": {},
            "units": units,
            "source": SOURCE + (f"; {note}" if note else ""),
        }

    loss_units = {"N": "billions of non-embedding parameters", "T": "billions of video tokens", "L": "validation loss"}
    hp_units = {"N": "billions of non-embedding parameters", "T": "billions of video tokens"}
    return {
        "schema": LAWS_SCHEMA,
        "origin": "paper",
        "source": SOURCE,
        "assumptions": list(ASSUMPTIONS),
        "setup": {
            "flop_model": flops_model.to_dict(),
            "context_tokens": CONTEXT_TOKENS,
            "inference": {**PAPER_INFERENCE.__dict__},
            "noise": {"relative_std": float(np.sqrt(FIT_MSE["optimal_hyperparameters"])) / LOSS_OPTIMAL["L_inf"],
                      "source": "the paper's fit MSE of L (2.35e-7): RMSE 4.8e-4, taken as the prediction uncertainty; no intervals were published"},
        },
        "laws": {
            "loss_optimal": law("sum_of_power_laws", "L = a * T^-alpha + b * N^-beta + L_inf", LOSS_OPTIMAL, loss_units),
            "batch_size": law("B_opt_law", "B_opt = a * T^b * N^c", BATCH_SIZE, {**hp_units, "B_opt": "tokens per batch"}),
            "learning_rate": law(
                "LR_opt_law", "LR_opt = a * T^b * N^c", LEARNING_RATE, {**hp_units, "LR_opt": "learning rate"},
                note="only '0.0002' is printed for the coefficient",
            ),
        },
        "compute_optimal": {
            "precise": {
                "status": "fitted",
                "formula": "N_opt = k * C^a",
                "parameters": dict(COMPUTE_OPTIMAL_PRECISE),
                "units": {"N_opt": "parameters (raw count)", "C": "FLOPs"},
                "method": "published power law (how it follows from L(N, T) is an open question: see FINDINGS.md)",
            },
            "empirical_precise": {
                "status": "fitted",
                "formula": "N_opt = k * C^a",
                "parameters": dict(COMPUTE_OPTIMAL_EMPIRICAL),
                "units": {"N_opt": "parameters (raw count)", "C": "FLOPs"},
                "method": "published power law fitted to the empirical optima",
            },
            "conventional": {
                "status": "published point only",
                "points": [{"flops": TARGET_FLOPS, "parameters": CONVENTIONAL_SIZE_AT_TARGET}],
                "reason": "the paper prints only N_opt = 4.04e9 at 1e22 FLOPs for fixed sub-optimal hyperparameters (fig)",
            },
        },
    }
