"""The bootstrap resamples over the noise unit, the run: one set of draws shared by every law.

A run's loss curve is one draw of the run-to-run noise (a seed gives the whole curve), so a resample
scales each run's whole curve by ``1 + sigma z`` with ``z`` standard normal, one ``z`` per run and
resample, and ``sigma`` the run-to-run relative standard deviation (from the noise-floor seeds, or
the residuals of the loss law when there are none). ``sigma`` is itself an estimate, on ``nu`` degrees
of freedom (``analysis.runs.effective_degrees_of_freedom``), so each resample draws its own:
``sigma_hat * sqrt(nu / chi2_nu)`` (the scaled inverse chi-square distribution of a normal variance
given its estimate), which gives the intervals the tails of Student's t with ``nu`` degrees of freedom. A grid cell whose loss is the mean of k replicate
runs is scaled by ``1 + sigma`` times the mean of their k draws. Every law is refitted on the same resampled
runs, so the precise and the conventional recipe are paired resample by resample; no design cell
(size, batch size, learning rate) is ever left out or repeated, as resampling the runs themselves
would do. Row 0 is the data as measured.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: Stream tag of the held-out runs' draws (``RunNoise.draw_per_run``), apart from the fitting runs' stream.
HELDOUT_STREAM = 0x4E1D


def _id_words(run_id: str) -> list[int]:
    """A run id as four 32-bit words (blake2b), a stable seed component across processes and Python versions."""
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=16).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


SCHEME = ("each run's loss curve scaled by 1 + sigma z (z standard normal, one per run and resample; sigma: "
          "setup.noise.run_relative_std times sqrt(nu / chi2_nu), drawn once per resample, nu: "
          "setup.noise.degrees_of_freedom), the same resampled runs for every law")


@dataclass
class RunNoise:
    """Standard-normal draws ``(resamples, runs)`` for ``run_ids`` and the relative std that scales them."""

    run_ids: list[str]
    draws: np.ndarray
    relative_std: float = 0.0
    #: Per resample, the factor on ``relative_std`` for the uncertainty of its estimate; None: known exactly.
    std_factors: np.ndarray | None = None
    degrees_of_freedom: float | None = None

    @classmethod
    def draw(cls, run_ids: list[str], resamples: int, seed: int) -> "RunNoise":
        rng = np.random.default_rng(seed)
        return cls(list(run_ids), rng.standard_normal((resamples, len(run_ids))))

    @classmethod
    def draw_per_run(cls, run_ids: list[str], resamples: int, seed: int) -> "RunNoise":
        """Draws of each run from a stream of its own (``seed`` and its id): the same for a run whichever others are
        drawn with it, and independent between runs drawn in separate calls (the held-out checks draw per group)."""
        columns = [np.random.default_rng([int(seed), HELDOUT_STREAM, *_id_words(run_id)]).standard_normal(resamples)
                   for run_id in run_ids]
        return cls(list(run_ids), np.stack(columns, axis=1) if columns else np.empty((resamples, 0)))

    def set_std(self, relative_std: float, degrees_of_freedom: float | None, seed: int) -> None:
        """The run-to-run relative std and the degrees of freedom of its estimate (None: known exactly)."""
        self.relative_std, self.degrees_of_freedom = float(relative_std), degrees_of_freedom
        self.std_factors = std_factors(degrees_of_freedom, self.resamples, seed)

    @property
    def resamples(self) -> int:
        return int(self.draws.shape[0])

    def factors(self, run_ids: list) -> np.ndarray:
        """``(resamples + 1, len(run_ids))`` multipliers of each run's losses; row 0 is all ones.

        An entry may be a tuple of replicate runs, whose mean loss the row is: its multiplier is
        ``1 + sigma`` times the mean of their draws (a relative std of ``sigma / sqrt(k)`` for k replicates).
        """
        column = {run_id: i for i, run_id in enumerate(self.run_ids)}
        units = [(unit,) if isinstance(unit, str) else tuple(unit) for unit in run_ids]
        try:
            draws = np.stack([self.draws[:, [column[run_id] for run_id in unit]].mean(axis=1) for unit in units], axis=1) \
                if units else np.empty((self.resamples, 0))
        except KeyError as error:
            raise KeyError(f"run {error.args[0]!r} has no noise draws (not among the resampled runs)") from None
        sigma = self.relative_std if self.std_factors is None else self.relative_std * self.std_factors[:, None]
        return np.concatenate([np.ones((1, len(units))), 1 + sigma * draws])

    def losses(self, run_ids: list, losses: np.ndarray) -> np.ndarray:
        """``losses`` ``(runs, budgets)`` as measured (row 0) and in every resample: ``(resamples + 1, runs, budgets)``."""
        return self.factors(run_ids)[:, :, None] * np.asarray(losses, dtype=float)[None]

    def mean_losses(self, run_ids: list[str], losses: np.ndarray) -> np.ndarray:
        """Mean over runs (NaN ignored) of the resampled ``losses``: ``(resamples + 1, budgets)``."""
        resampled = self.losses(run_ids, losses)
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(resampled).sum(1)
            return np.where(counts > 0, np.nansum(resampled, 1) / np.maximum(counts, 1), np.nan)


def std_factors(degrees_of_freedom: float | None, resamples: int, seed: int) -> np.ndarray | None:
    """``sqrt(nu / chi2_nu)`` draws ``(resamples,)``: a standard deviation estimated on ``nu`` degrees of freedom,
    relative to its estimate (module docstring); None when ``nu`` is None (the std treated as known).
    Drawn from their own stream (``seed`` and a constant), so the per-run draws do not depend on them."""
    if degrees_of_freedom is None:
        return None
    rng = np.random.default_rng([int(seed), 0x5D])
    return np.sqrt(degrees_of_freedom / rng.chisquare(degrees_of_freedom, resamples))
