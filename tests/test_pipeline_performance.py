"""pipeline.performance: the grid's model FLOPs over its job seconds against the median of the matmul rates its
jobs measured, and the split of the job seconds into training steps and validation passes, checked against sums
computed here; dit.matmul_rate's measurement itself."""

from __future__ import annotations

import json
import statistics

import pytest

from dit.matmul_rate import measure_matmul
from pipeline.performance import grid_performance, main

JOBS = [  # (members, training FLOPs, validation FLOPs, training seconds, validation seconds, job seconds, matmul FLOP/s)
    (17, 6.0e12, 1.5e12, 120.0, 30.0, 160.0, 0.9e11),
    (15, 2.0e12, 0.5e12, 100.0, 10.0, 118.5, 1.0e11),
    (15, 1.0e12, 0.5e12, 50.0, 10.0, 70.0, 1.3e11),
]
MEDIAN_RATE = 1.0e11


def matmul(rate: float) -> dict:
    return {"flops_per_s": rate, "size": 1024, "threads": 1, "repeats": 7, "dtype": "float32", "device": "cpu"}


SHAPES = [(24, 1), (96, 2), (24, 1)]  # each job's (width, depth)


def write_jobs(folder, *, with_validation_seconds: bool = True, rates=True):
    jobs, benchmarks = [], []
    for i, (members, training, validation, train_s, validation_s, job_s, rate) in enumerate(JOBS):
        record = {"members": [{"run_id": f"r{i}_{m}"} for m in range(members)], "steps": 10, "wall_time_s": train_s,
                  "model_flops": {"training": training, "validation": validation, "total": training + validation},
                  "model_config": {"width": SHAPES[i][0], "depth": SHAPES[i][1], "heads": 1}}
        if with_validation_seconds:
            record["validation_wall_time_s"] = validation_s
        if rates:
            record["matmul"] = matmul(rate)
        jobs.append(folder / f"job{i}.json")
        jobs[-1].write_text(json.dumps(record))
        benchmarks.append(folder / f"job{i}.tsv")
        benchmarks[-1].write_text(f"s\th:m:s\tmax_rss\n{job_s}\t0:00:00\t100\n")
    return jobs, benchmarks


def test_the_grid_and_its_parts_against_the_median_of_the_jobs_matmul_rates(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path)
    record = grid_performance(jobs, benchmarks)
    flops = sum(j[1] + j[2] for j in JOBS)
    seconds = sum(j[5] for j in JOBS)
    rate = statistics.median(j[6] for j in JOBS)
    assert rate == MEDIAN_RATE and record["matmul_flops_per_s"] == rate
    assert record["matmul"]["min_flops_per_s"] == 0.9e11 and record["matmul"]["max_flops_per_s"] == 1.3e11
    assert record["matmul"]["jobs"] == 3 and record["matmul"]["size"] == 1024
    assert record["grid_model_flops"] == flops and record["grid_job_seconds"] == seconds
    assert record["grid_fraction_of_matmul"] == pytest.approx(flops / seconds / rate)
    assert record["members_per_job"] == 15 and record["jobs"] == 3 and record["runs"] == 47
    training, validation = record["parts"]["training"], record["parts"]["validation"]
    assert training["seconds"] == 270.0 and validation["seconds"] == 50.0
    assert training["fraction_of_matmul"] == pytest.approx(9.0e12 / 270.0 / rate)
    assert validation["fraction_of_matmul"] == pytest.approx(2.5e12 / 50.0 / rate)


def test_the_fraction_per_model_shape_against_sums_over_its_jobs(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path)
    shapes = grid_performance(jobs, benchmarks)["by_shape"]
    assert [(s["width"], s["depth"], s["jobs"], s["runs"]) for s in shapes] == [(24, 1, 2, 32), (96, 2, 1, 15)]
    narrow = [j for j, shape in zip(JOBS, SHAPES) if shape == (24, 1)]
    flops, seconds = sum(j[1] + j[2] for j in narrow), sum(j[5] for j in narrow)
    assert shapes[0]["model_flops"] == flops and shapes[0]["job_seconds"] == seconds
    assert shapes[0]["fraction_of_matmul"] == pytest.approx(flops / seconds / MEDIAN_RATE)
    assert shapes[0]["training_fraction_of_matmul"] == pytest.approx(sum(j[1] for j in narrow) / sum(j[3] for j in narrow) / MEDIAN_RATE)
    assert shapes[1]["fraction_of_matmul"] == pytest.approx(2.5e12 / 118.5 / MEDIAN_RATE)


