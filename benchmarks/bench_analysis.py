"""Benchmark: every fit plus 1000 bootstrap resamples on a grid of the default design's size.

Run as a script: ``.venv/bin/python benchmarks/bench_analysis.py [--resamples 1000] [--repeats 1]
[--runs results/runs.csv --config FIT.yaml]``, or under pytest-benchmark (the pipeline's bench stage):
``python -m pytest benchmarks/bench_analysis.py --benchmark-only --benchmark-json out.json``.

Design (``analysis.synthetic_runs`` defaults): 5 fitting sizes x 3 batch sizes x 4 learning rates x 6
milestones, 4 noise-floor seeds, 2 held-out sizes on the same grid, a diverged and a failed run.
Prints the wall time of ``analysis.laws_document.fit_laws`` (budget: 60 s on 2 cores), with ``--runs``
also on a real runs table (e.g. the smoke run's), and two same-process baselines with their
ratios: the loss law fitted from its few variable-projection starts against the earlier method's
64-start multi-start grid, on well-posed and on degenerate (``L_inf`` on its bound)
data; and the vectorised bootstrap refit against warm-started scipy L-BFGS-B refits one by one.
Under pytest also ``analysis.compare``'s run-by-run comparison of the committed runs table against a nudged
copy, beside the former mask-per-run comparison (same process, medians of 5).
Machine metadata (Python, numpy, scipy, cores, BLAS threads before and after
``analysis.blas.limit_openblas_threads``, git commit) is printed with the result.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy
from scipy.optimize import nnls

from analysis.blas import one_openblas_thread
from analysis.compare import LOSS_COLUMNS, _read_runs, compare_runs
from analysis.config import config_from_dict, load_config
from analysis.fitter import batched_refit, fit_law, refit
from analysis.law_forms import LOSS_LAW
from analysis.laws_document import fit_laws
from analysis.runs import RunsTable, load_runs
from analysis.synthetic_runs import SyntheticDesign, synthetic_runs
from dit.provenance import code_version

#: OPENBLAS_NUM_THREADS as the caller set it (the fits set 1; Snakemake sets a rule's threads).
CALLER_OPENBLAS_THREADS = os.environ.get("OPENBLAS_NUM_THREADS")

BUDGET_SECONDS = 60.0
COMMITTED_RUNS = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture(autouse=True, scope="module")
def _one_openblas_thread():
    """The fits run with one OpenBLAS thread, as the pipeline's fit rules do; nothing is set on import, and the
    caller's setting (environment and loaded libraries) comes back after this module's benchmarks."""
    with one_openblas_thread():
        yield


def metadata() -> dict:
    """Machine and run context; the model-shape keys every benchmark records are None here (no model runs)."""
    return {
        "torch": _installed_version("torch"),  # installed, not imported: analysis never imports torch
        "dtype": "float64",
        "threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "device": "cpu",
        "batch_clips": None,
        "clip_shape": None,
        "attention_resolved": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "openblas_threads_caller": CALLER_OPENBLAS_THREADS,
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "commit": code_version()["commit"],
        "machine": platform.machine(),
    }


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def time_full_fit(table: RunsTable, resamples: int, repeats: int) -> tuple[list[float], dict]:
    design = SyntheticDesign()
    config = config_from_dict({"heldout_sizes": design.heldout_sizes, "bootstrap_resamples": resamples, "seed": 0})
    times, document = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        document = fit_laws(table, config)
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


def dense_loss_starts(inputs, observed) -> list[np.ndarray]:
    """The earlier method's 64 starts: a 4 x 4 x 4 grid over (alpha, beta, L_inf fraction), (a', b') by NNLS."""
    log_x = LOSS_LAW.log_inputs(inputs, LOSS_LAW.reference_scales(inputs))
    starts = []
    for alpha in (0.1, 0.3, 0.6, 1.0):
        for beta in (0.1, 0.3, 0.6, 1.0):
            for fraction in (0.0, 0.5, 0.8, 0.95):
                floor = fraction * observed.min()
                design = np.stack([np.exp(-alpha * log_x["T"]), np.exp(-beta * log_x["N"])], axis=1)
                coefficients = np.maximum(nnls(design, observed - floor)[0], 1e-6 * observed.min())
                starts.append(np.array([np.log(coefficients[0]), alpha, np.log(coefficients[1]), beta, floor]))
    return starts


