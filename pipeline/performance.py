"""How much of the machine the training grid used: model FLOPs over job seconds, against the matmul rate.

``python -m pipeline.performance grid --jobs JOB.json ... --benchmarks DIR --out OUT.json`` adds up the
grid's training jobs: the model FLOPs each job's ``job.json`` records (``dit.engine``: the term-by-term
count of every matrix product of its training steps and validation passes), the seconds Snakemake's
benchmark file records for the job (the whole job, start-up included), and their ratio as a fraction of
the machine's float32 matmul rate: the median of the rates the jobs measured at their ends
(``dit.matmul_rate``, ``job.json``'s ``matmul``: at each job's threads, under the load its steps ran
under), so that the yardstick is taken over the grid's whole time, not at one moment. Keys
(``performance`` of the scorecard): ``grid_model_flops``, ``grid_job_seconds``, ``matmul_flops_per_s``,
``grid_fraction_of_matmul``, ``members_per_job`` (median); ``matmul`` gives the jobs' lowest and highest
rates beside the median. ``parts`` splits the jobs' time: ``training`` (the training steps: seconds from
each ``job.json``'s ``wall_time_s``, FLOPs from its ``model_flops.training``) and ``validation`` (the
validation passes: ``validation_wall_time_s``, ``model_flops.validation``), each with ``model_flops``,
``seconds`` and ``fraction_of_matmul``; the rest of the job seconds is start-up, data, checkpoints and
files. ``by_shape`` gives the same figures per model shape (width x depth, from ``job.json``'s
``model_config``), narrowest first: where the grid's fraction is lost.

A job whose record was written after a restart (``job.json``'s ``recorded_after_restart``: its process was
killed after its runs had finished and before its record, and a rerun wrote the record from the job's
final checkpoint) has Snakemake seconds of that rerun, not of its training: such jobs are left out of
every figure and counted in ``jobs_recorded_after_restart``. When no job is left that trained in its own
execution (a rerun of the grid whose runs had all finished), the record says ``status: not measured`` and why,
and the reports leave the figures out.

Refused before anything is written (exit status 2, the message naming the file): a job file or benchmark file
given twice, a ``job.json`` that is not a job record (``read_job``), a benchmark file whose seconds are missing or
not positive and finite, and an ``--out`` that is a folder, lies below a file or is one of the inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from dit.atomic import atomic_write_json, check_output_files, repeated_path
from dit.provenance import provenance
from pipeline.formats import benchmark_rows, read_json

#: What ``matmul`` of a job record gives beside its rate (``dit.matmul_rate.measure_matmul``).
MATMUL_KEYS = ("size", "threads", "repeats", "dtype", "device")


def job_seconds(benchmark_file: Path) -> float:
    """Wall seconds of one job from its Snakemake benchmark file (column ``s``, the last repeat); ``ValueError``
    naming the file when they are missing, not a number, or not positive and finite."""
    rows = benchmark_rows(benchmark_file)
    if not rows or rows[-1].get("s") in (None, "", "NA"):
        raise ValueError(f"{benchmark_file}: no seconds recorded")
    try:
        seconds = float(rows[-1]["s"])
    except ValueError:
        raise ValueError(f"{benchmark_file}: seconds (column s) {rows[-1]['s']!r} is not a number") from None
    if not 0 < seconds < math.inf:
        raise ValueError(f"{benchmark_file}: seconds (column s) must be positive and finite, got {rows[-1]['s']}")
    return seconds


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_job(path: Path) -> dict:
    """One job's ``job.json``; ``ValueError`` naming the file and the field when it is not JSON, not an object, or a
    field this module reads is missing or of the wrong kind."""
    job = read_json(path, f"job record {path}")
    if not isinstance(job, dict):
        raise ValueError(f"{path}: not a job record (a JSON object), got {json.dumps(job)[:40]}")

    def bad(field: str, expected: str) -> ValueError:
        return ValueError(f"{path}: {field} must be {expected}, got {job.get(field)!r}")

    if not isinstance(job.get("members"), list):
        raise bad("members", "a list of the job's runs")
    steps = job.get("steps")
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0):
        raise bad("steps", "a non-negative whole number")
    flops = job.get("model_flops")
    if not isinstance(flops, dict) or not _is_number(flops.get("total")) or not all(
            _is_number(flops[part]) for part in ("training", "validation") if part in flops):
        raise bad("model_flops", "an object of numbers (total, training, validation)")
    for field in ("wall_time_s", "validation_wall_time_s"):
        if field in job and not (_is_number(job[field]) and job[field] >= 0):
            raise bad(field, "a non-negative number of seconds")
    if "validation_wall_time_s" in job and "wall_time_s" not in job:
        raise bad("wall_time_s", "a non-negative number of seconds")
    matmul = job.get("matmul")
    if matmul and not (isinstance(matmul, dict) and _is_number(matmul.get("flops_per_s")) and matmul["flops_per_s"] > 0
                       and all(key in matmul for key in MATMUL_KEYS)):
        raise bad("matmul", f"an object with a positive flops_per_s and {', '.join(MATMUL_KEYS)}")
    config = job.get("model_config")
    if config and not (isinstance(config, dict) and all(
            isinstance(config.get(key), int) and not isinstance(config.get(key), bool) for key in ("width", "depth"))):
        raise bad("model_config", "an object with whole numbers width and depth")
    return job


def jobs_matmul(jobs: list[dict], job_files: list[Path]) -> dict:
    """The median, lowest and highest of the matmul rates the jobs measured (those that trained: a job whose
    runs had all finished before records none); ``ValueError`` naming a job that trained without one."""
    rates = []
    for job, path in zip(jobs, job_files):
        if job.get("matmul"):
            rates.append(job["matmul"])
        elif job.get("steps"):
            raise ValueError(f"{path}: no matmul rate recorded (a job record of older code): rerun the job")
    if not rates:
        raise ValueError("no job measured the matmul rate (none of them trained)")
    values = [float(rate["flops_per_s"]) for rate in rates]
    first = rates[0]
    return {"flops_per_s": statistics.median(values), "min_flops_per_s": min(values), "max_flops_per_s": max(values),
            "jobs": len(values), **{key: first[key] for key in MATMUL_KEYS},
            "source": "the median of the rates the grid's jobs measured at their ends (dit.matmul_rate)"}


def grid_performance(job_files: list[Path], benchmark_files: list[Path]) -> dict:
    """The grid's model FLOPs, job seconds and their ratio to the jobs' matmul rate (module docstring)."""
    if len(job_files) != len(benchmark_files) or not job_files:
        raise ValueError(f"need one benchmark file per job record, got {len(benchmark_files)} for {len(job_files)}")
    for files, what in ((job_files, "job file"), (benchmark_files, "benchmark file")):
        repeated = repeated_path(files)
        if repeated:
            raise ValueError(f"{repeated[0]}: {what} given twice (also as {repeated[1]}); each job counts once")
    jobs = [read_job(Path(path)) for path in job_files]
    timed = [i for i, job in enumerate(jobs) if not job.get("recorded_after_restart")]
    restarted = len(jobs) - len(timed)
    if not timed or not any(jobs[i].get("steps") for i in timed):
        reason = ("every job's record was written after a restart (its training had finished in an earlier process), "
                  "so no job's seconds are its training's" if not timed else
                  "no job trained in this execution (every run had finished already)")
        return {"status": "not measured", "reason": f"{reason}; train the grid again to measure",
                "jobs": len(jobs), "jobs_recorded_after_restart": restarted}
    jobs, job_files, benchmark_files = ([items[i] for i in timed] for items in (jobs, job_files, benchmark_files))
    matmul = jobs_matmul(jobs, job_files)
    flops = sum(float(job["model_flops"]["total"]) for job in jobs)
    each_job_seconds = [job_seconds(Path(path)) for path in benchmark_files]
    seconds = sum(each_job_seconds)
    rate = matmul["flops_per_s"]
    record = {
        "status": "measured",
        "grid_model_flops": flops,
        "grid_job_seconds": seconds,
        "matmul_flops_per_s": rate,
        "grid_fraction_of_matmul": flops / seconds / rate,
        "members_per_job": statistics.median(len(job["members"]) for job in jobs),
        "jobs": len(jobs),
        "jobs_recorded_after_restart": restarted,
        "runs": sum(len(job["members"]) for job in jobs),
        "matmul": matmul,
    }
    if all("validation_wall_time_s" in job for job in jobs):  # job records of older code lack the validation seconds
        record["parts"] = {part: _part(jobs, part, key, rate) for part, key in
                           (("training", "wall_time_s"), ("validation", "validation_wall_time_s"))}
    if all(job.get("model_config") for job in jobs):
        record["by_shape"] = _by_shape(jobs, each_job_seconds, rate)
    return record


def _by_shape(jobs: list[dict], seconds: list[float], rate: float) -> list[dict]:
    """Per model shape (width, depth): jobs, runs, model FLOPs, job seconds and their fraction of ``rate``, and the
    fraction of its training steps alone (``wall_time_s``, ``model_flops.training``); narrowest first."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, job in enumerate(jobs):
        shape = (int(job["model_config"]["width"]), int(job["model_config"]["depth"]))
        groups.setdefault(shape, []).append(index)
    out = []
    for (width, depth), indices in sorted(groups.items()):
        flops = sum(float(jobs[i]["model_flops"]["total"]) for i in indices)
        job_s = sum(seconds[i] for i in indices)
        training = _part([jobs[i] for i in indices], "training", "wall_time_s", rate)
        out.append({"width": width, "depth": depth, "jobs": len(indices), "runs": sum(len(jobs[i]["members"]) for i in indices),
                    "model_flops": flops, "job_seconds": job_s, "fraction_of_matmul": flops / job_s / rate if job_s > 0 else None,
                    "training_seconds": training["seconds"], "training_fraction_of_matmul": training["fraction_of_matmul"]})
    return out


def _part(jobs: list[dict], part: str, seconds_key: str, rate: float) -> dict:
    """One part of the jobs' time (training steps or validation passes): its model FLOPs, seconds, and their ratio
    to the matmul rate."""
    flops = sum(float(job["model_flops"][part]) for job in jobs)
    seconds = sum(float(job[seconds_key]) for job in jobs)
    return {"model_flops": flops, "seconds": seconds, "fraction_of_matmul": flops / seconds / rate if seconds > 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.performance", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("grid", help="the grid's model FLOPs over job seconds against the matmul rate")
    grid.add_argument("--jobs", nargs="+", required=True, type=Path, help="job.json of every grid job")
    grid.add_argument("--benchmarks", nargs="+", required=True, type=Path, help="each job's benchmark TSV, same order")
    grid.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        check_output_files([args.out], [*args.jobs, *args.benchmarks])
        record = grid_performance(args.jobs, args.benchmarks)
    except (OSError, ValueError, KeyError) as error:
        print(f"pipeline.performance: {error}", file=sys.stderr)
        return 2
    record["provenance"] = provenance({"jobs": [str(p) for p in args.jobs]})
    atomic_write_json(args.out, record)
    print(f"pipeline.performance {args.command}: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
