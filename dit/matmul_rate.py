"""This CPU's float32 matrix-multiply rate, the yardstick of a job's model FLOP/s.

``measure_matmul(threads)``: the median over ``repeats`` of ``torch.mm`` on two ``size x size`` float32
matrices (``2 size^3`` FLOPs a call) at ``threads`` threads, after one untimed call. A training job
measures it at its end (``dit.engine``, ``job.json``'s ``matmul``), in the conditions its steps ran in
(the job's threads, the same machine load), and ``pipeline.performance`` divides the grid's model FLOP/s
by the median of its jobs' rates.
"""

from __future__ import annotations

import statistics
import time

import torch

MATMUL_SIZE = 1024
MATMUL_REPEATS = 7


def measure_matmul(threads: int, size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> dict:
    """Median float32 ``torch.mm`` FLOP/s on this machine's CPU at ``threads`` threads (module docstring)."""
    if threads < 1 or size < 1 or repeats < 1:
        raise ValueError(f"threads, size and repeats must be at least 1, got {threads}, {size}, {repeats}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(size, size, generator=generator) for _ in range(2))
        torch.mm(a, b)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    median = statistics.median(seconds)
    return {"flops_per_s": 2 * size**3 / median, "size": size, "threads": threads, "repeats": repeats,
            "median_seconds": median, "dtype": "float32", "device": "cpu"}
