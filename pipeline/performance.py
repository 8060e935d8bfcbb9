"""How much of the machine the training grid used: model FLOPs over job seconds, against the matmul rate.

``python -m pipeline.performance matmul --threads T --out MATMUL.json`` measures this machine's float32
matrix-multiply rate at ``T`` threads (the threads one training job gets): the median over repeats of
``torch.mm`` on two ``size x size`` matrices, ``2 size^3`` FLOPs a call.

``python -m pipeline.performance grid --jobs JOB.json ... --benchmarks DIR --matmul MATMUL.json --out OUT.json``
adds up the grid's training jobs: the model FLOPs each job's ``job.json`` records (``dit.engine``: the
term-by-term count of every matrix product of its training steps and validation passes), the seconds
Snakemake's benchmark file records for the job (the whole job, start-up included), and their ratio as
a fraction of the measured matmul rate. Keys (``performance`` of the scorecard): ``grid_model_flops``,
``grid_job_seconds``, ``matmul_flops_per_s``, ``grid_fraction_of_matmul``, ``members_per_job`` (median).
``parts`` splits the jobs' time: ``training`` (the training steps: seconds from each ``job.json``'s
``wall_time_s``, FLOPs from its ``model_flops.training``) and ``validation`` (the validation passes:
``validation_wall_time_s``, ``model_flops.validation``), each with ``model_flops``, ``seconds`` and
``fraction_of_matmul``; the rest of the job seconds is start-up, data, checkpoints and files.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

from dit.atomic import atomic_write_json
from dit.provenance import provenance

MATMUL_SIZE = 1024


def measure_matmul(threads: int, size: int = MATMUL_SIZE, repeats: int = 15) -> dict:
    """Median float32 ``torch.mm`` FLOP/s on this machine's CPU at ``threads`` threads."""
    import torch  # here, not at the top: adding up the job records (``grid``) needs no torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(size, size, generator=generator) for _ in range(2))
        for _ in range(3):
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


def job_seconds(benchmark_file: Path) -> float:
    """Wall seconds of one job from its Snakemake benchmark file (column ``s``, the last repeat)."""
    with open(benchmark_file) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or rows[-1].get("s") in (None, "", "NA"):
        raise ValueError(f"{benchmark_file}: no seconds recorded")
    return float(rows[-1]["s"])


def grid_performance(job_files: list[Path], benchmark_files: list[Path], matmul: dict) -> dict:
    """The grid's model FLOPs, job seconds and their ratio to the matmul rate (module docstring)."""
    if len(job_files) != len(benchmark_files) or not job_files:
        raise ValueError(f"need one benchmark file per job record, got {len(benchmark_files)} for {len(job_files)}")
    jobs = [json.loads(Path(path).read_text()) for path in job_files]
    flops = sum(float(job["model_flops"]["total"]) for job in jobs)
    seconds = sum(job_seconds(Path(path)) for path in benchmark_files)
    rate = float(matmul["flops_per_s"])
    record = {
        "grid_model_flops": flops,
        "grid_job_seconds": seconds,
        "matmul_flops_per_s": rate,
        "grid_fraction_of_matmul": flops / seconds / rate,
        "members_per_job": statistics.median(len(job["members"]) for job in jobs),
        "jobs": len(jobs),
        "runs": sum(len(job["members"]) for job in jobs),
        "matmul": matmul,
    }
    if all("validation_wall_time_s" in job for job in jobs):  # job records of older code lack the validation seconds
        record["parts"] = {part: _part(jobs, part, key, rate) for part, key in
                           (("training", "wall_time_s"), ("validation", "validation_wall_time_s"))}
    return record


def _part(jobs: list[dict], part: str, seconds_key: str, rate: float) -> dict:
    """One part of the jobs' time (training steps or validation passes): its model FLOPs, seconds, and their ratio
    to the matmul rate."""
    flops = sum(float(job["model_flops"][part]) for job in jobs)
    seconds = sum(float(job[seconds_key]) for job in jobs)
    return {"model_flops": flops, "seconds": seconds, "fraction_of_matmul": flops / seconds / rate if seconds > 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.performance", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    matmul = commands.add_parser("matmul", help="measure the float32 matmul rate")
    matmul.add_argument("--threads", type=int, default=1)
    matmul.add_argument("--out", required=True, type=Path)
    grid = commands.add_parser("grid", help="the grid's model FLOPs over job seconds against the matmul rate")
    grid.add_argument("--jobs", nargs="+", required=True, type=Path, help="job.json of every grid job")
    grid.add_argument("--benchmarks", nargs="+", required=True, type=Path, help="each job's benchmark TSV, same order")
    grid.add_argument("--matmul", required=True, type=Path)
    grid.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "matmul":
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            record = measure_matmul(args.threads)
            settings = {"threads": args.threads}
        else:
            record = grid_performance(args.jobs, args.benchmarks, json.loads(args.matmul.read_text()))
            settings = {"jobs": [str(p) for p in args.jobs], "matmul": str(args.matmul)}
    except (OSError, ValueError, KeyError) as error:
        print(f"pipeline.performance: {error}", file=sys.stderr)
        return 2
    record["provenance"] = provenance(settings)
    atomic_write_json(args.out, record)
    print(f"pipeline.performance {args.command}: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
