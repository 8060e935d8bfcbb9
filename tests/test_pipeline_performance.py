"""pipeline.performance: the grid's model FLOPs over its job seconds against the matmul rate, and the split of the
job seconds into training steps and validation passes, checked against sums computed here."""

from __future__ import annotations

import json

import pytest

from pipeline.performance import grid_performance, main

JOBS = [  # (members, training FLOPs, validation FLOPs, training seconds, validation seconds, job seconds)
    (17, 6.0e12, 1.5e12, 120.0, 30.0, 160.0),
    (15, 2.0e12, 0.5e12, 100.0, 10.0, 118.5),
]
MATMUL = {"flops_per_s": 1.0e11, "threads": 1}


def write_jobs(folder, *, with_validation_seconds: bool = True):
    jobs, benchmarks = [], []
    for i, (members, training, validation, train_s, validation_s, job_s) in enumerate(JOBS):
        record = {"members": [{"run_id": f"r{i}_{m}"} for m in range(members)], "steps": 10, "wall_time_s": train_s,
                  "model_flops": {"training": training, "validation": validation, "total": training + validation}}
        if with_validation_seconds:
            record["validation_wall_time_s"] = validation_s
        jobs.append(folder / f"job{i}.json")
        jobs[-1].write_text(json.dumps(record))
        benchmarks.append(folder / f"job{i}.tsv")
        benchmarks[-1].write_text(f"s\th:m:s\tmax_rss\n{job_s}\t0:00:00\t100\n")
    return jobs, benchmarks


def test_the_grid_and_its_parts_against_the_matmul_rate(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path)
    record = grid_performance(jobs, benchmarks, MATMUL)
    flops = sum(j[1] + j[2] for j in JOBS)
    seconds = sum(j[5] for j in JOBS)
    assert record["grid_model_flops"] == flops and record["grid_job_seconds"] == seconds
    assert record["grid_fraction_of_matmul"] == pytest.approx(flops / seconds / MATMUL["flops_per_s"])
    assert record["members_per_job"] == 16 and record["jobs"] == 2 and record["runs"] == 32
    training, validation = record["parts"]["training"], record["parts"]["validation"]
    assert training["seconds"] == 220.0 and validation["seconds"] == 40.0
    assert training["fraction_of_matmul"] == pytest.approx(8.0e12 / 220.0 / 1e11)
    assert validation["fraction_of_matmul"] == pytest.approx(2.0e12 / 40.0 / 1e11)


def test_job_records_without_validation_seconds_give_no_split(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path, with_validation_seconds=False)
    record = grid_performance(jobs, benchmarks, MATMUL)
    assert "parts" not in record and record["grid_job_seconds"] == sum(j[5] for j in JOBS)


def test_a_missing_benchmark_is_a_clear_error(tmp_path, capsys):
    jobs, benchmarks = write_jobs(tmp_path)
    matmul = tmp_path / "matmul.json"
    matmul.write_text(json.dumps(MATMUL))
    out = tmp_path / "performance.json"
    assert main(["grid", "--jobs", *map(str, jobs), "--benchmarks", str(benchmarks[0]), "--matmul", str(matmul),
                 "--out", str(out)]) == 2
    assert "need one benchmark file per job record" in capsys.readouterr().err and not out.exists()


def test_adding_up_the_jobs_and_collecting_the_runs_table_run_without_torch(tmp_path):
    """The grid's sums and the runs table read JSON and CSV only: their processes do not import torch (2 to 3 s of a
    pipeline step's start on a CPU); measuring the matmul rate does."""
    import subprocess
    import sys

    jobs, benchmarks = write_jobs(tmp_path)
    (tmp_path / "matmul.json").write_text(json.dumps(MATMUL))
    code = (
        "import sys\n"
        "import pipeline.collect\n"
        "from pipeline.performance import main\n"
        f"arguments = ['grid', '--jobs', *{[str(j) for j in jobs]!r}, '--benchmarks', *{[str(b) for b in benchmarks]!r},"
        f" '--matmul', {str(tmp_path / 'matmul.json')!r}, '--out', {str(tmp_path / 'grid.json')!r}]\n"
        "assert main(arguments) == 0\n"
        "print('torch' in sys.modules)\n"
        "import pipeline.performance\n"
        "pipeline.performance.measure_matmul(1, size=64, repeats=1)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "True"]
    assert json.loads((tmp_path / "grid.json").read_text())["grid_job_seconds"] == pytest.approx(sum(j[-1] for j in JOBS))
