"""Benchmark: every fit plus 1000 bootstrap resamples on a grid of the default design's size.

Run as a script: ``.venv/bin/python benchmarks/bench_analysis.py [--resamples 1000] [--repeats 1]``,
or under pytest-benchmark (the pipeline's bench stage):
``python -m pytest benchmarks/bench_analysis.py --benchmark-only --benchmark-json out.json``.

Design (``analysis.synthetic`` defaults): 5 fitting sizes x 3 batch sizes x 4 learning rates x 6
milestones, 4 noise-floor seeds, 2 held-out sizes on the same grid, a diverged and a failed run.
Prints the wall time of ``analysis.pipeline.fit_all`` (budget: 60 s on 2 cores) and, as a
same-process baseline, the time of refitting the loss law resample by resample with warm-started
scipy L-BFGS-B against the vectorised refit the pipeline uses (the ratio is the speed-up).
Machine metadata (Python, numpy, scipy, cores, BLAS threads, git commit) is printed with the result.
"""

from __future__ import annotations

import analysis  # noqa: F401  (one OpenBLAS thread, set before numpy loads)

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import scipy

from dit.provenance import code_version

from analysis.config import config_from_dict
from analysis.fitting import batched_refit, fit_law, refit
from analysis.laws import LOSS_LAW
from analysis.pipeline import fit_all
from analysis.runs import RunsTable
from analysis.synthetic import SyntheticDesign, synthetic_runs

BUDGET_SECONDS = 60.0


def metadata() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "commit": code_version()["commit"],
        "machine": platform.machine(),
    }


def time_full_fit(table: RunsTable, resamples: int, repeats: int) -> tuple[list[float], dict]:
    design = SyntheticDesign()
    config = config_from_dict({"heldout_sizes": design.heldout_sizes, "bootstrap_resamples": resamples, "seed": 0})
    times, document = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        document = fit_all(table, config)
        times.append(time.perf_counter() - start)
    return times, document


def time_refits(resamples: int, scipy_samples: int = 50) -> dict:
    """Per-resample scipy refits (baseline) vs the vectorised refit, for the loss law on a 5 x 6 design."""
    rng = np.random.default_rng(0)
    n = np.repeat([8e-6, 1.8e-5, 3.3e-5, 6.6e-5, 1.5e-4], 6)
    t = np.tile([5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], 5)
    truth = {"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}
    base = LOSS_LAW.predict(truth, N=n, T=t)
    start = fit_law(LOSS_LAW, {"N": n, "T": t}, base * (1 + 1e-4 * rng.standard_normal(base.size)), delta=1e-3)
    observed = base[None, :] * (1 + 2e-4 * rng.standard_normal((resamples, base.size)))
    begin = time.perf_counter()
    for r in range(scipy_samples):
        refit(LOSS_LAW, {"N": n, "T": t}, observed[r], 1e-3, start)
    per_resample_scipy = (time.perf_counter() - begin) / scipy_samples
    begin = time.perf_counter()
    batched_refit(LOSS_LAW, {"N": n, "T": t}, observed, 1e-3, start)
    batched = time.perf_counter() - begin
    return {
        "scipy_per_resample_s": per_resample_scipy,
        "scipy_extrapolated_s": per_resample_scipy * resamples,
        "vectorised_s": batched,
        "speedup": per_resample_scipy * resamples / batched,
    }


# ---------------------------------------------------------------------------------------------- pytest-benchmark
def test_fit_all_with_1000_bootstrap_resamples(benchmark):
    """All fits + 1000 resamples on the default design (budget 60 s on 2 cores; reported, not asserted)."""
    table = RunsTable.from_frame(synthetic_runs(), source="synthetic default design")
    design = SyntheticDesign()
    config = config_from_dict({"heldout_sizes": design.heldout_sizes, "bootstrap_resamples": 1000, "seed": 0})
    document = benchmark.pedantic(fit_all, args=(table, config), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(metadata())
    benchmark.extra_info["budget_seconds"] = BUDGET_SECONDS
    benchmark.extra_info["usable_resamples"] = {n: law.get("bootstrap", {}).get("usable") for n, law in document["laws"].items()}
    assert document["laws"]["loss_optimal"]["status"] == "fitted"


def test_vectorised_refit_against_scipy_refits(benchmark):
    """Speed-up of the vectorised bootstrap refit over warm-started scipy refits (same process)."""
    result = benchmark.pedantic(time_refits, args=(1000,), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({k: float(v) for k, v in result.items()})
    print(f"vectorised refit speed-up over scipy one by one: x{result['speedup']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    table = RunsTable.from_frame(synthetic_runs(), source="synthetic default design")
    runs = table.runs()
    print(f"design: {len(table.rows)} rows, {len(runs)} runs ({(runs['status'] == 'completed').sum()} completed)")
    times, document = time_full_fit(table, args.resamples, args.repeats)
    median = statistics.median(times)
    print(f"fit_all with {args.resamples} bootstrap resamples: median {median:.2f} s over {len(times)} run(s) "
          f"(min {min(times):.2f}, max {max(times):.2f}); budget {BUDGET_SECONDS:.0f} s: "
          f"{'within' if median <= BUDGET_SECONDS else 'OVER'} ({median / BUDGET_SECONDS:.2f} of the budget)")
    usable = {name: law.get("bootstrap", {}).get("usable") for name, law in document["laws"].items()}
    print(f"usable bootstrap refits per law: {usable}")
    refits = time_refits(args.resamples)
    print(f"loss-law refits, {args.resamples} resamples: scipy L-BFGS-B one by one {refits['scipy_extrapolated_s']:.2f} s "
          f"(extrapolated from 50), vectorised {refits['vectorised_s']:.3f} s: speed-up x{refits['speedup']:.1f}")
    print("machine: " + json.dumps(metadata()))


if __name__ == "__main__":
    main()