def loss_law_cases() -> dict:
    """Well-posed (default design's 5 x 6 optima) and degenerate (3 x 3 points, L_inf ends on its bound) loss-law data."""
    rng = np.random.default_rng(0)
    n = np.repeat([8e-6, 1.8e-5, 3.3e-5, 6.6e-5, 1.5e-4], 6)
    t = np.tile([5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], 5)
    well = LOSS_LAW.predict({"a": 0.02, "alpha": 0.28, "b": 0.0025, "beta": 0.32, "L_inf": 0.3}, N=n, T=t)
    n_small = np.repeat([8.192e-6, 1.8432e-5, 3.2768e-5], 3)
    t_small = np.tile([8.192e-6, 1.6384e-5, 3.2768e-5], 3)
    degenerate = LOSS_LAW.predict({"a": 0.01, "alpha": 0.5, "b": 0.02, "beta": 0.3, "L_inf": -0.3}, N=n_small, T=t_small)
    return {
        "well_posed": ({"N": n, "T": t}, well * (1 + 3e-4 * rng.standard_normal(well.size))),
        "degenerate": ({"N": n_small, "T": t_small}, degenerate * (1 + 4e-3 * rng.standard_normal(degenerate.size))),
    }


def time_loss_law_fits(repeats: int = 1) -> dict:
    """Loss-law fit from the variable-projection starts vs the dense multi-start baseline (same process, median of repeats)."""
    result = {}
    for name, (inputs, observed) in loss_law_cases().items():
        dense = dense_loss_starts(inputs, observed)
        timings = {"projected": [], "dense": []}
        for _ in range(repeats):
            begin = time.perf_counter()
            fast = fit_law(LOSS_LAW, inputs, observed, delta=1e-3)
            timings["projected"].append(time.perf_counter() - begin)
            begin = time.perf_counter()
            slow = fit_law(LOSS_LAW, inputs, observed, delta=1e-3, extra_starts=dense)
            timings["dense"].append(time.perf_counter() - begin)
        projected, baseline = statistics.median(timings["projected"]), statistics.median(timings["dense"])
        result[name] = {"projected_s": projected, "dense_s": baseline, "speedup": baseline / projected,
                        "starts": fast.starts, "dense_starts": slow.starts, "objective": fast.objective,
                        "dense_objective": slow.objective, "on_bound": fast.on_bound}
    return result