def test_a_job_that_trained_nothing_is_counted_without_a_rate(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path)
    record = json.loads(jobs[2].read_text())
    record.update(steps=0, matmul=None, model_flops={"training": 0.0, "validation": 0.0, "total": 0.0}, wall_time_s=0.0,
                  validation_wall_time_s=0.0)
    jobs[2].write_text(json.dumps(record))
    out = grid_performance(jobs, benchmarks)
    assert out["matmul"]["jobs"] == 2 and out["matmul_flops_per_s"] == statistics.median([0.9e11, 1.0e11])


def test_a_job_recorded_after_a_restart_is_left_out_of_every_figure(tmp_path):
    """Its Snakemake seconds are those of the rerun that wrote its record, not of its training."""
    jobs, benchmarks = write_jobs(tmp_path)
    record = json.loads(jobs[0].read_text())
    jobs[0].write_text(json.dumps({**record, "recorded_after_restart": True}))
    benchmarks[0].write_text("s\th:m:s\tmax_rss\n3.5\t0:00:03\t100\n")
    out = grid_performance(jobs, benchmarks)
    kept = JOBS[1:]
    flops, seconds = sum(j[1] + j[2] for j in kept), sum(j[5] for j in kept)
    rate = statistics.median(j[6] for j in kept)
    assert out["jobs"] == 2 and out["jobs_recorded_after_restart"] == 1 and out["runs"] == 30
    assert out["grid_model_flops"] == flops and out["grid_job_seconds"] == seconds and out["matmul_flops_per_s"] == rate
    assert out["grid_fraction_of_matmul"] == pytest.approx(flops / seconds / rate)
    assert sum(shape["jobs"] for shape in out["by_shape"]) == 2
    for path in jobs[1:]:
        path.write_text(json.dumps({**json.loads(path.read_text()), "recorded_after_restart": True}))
    out = grid_performance(jobs, benchmarks)  # a rerun of a grid whose runs had all finished: nothing to measure
    assert out["status"] == "not measured" and "every job's record was written after a restart" in out["reason"]
    assert out["jobs"] == 3 and out["jobs_recorded_after_restart"] == 3 and "grid_model_flops" not in out


def test_a_grid_that_trained_nothing_is_not_measured(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path)
    for path in jobs:
        record = json.loads(path.read_text())
        record.update(steps=0, matmul=None, model_flops={"training": 0.0, "validation": 0.0, "total": 0.0})
        path.write_text(json.dumps(record))
    out = grid_performance(jobs, benchmarks)
    assert out["status"] == "not measured" and "no job trained" in out["reason"]


def test_a_job_record_without_a_rate_is_a_clear_error(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path, rates=False)
    with pytest.raises(ValueError, match=r"job0.json: no matmul rate recorded .*rerun the job"):
        grid_performance(jobs, benchmarks)


def test_job_records_without_validation_seconds_give_no_split(tmp_path):
    jobs, benchmarks = write_jobs(tmp_path, with_validation_seconds=False)
    record = grid_performance(jobs, benchmarks)
    assert "parts" not in record and record["grid_job_seconds"] == sum(j[5] for j in JOBS)


def test_a_missing_benchmark_is_a_clear_error(tmp_path, capsys):
    jobs, benchmarks = write_jobs(tmp_path)
    out = tmp_path / "performance.json"
    assert main(["grid", "--jobs", *map(str, jobs), "--benchmarks", str(benchmarks[0]), "--out", str(out)]) == 2
    assert "need one benchmark file per job record" in capsys.readouterr().err and not out.exists()


def test_the_matmul_measurement_times_its_products_and_restores_the_threads():
    import torch

    before = torch.get_num_threads()
    record = measure_matmul(1, size=64, repeats=3)
    assert torch.get_num_threads() == before
    assert record["flops_per_s"] == pytest.approx(2 * 64**3 / record["median_seconds"])
    assert (record["size"], record["threads"], record["repeats"], record["dtype"]) == (64, 1, 3, "float32")
    with pytest.raises(ValueError, match="at least 1"):
        measure_matmul(0)


def test_adding_up_the_jobs_and_collecting_the_runs_table_run_without_torch(tmp_path):
    """The grid's sums and the runs table read JSON and CSV only: their processes do not import torch (2 to 3 s of a
    pipeline step's start on a CPU)."""
    import subprocess
    import sys

    jobs, benchmarks = write_jobs(tmp_path)
    code = (
        "import sys\n"
        "import pipeline.collect\n"
        "from pipeline.performance import main\n"
        f"arguments = ['grid', '--jobs', *{[str(j) for j in jobs]!r}, '--benchmarks', *{[str(b) for b in benchmarks]!r},"
        f" '--out', {str(tmp_path / 'grid.json')!r}]\n"
        "assert main(arguments) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False"]
    assert json.loads((tmp_path / "grid.json").read_text())["grid_job_seconds"] == pytest.approx(sum(j[5] for j in JOBS))
