"""Synthetic runs tables drawn from known laws: for tests, the benchmark and dry runs of the pipeline.

Loss of a run of size N with batch B (tokens) and learning rate LR at T tokens::

    L = L_true(N, T) + lr_curvature * ln(LR / LR_opt(N, T))^2 + batch_curvature * ln(B / B_opt(N, T))^2
        + noise

with ``L_true`` the paper's form and ``B_opt``, ``LR_opt`` power laws ``a T^b N^c`` (N, T in
billions), all with known parameters (``SyntheticTruth``). Noise: a per-run relative offset
(``run_noise``) plus independent per-milestone relative noise (``milestone_noise``). Milestones are
reached at whole steps, so each run's token counts are ``ceil(milestone / B) * B``. FLOPs follow
``dit.flops`` with the registry's widths.

The default grid is the suite's default design: 5 fitting tiny sizes x 3 batch sizes x 4 learning
rates x 6 milestones, 4 noise-floor seeds, 2 held-out sizes on the same grid, one diverged and one
failed run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dit.flops import training_flops
from dit.sizes import get_size

from analysis.runs import COLUMNS


@dataclass
class SyntheticTruth:
    """Known laws behind a synthetic table (N, T in billions; B in tokens)."""

    loss: dict = field(default_factory=lambda: {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3})
    batch_size: dict = field(default_factory=lambda: {"a": 1.83e5, "b": 0.3, "c": 0.2})
    learning_rate: dict = field(default_factory=lambda: {"a": 2.2e-4, "b": -0.05, "c": -0.15})
    lr_curvature: float = 0.006
    batch_curvature: float = 0.004
    run_noise: float = 3e-4
    milestone_noise: float = 1e-4

    def optimal_loss(self, n_billions, t_billions):
        p = self.loss
        return p["a"] * np.asarray(t_billions) ** -p["alpha"] + p["b"] * np.asarray(n_billions) ** -p["beta"] + p["L_inf"]

    def optimal_batch_tokens(self, n_billions, t_billions):
        p = self.batch_size
        return p["a"] * np.asarray(t_billions) ** p["b"] * np.asarray(n_billions) ** p["c"]

    def optimal_learning_rate(self, n_billions, t_billions):
        p = self.learning_rate
        return p["a"] * np.asarray(t_billions) ** p["b"] * np.asarray(n_billions) ** p["c"]

    def loss_at(self, n_billions, t_billions, batch_tokens, learning_rate):
        penalty = self.lr_curvature * np.log(learning_rate / self.optimal_learning_rate(n_billions, t_billions)) ** 2
        penalty += self.batch_curvature * np.log(batch_tokens / self.optimal_batch_tokens(n_billions, t_billions)) ** 2
        return self.optimal_loss(n_billions, t_billions) + penalty


@dataclass
class SyntheticDesign:
    fitting_sizes: list = field(default_factory=lambda: ["tiny-8k", "tiny-18k", "tiny-33k", "tiny-66k", "tiny-147k"])
    heldout_sizes: list = field(default_factory=lambda: ["tiny-262k", "tiny-590k"])
    batch_clips: list = field(default_factory=lambda: [8, 16, 32])
    learning_rates: list = field(default_factory=lambda: [5e-4, 1e-3, 2e-3, 4e-3])
    milestones_tokens: list = field(default_factory=lambda: [2**19, 2**20, 2**21, 2**22, 2**23, 2**24])
    tokens_per_clip: int = 256
    conventional_cell: tuple = (16, 1e-3)
    noise_size: str = "tiny-33k"
    noise_seeds: int = 4
    include_failures: bool = True


def _run_rows(truth, design, rng, run_id, series, size_name, batch_clips, learning_rate, seed, milestones, status="completed", reason=""):
    size = get_size(size_name)
    n = size.non_embedding_parameters
    batch_tokens = batch_clips * design.tokens_per_clip
    offset = truth.run_noise * rng.standard_normal()
    rows = []
    for milestone in milestones:
        step = math.ceil(milestone / batch_tokens)
        tokens = step * batch_tokens
        loss = truth.loss_at(n / 1e9, tokens / 1e9, batch_tokens, learning_rate)
        loss *= 1 + offset + truth.milestone_noise * rng.standard_normal()
        rows.append(
            {
                "run_id": run_id, "series": series, "status": status, "status_reason": reason, "size": size_name,
                "non_embedding_parameters": n, "width": size.width, "depth": size.depth, "heads": size.heads,
                "tokens_per_clip": design.tokens_per_clip, "batch_clips": batch_clips, "batch_tokens": batch_tokens,
                "learning_rate": learning_rate, "seed": seed, "validation_weights": "ema", "step": step, "tokens": tokens,
                "flops": training_flops(tokens, size.width, size.depth, design.tokens_per_clip, "paper"),
                "flops_6n": training_flops(tokens, size.width, size.depth, design.tokens_per_clip, "6n"),
                "train_loss": float(loss) * 1.02, "validation_loss": float(loss),
            }
        )
    return rows


def synthetic_runs(truth: SyntheticTruth | None = None, design: SyntheticDesign | None = None, seed: int = 0) -> pd.DataFrame:
    """A runs table (contract columns) drawn from ``truth`` on ``design``."""
    truth = truth or SyntheticTruth()
    design = design or SyntheticDesign()
    rng = np.random.default_rng(seed)
    rows = []
    for size_name in design.fitting_sizes + design.heldout_sizes:
        for batch in design.batch_clips:
            for rate in design.learning_rates:
                run_id = f"grid_{size_name}_b{batch}_lr{rate:g}"
                rows += _run_rows(truth, design, rng, run_id, "grid", size_name, batch, rate, 0, design.milestones_tokens)
    batch, rate = design.conventional_cell
    for s in range(1, design.noise_seeds + 1):
        run_id = f"noise_{design.noise_size}_b{batch}_lr{rate:g}_s{s}"
        rows += _run_rows(truth, design, rng, run_id, "noise", design.noise_size, batch, rate, s, design.milestones_tokens)
    if design.include_failures:
        size_name = design.fitting_sizes[len(design.fitting_sizes) // 2]
        high = max(design.learning_rates) * 4
        rows += _run_rows(
            truth, design, rng, f"grid_{size_name}_b{design.batch_clips[0]}_lr{high:g}", "grid", size_name,
            design.batch_clips[0], high, 0, design.milestones_tokens[:2], status="diverged", reason="loss above 10.0 at step 310",
        )
        failed = _run_rows(
            truth, design, rng, f"grid_{size_name}_b{design.batch_clips[-1]}_lr{high:g}", "grid", size_name,
            design.batch_clips[-1], high, 0, design.milestones_tokens[:1], status="failed", reason="out of memory",
        )
        for key in ("step", "tokens", "flops", "flops_6n", "train_loss", "validation_loss"):
            failed[0][key] = float("nan")
        rows += failed
    return pd.DataFrame(rows, columns=list(COLUMNS))


def synthetic_proposal_runs(proposal: dict, truth: SyntheticTruth | None = None, design: SyntheticDesign | None = None,
                            seed: int = 1) -> pd.DataFrame:
    """Rows for the runs an ``analysis.propose`` document lists, drawn from ``truth`` (stands in for training them)."""
    truth = truth or SyntheticTruth()
    design = design or SyntheticDesign()
    rng = np.random.default_rng(seed)
    rows = []
    for run in proposal["runs"]:
        run_id = f"{run['series']}/{run['size']}/b{run['batch_clips']}_lr{run['learning_rate']:g}_s{run['seed']}"
        rows += _run_rows(truth, design, rng, run_id, run["series"], run["size"], int(run["batch_clips"]),
                          float(run["learning_rate"]), run["seed"], run["milestones_tokens"])
    return pd.DataFrame(rows, columns=list(COLUMNS))