# ---------------------------------------------------------------------------------------------- pytest-benchmark
def test_fit_laws_with_1000_bootstrap_resamples(benchmark):
    """All fits + 1000 resamples on the default design (budget 60 s on 2 cores; reported, not asserted)."""
    table = RunsTable.from_frame(synthetic_runs(), source="synthetic default design")
    design = SyntheticDesign()
    config = config_from_dict({"heldout_sizes": design.heldout_sizes, "bootstrap_resamples": 1000, "seed": 0})
    document = benchmark.pedantic(fit_laws, args=(table, config), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(metadata())
    benchmark.extra_info["budget_seconds"] = BUDGET_SECONDS
    benchmark.extra_info["usable_resamples"] = {n: law.get("bootstrap", {}).get("usable") for n, law in document["laws"].items()}
    assert document["laws"]["loss_optimal"]["status"] == "fitted"


def test_vectorised_refit_against_scipy_refits(benchmark):
    """Speed-up of the vectorised bootstrap refit over warm-started scipy refits (same process; medians of 5 rounds)."""
    rounds = []
    benchmark.pedantic(lambda: rounds.append(time_refits(1000)), rounds=5, iterations=1, warmup_rounds=0)
    result = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    benchmark.extra_info.update(metadata())
    benchmark.extra_info.update({k: float(v) for k, v in result.items()}, rounds=len(rounds))
    print(f"vectorised refit speed-up over scipy one by one: x{result['speedup']:.1f}")


def test_loss_law_fit_against_dense_multistart(benchmark):
    """Speed-up of the variable-projection starts over a dense multi-start grid, same optimum (same process;
    the two timed in turns, medians of 5)."""
    result = benchmark.pedantic(time_loss_law_fits, kwargs={"repeats": 5}, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(metadata())
    for name, record in result.items():
        benchmark.extra_info[name] = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in record.items()}
        print(f"loss-law fit, {name}: x{record['speedup']:.1f} faster than the dense multi-start")
        assert record["objective"] <= record["dense_objective"] * (1 + 1e-6) + 1e-9


def _compare_runs_mask_per_run(runs_a, runs_b, tolerance) -> list[str]:
    """The former ``analysis.compare.compare_runs`` (commit d96bd5e): a boolean mask over the whole table per run.
    The statuses only, for the benchmark's baseline."""
    def relative(a, b):
        first = pd.to_numeric(a.replace("", None)).to_numpy(float)
        second = pd.to_numeric(b.replace("", None)).to_numpy(float)
        differences = abs(first - second) / abs(second)
        differences = differences[~pd.isna(differences)]
        return float(differences.max()) if differences.size else 0.0

    statuses = []
    ids_a, ids_b = set(runs_a["run_id"]), set(runs_b["run_id"])
    for run_id in sorted(ids_a | ids_b):
        if run_id not in ids_b or run_id not in ids_a:
            statuses.append("only in A" if run_id in ids_a else "only in B")
            continue
        a = runs_a[runs_a["run_id"] == run_id].set_index("milestone_tokens").sort_index()
        b = runs_b[runs_b["run_id"] == run_id].set_index("milestone_tokens").sort_index()
        # Index.equals, not list equality: milestones are read as numbers, and a run that diverged before its first
        # milestone has a NaN one, which equals itself only there
        if set(a["status"]) != set(b["status"]) or not a.index.equals(b.index):
            statuses.append("status differs")
            continue
        validation = relative(a["validation_loss"], b["validation_loss"])
        relative(a["train_loss"], b["train_loss"])
        if all(a[c].equals(b[c]) for c in LOSS_COLUMNS):
            statuses.append("identical")
        else:
            statuses.append("within noise" if tolerance is not None and validation <= tolerance else "beyond noise")
    return statuses


def test_compare_runs_against_a_mask_per_run(benchmark):
    """``analysis.compare`` of the committed runs table against a copy with every loss nudged (every run shared,
    the case of two regenerations of one default) against the former mask-per-run comparison, timed in turns in
    one process (medians of 5); both must give the same statuses."""
    runs_a = _read_runs(COMMITTED_RUNS)
    runs_b = runs_a.copy()
    for column in LOSS_COLUMNS:
        numbers = pd.to_numeric(runs_b[column].replace("", None))
        runs_b[column] = [repr(v * (1 + 1e-4)) if v == v else "" for v in numbers]
    timings = {"one_pass": [], "mask_per_run": []}

    def round_():
        begin = time.perf_counter()
        fast = compare_runs(runs_a, runs_b, 0.01)
        timings["one_pass"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        slow = _compare_runs_mask_per_run(runs_a, runs_b, 0.01)
        timings["mask_per_run"].append(time.perf_counter() - begin)
        assert [run.status for run in fast] == slow

    benchmark.pedantic(round_, rounds=5, iterations=1, warmup_rounds=1)
    one_pass, mask = statistics.median(timings["one_pass"]), statistics.median(timings["mask_per_run"])
    benchmark.extra_info.update(metadata())
    benchmark.extra_info.update({"runs": int(runs_a["run_id"].nunique()), "rows": len(runs_a),
                                 "one_pass_s": one_pass, "mask_per_run_s": mask, "speedup": mask / one_pass})
    print(f"compare_runs on {runs_a['run_id'].nunique()} shared runs: {one_pass * 1e3:.0f} ms, "
          f"mask per run {mask * 1e3:.0f} ms (x{mask / one_pass:.1f})")


def main() -> None:
    with one_openblas_thread():
        _main()


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--runs", help="also time fit_laws on this runs table (e.g. work/smoke/results/runs.csv)")
    parser.add_argument("--config", help="fit config for --runs (e.g. work/smoke/analysis/fit.yaml)")
    args = parser.parse_args()
    table = RunsTable.from_frame(synthetic_runs(), source="synthetic default design")
    runs = table.runs()
    print(f"design: {len(table.rows)} rows, {len(runs)} runs ({(runs['status'] == 'completed').sum()} completed)")
    times, document = time_full_fit(table, args.resamples, args.repeats)
    median = statistics.median(times)
    print(f"fit_laws with {args.resamples} bootstrap resamples: median {median:.2f} s over {len(times)} run(s) "
          f"(min {min(times):.2f}, max {max(times):.2f}); budget {BUDGET_SECONDS:.0f} s: "
          f"{'within' if median <= BUDGET_SECONDS else 'OVER'} ({median / BUDGET_SECONDS:.2f} of the budget)")
    usable = {name: law.get("bootstrap", {}).get("usable") for name, law in document["laws"].items()}
    print(f"usable bootstrap refits per law: {usable}")
    if args.runs:
        real = load_runs(args.runs)
        config = load_config(args.config)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fit_laws(real, config)
            times.append(time.perf_counter() - start)
        print(f"fit_laws on {args.runs} ({config.bootstrap_resamples} resamples): median {statistics.median(times):.2f} s "
              f"over {len(times)} run(s)")
    for name, record in time_loss_law_fits().items():
        print(f"loss-law fit, {name} data: {record['starts']} projected starts {record['projected_s'] * 1e3:.0f} ms vs "
              f"{record['dense_starts']} dense starts {record['dense_s'] * 1e3:.0f} ms: speed-up x{record['speedup']:.1f}; "
              f"objective {record['objective']:.6g} vs {record['dense_objective']:.6g}"
              + (f"; on bound: {', '.join(record['on_bound'])}" if record["on_bound"] else ""))
    refits = time_refits(args.resamples)
    print(f"loss-law refits, {args.resamples} resamples: scipy L-BFGS-B one by one {refits['scipy_extrapolated_s']:.2f} s "
          f"(extrapolated from 50), vectorised {refits['vectorised_s']:.3f} s: speed-up x{refits['speedup']:.1f}")
    print("machine: " + json.dumps(metadata()))


if __name__ == "__main__":
    main()
