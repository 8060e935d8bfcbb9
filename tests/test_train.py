"""The training engine: exact resume after SIGKILL, SIGTERM and SIGUSR1 preemption, micro-batch and
multi-process equivalence, divergence at any step (above the threshold, non-finite training or
validation loss), config errors (also a device, attention backend or data split this machine or folder
lacks), checkpoints of another config and spent ones, a job record written on the rerun of a job killed
before it, temporary files of a killed checkpoint write, --quiet, and the run folder's records.

The uninterrupted reference is the suite's tiny run (``tiny_run``, tests/conftest.py): interrupted and
split runs of the same config must reproduce its numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from dit.allocator import retain_freed_memory, user_chose_malloc_settings
from dit.config import ConfigError, config_from_dict
from dit.flops import paper_flops_per_token
from dit.sizes import get_size
from training_runs import (
    TINY_MILESTONES,
    TRAIN_ENV,
    loss_rows,
    read_metrics,
    tiny_run_config,
    train_command,
    train_in_process,
    write_config,
)


def test_run_folder_records_metrics_summary_and_provenance(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["status_reason"] == ""
    size = get_size("tiny-8k")
    assert summary["non_embedding_parameters"] == size.non_embedding_parameters
    assert summary["tokens_per_clip"] == 64 and summary["batch_tokens"] == 512
    assert summary["steps"] == 20 and summary["tokens"] == 10240
    provenance = summary["provenance"]
    assert provenance["packages"]["torch"] and provenance["config"]["optimizer"]["lr"] == 3e-3
    assert len(provenance["config_hash"]) == 64 and "commit" in provenance["code_version"]

    rows = read_metrics(tiny_run)
    assert [int(r["milestone_tokens"]) for r in rows] == TINY_MILESTONES
    assert [int(r["tokens"]) for r in rows] == TINY_MILESTONES
    per_token = paper_flops_per_token(size.non_embedding_parameters, 64, size.width)
    for row in rows:
        assert float(row["flops"]) == pytest.approx(int(row["tokens"]) * per_token)
        assert float(row["flops_6n"]) == pytest.approx(int(row["tokens"]) * 6 * size.non_embedding_parameters)
        assert 0 < float(row["validation_loss"]) < 2 and math.isfinite(float(row["train_loss"]))
        assert float(row["lr"]) == pytest.approx(3e-3)
        assert float(row["tokens_per_s"]) > 0
        assert sum(1 for key in row if key.startswith("validation_loss_t")) == 4
    assert float(rows[-1]["validation_loss"]) < float(rows[0]["validation_loss"])
    assert (tiny_run / "checkpoints" / "latest.pt").exists()
    job = json.loads((tiny_run / "job.json").read_text())  # the run trained alone: its folder is its job's
    assert job["steps"] == 20 and 0 < job["validation_wall_time_s"] and 0 < job["wall_time_s"] == summary["wall_time_s"]
    # the yardstick of the job's FLOP/s: this CPU's float32 matmul rate at the job's threads, measured at its end
    assert job["matmul"]["flops_per_s"] == pytest.approx(2 * job["matmul"]["size"] ** 3 / job["matmul"]["median_seconds"])
    assert job["matmul"]["threads"] == 1 and job["matmul"]["dtype"] == "float32"
    assert yaml.safe_load((tiny_run / "config.yaml").read_text())["model"]["size"] == "tiny-8k"


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


def test_rerun_of_a_completed_run_does_nothing(prepared_data, tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    before = (run / "metrics.csv").read_text()
    mtime = (run / "summary.json").stat().st_mtime_ns
    assert train_in_process(tiny_run_config(prepared_data), run) == 0
    assert "already completed" in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == before
    assert (run / "summary.json").stat().st_mtime_ns == mtime


class _Killed(BaseException):
    """Stands for SIGKILL in-process: nothing catches it, so the job stops where it is raised."""


def _kill_when(monkeypatch, module, name: str, when=lambda *args, **kwargs: True) -> None:
    """Raise ``_Killed`` where ``module.name`` is called and ``when`` holds (else call it)."""
    real = getattr(module, name)

    def killed(*args, **kwargs):
        if when(*args, **kwargs):
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, killed)


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def _job_record(run: Path) -> dict:
    """The run's job.json with its own folder written as RUN, so the records of two folders compare."""
    return json.loads((run / "job.json").read_text().replace(str(run), "RUN"))


def test_a_job_killed_before_its_record_writes_it_on_the_rerun_from_its_final_checkpoint(
        prepared_data, tiny_run, tmp_path, monkeypatch, capsys):
    """Killed after its run's summary and before its job.json (in the matmul measurement, the job's last act):
    the rerun writes the record of the uninterrupted job (steps, FLOPs, seconds of training and validation) and
    measures the matmul rate itself."""
    import dit.engine

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_when(patch, dit.engine, "measure_matmul")
        with pytest.raises(_Killed):
            train_in_process(tiny_run_config(prepared_data), out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    # the state a completed job is in without its job.json
    assert _files(out) == _files(tiny_run) - {"job.json"}
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    stderr = capsys.readouterr().err
    assert "already completed" in stderr and "written from" in stderr and "final checkpoint" in stderr
    record, uninterrupted = _job_record(out), _job_record(tiny_run)
    assert record["members"] == uninterrupted["members"] == [{"run_id": "run", "run_dir": "RUN", "status": "completed"}]
    for key in ("steps", "model_flops", "model_config"):
        assert record[key] == uninterrupted[key], key
    assert record["steps"] == 20 and record["model_flops"]["training"] > 0 and record["model_flops"]["validation"] > 0
    # the clock readings are this job's own, as its killed process would have written them
    assert record["wall_time_s"] == summary["wall_time_s"] > 0 and record["validation_wall_time_s"] > 0
    assert "note" not in record
    assert record["matmul"]["threads"] == 1 and record["matmul"]["flops_per_s"] > 0


def test_a_removed_job_record_is_written_again_from_the_final_checkpoint(prepared_data, tmp_path, capsys):
    """The same state as a kill before job.json: the record comes back as it was, bar the matmul rate (measured
    again: its flops_per_s and median_seconds are clock readings)."""
    run = tmp_path / "run"  # trained here: its checkpoint names its own folder
    assert train_in_process(tiny_run_config(prepared_data), run) == 0
    uninterrupted = json.loads((run / "job.json").read_text())
    (run / "job.json").unlink()
    metrics, summary = (run / "metrics.csv").read_text(), (run / "summary.json").read_text()
    capsys.readouterr()
    assert train_in_process(tiny_run_config(prepared_data), run) == 0
    assert "already completed" in capsys.readouterr().err
    record = json.loads((run / "job.json").read_text())
    assert record["matmul"]["threads"] == uninterrupted["matmul"]["threads"] == 1
    # the rerun's wall time is not the training's: pipeline.performance leaves such a job out
    assert record["recorded_after_restart"] is True and uninterrupted["recorded_after_restart"] is False
    clocks = ("matmul", "recorded_after_restart")
    assert {k: v for k, v in record.items() if k not in clocks} == {k: v for k, v in uninterrupted.items() if k not in clocks}
    assert (run / "metrics.csv").read_text() == metrics and (run / "summary.json").read_text() == summary


def test_a_job_whose_runs_had_finished_without_its_checkpoint_records_that_it_trained_nothing(
        prepared_data, tiny_run, tmp_path, capsys):
    """Snakemake can rerun a job whose runs all finished elsewhere (a new job folder, a spent checkpoint): the job
    trains nothing and still leaves its job.json, the rule's output, saying so."""
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "job.json").unlink()
    (run / "checkpoints" / "latest.pt").unlink()
    metrics = (run / "metrics.csv").read_text()
    assert train_in_process(tiny_run_config(prepared_data), run) == 0
    assert "already completed" in capsys.readouterr().err
    record = json.loads((run / "job.json").read_text())
    assert record["members"] == [{"run_id": "run", "run_dir": str(run), "status": "completed"}]
    assert record["model_flops"]["total"] == 0 and "trained nothing" in record["note"] and record["matmul"] is None
    assert record["recorded_after_restart"] is False  # it trained nothing, and says so: counted with 0 FLOPs
    assert (run / "metrics.csv").read_text() == metrics


def test_a_job_killed_after_its_last_run_diverged_and_before_its_final_checkpoint_ends_as_it_did(
        prepared_data, tmp_path, monkeypatch, capsys):
    """Its run's summary says diverged, its checkpoint is of an earlier step and has no record: the rerun resumes
    it to the same end (the divergence again, to the bit) and writes the uninterrupted job's record."""
    import dit.engine

    real_step = dit.engine.EnsembleTrainer.train_step

    def diverging_at_step_7(self):
        losses = real_step(self)
        return [loss * 100 for loss in losses] if self.step >= 7 else losses

    monkeypatch.setattr(dit.engine.EnsembleTrainer, "train_step", diverging_at_step_7)
    config = tiny_run_config(prepared_data)
    reference = tmp_path / "reference" / "run"
    assert train_in_process(config, reference) == 0
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _kill_when(patch, dit.engine.EnsembleTrainer, "save_checkpoint", lambda self, final=False: final)
        with pytest.raises(_Killed):
            train_in_process(config, out)
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged" and not (out / "job.json").exists()
    capsys.readouterr()
    assert train_in_process(config, out) == 0
    assert "before its runs ended; resuming it" in capsys.readouterr().err
    record, uninterrupted = _job_record(out), _job_record(reference)
    for key in ("members", "steps", "model_flops", "model_config"):
        assert record[key] == uninterrupted[key], key
    assert record["steps"] == 8 and record["members"][0]["status"] == "diverged"
    assert loss_rows(out) == loss_rows(reference)
    for run in (out, reference):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 7 and "training loss" in summary["status_reason"] and "at step 7" in summary["status_reason"]


def _milestone_rows(out: Path) -> int:
    try:
        return max(len((out / "metrics.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"training ended (code {process.returncode}) before the expected point")
        time.sleep(0.01)
    pytest.fail("timed out waiting for the training process")


def test_sigkill_then_restart_reproduces_an_uninterrupted_run(prepared_data, tiny_run, tmp_path, capsys):
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(prepared_data))
    process = subprocess.Popen(train_command(config_path, out), env=TRAIN_ENV, stderr=subprocess.PIPE, text=True)
    try:
        # Kill after the first milestone row and a checkpoint exist, mid-run.
        _wait_for(lambda: _milestone_rows(out) >= 1 and (out / "checkpoints" / "latest.pt").exists(), 120, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    resumed = re.search(r"resumed from \S+latest\.pt at step (\d+)", capsys.readouterr().err)
    assert resumed and int(resumed.group(1)) in (3, 6, 9, 12, 15, 18)  # a checkpoint every 3 steps, mid-run
    assert loss_rows(out) == loss_rows(tiny_run)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="dit.allocator sets glibc's malloc thresholds only")
def test_raised_malloc_thresholds_change_no_number(prepared_data, tiny_run, tmp_path):
    """The reference run was trained with dit.allocator's raised thresholds; the same run in a process where the user
    keeps glibc's initial mmap and trim thresholds (128 KiB: every larger block mapped afresh, memory given back at
    once) has the same numbers to the bit, and its summary says the settings were left to the user."""
    assert json.loads((tiny_run / "summary.json").read_text())["malloc"] == retain_freed_memory(environ={})
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(prepared_data))
    environ = {**TRAIN_ENV, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    result = subprocess.run(train_command(config_path, out), env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["malloc"] == {"applied": False, "reason": "set by the user (MALLOC_MMAP_THRESHOLD_)"}
    assert loss_rows(out) == loss_rows(tiny_run)


def test_a_training_process_does_not_import_torch_dynamo(prepared_data, tmp_path):
    """``torch._dynamo`` (imported by constructing any ``torch.optim`` optimizer) costs two to three seconds of a
    training job's start on a CPU; a training process, from its first import to its exit, never loads it."""
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(prepared_data))
    program = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('torch._dynamo loaded:', 'torch._dynamo' in sys.modules))\n"
        f"sys.argv = ['dit.train', '--config', {str(config_path)!r}, '--out', {str(tmp_path / 'run')!r}, '--quiet']\n"
        "runpy.run_module('dit.train', run_name='__main__', alter_sys=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], env=TRAIN_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
    assert "torch._dynamo loaded: False" in result.stdout


@pytest.mark.parametrize("environ, chosen", [
    ({}, None), ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, "GLIBC_TUNABLES"),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=8"}, None),
])
def test_malloc_settings_the_user_chose_are_left_alone(environ, chosen):
    assert user_chose_malloc_settings(environ) == chosen
    if chosen:
        assert retain_freed_memory(environ) == {"applied": False, "reason": f"set by the user ({chosen})"}


def test_sigterm_writes_a_checkpoint_exits_75_and_resumes_exactly(prepared_data, tiny_run, tmp_path):
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "run.yaml", tiny_run_config(prepared_data))
    process = subprocess.Popen(train_command(config_path, out), env=TRAIN_ENV, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _milestone_rows(out) >= 1, 120, process)  # mid-run: after the first milestone
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "preempted" and "SIGTERM" in summary["status_reason"]
    assert 4 <= summary["steps"] < 20
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert loss_rows(out) == loss_rows(tiny_run)


def test_sigusr1_preempts_like_sigterm_and_the_run_resumes_exactly(prepared_data, tiny_run, tmp_path):
    """SLURM's warning signal before a time limit: checkpoint, exit 75, resume to the uninterrupted numbers."""
    out = tmp_path / "run"
    sent = threading.Event()

    def signal_after_the_first_milestone() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _milestone_rows(out) < 1:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGUSR1)
        sent.set()

    # A late signal (after the trainer put the previous handler back) must not end the test process.
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    try:
        sender = threading.Thread(target=signal_after_the_first_milestone, daemon=True)
        sender.start()
        code = train_in_process(tiny_run_config(prepared_data), out)
        sender.join(timeout=120)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert sent.is_set()
    summary = json.loads((out / "summary.json").read_text())
    assert code == 75, summary
    assert summary["status"] == "preempted" and "SIGUSR1" in summary["status_reason"]
    assert 4 <= summary["steps"] < 20 and (out / "checkpoints" / "latest.pt").exists()
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    assert loss_rows(out) == loss_rows(tiny_run)


def test_micro_batches_give_the_same_run_as_one_batch(prepared_data, tiny_run, tmp_path):
    out = tmp_path / "micro"
    assert train_in_process(tiny_run_config(prepared_data, batch={"global_clips": 8, "micro_clips": 2}), out) == 0
    for split, whole in zip(read_metrics(out), read_metrics(tiny_run), strict=True):
        assert float(split["validation_loss"]) == pytest.approx(float(whole["validation_loss"]), rel=1e-5)
        assert float(split["train_loss"]) == pytest.approx(float(whole["train_loss"]), rel=1e-5)


@pytest.mark.slow
def test_two_processes_match_one_process(prepared_data, tiny_run, tmp_path):
    """torchrun with 2 gloo processes and the same global batch: same validation loss within 1e-5."""
    import sys

    out = tmp_path / "ddp"
    config_path = write_config(tmp_path / "ddp.yaml", tiny_run_config(prepared_data))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dit.train",
               "--config", str(config_path), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**TRAIN_ENV, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 20
    for two, one in zip(read_metrics(out), read_metrics(tiny_run), strict=True):
        assert float(two["validation_loss"]) == pytest.approx(float(one["validation_loss"]), rel=1e-5)


# ------------------------------------------------------------------ divergence


def _training_losses_changed_from_step(monkeypatch, step: int, factor: float) -> None:
    """Multiply the per-clip training losses by ``factor`` from optimizer step ``step`` on (the engine's
    forward-backward computes them once a step through ``dit.member_training.member_clip_losses``)."""
    import dit.member_training

    real, calls = dit.member_training.member_clip_losses, []

    def changed(prediction, noise):
        calls.append(None)
        losses = real(prediction, noise)
        return losses * factor if len(calls) > step else losses

    monkeypatch.setattr(dit.member_training, "member_clip_losses", changed)


@pytest.mark.parametrize(
    "factor, step, milestones_kept, reason",
    [(100.0, 6, 1, "above divergence.max_loss=10.0"), (math.nan, 9, 2, "non-finite")],
    ids=["above-threshold-mid-run", "non-finite-training-loss"],
)
def test_divergence_mid_run_is_recorded_with_the_milestones_reached(prepared_data, tiny_run, tmp_path, monkeypatch,
                                                                    factor, step, milestones_kept, reason):
    _training_losses_changed_from_step(monkeypatch, step, factor)
    out = tmp_path / "diverge"
    assert train_in_process(tiny_run_config(prepared_data), out) == 0  # a diverged run lets the grid go on
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == step
    assert f"at step {step}" in summary["status_reason"] and reason in summary["status_reason"]
    # Up to the divergence it is the uninterrupted run, milestone for milestone.
    assert loss_rows(out) == loss_rows(tiny_run)[:milestones_kept]
    assert summary["milestones_reached"] == milestones_kept


def test_non_finite_validation_loss_is_recorded_as_divergence(prepared_data, tiny_run, tmp_path, monkeypatch):
    import dit.engine

    real, calls = dit.engine.ensemble_validation_loss, []

    def second_is_nan(*args, **kwargs):
        calls.append(None)
        results = real(*args, **kwargs)
        return [dataclasses.replace(r, mean=math.nan) for r in results] if len(calls) == 2 else results

    monkeypatch.setattr(dit.engine, "ensemble_validation_loss", second_is_nan)
    out = tmp_path / "diverge"
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 8  # the second milestone, 4,096 tokens
    assert summary["status_reason"].startswith("validation loss nan at step 8")
    rows = read_metrics(out)
    assert loss_rows(out)[0] == loss_rows(tiny_run)[0] and len(rows) == 2
    assert math.isnan(float(rows[1]["validation_loss"]))


def test_the_threshold_applies_from_the_first_step(prepared_data, tmp_path):
    out = tmp_path / "diverge"
    config = tiny_run_config(prepared_data, divergence={"max_loss": 0.5})  # the first step's loss is about 1
    assert train_in_process(config, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] == 0
    assert "above divergence.max_loss=0.5" in summary["status_reason"] and read_metrics(out) == []


# ------------------------------------------------------------------ configuration and run-folder errors


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"model": {"size": "tiny-huge"}}, "model.size"),
        ({"optimizer": {"lr": -1.0}}, "optimizer.lr"),
        ({"batch": {"global_clips": 8, "micro_clips": 3}}, "batch.micro_clips"),
        ({"schedule": {"milestones_tokens": [1024, 4096], "total_tokens": 2048}}, "schedule.milestones_tokens"),
        ({"optimizer": {"lr": 1e-3, "momentum": 0.9}}, "optimizer.momentum"),
        ({"diffusion": {"timestep_sampling": "sobol"}}, "diffusion.timestep_sampling"),
        ({"diffusion": {"beta_start": 0.05, "beta_end": 0.02}}, "diffusion.beta_start"),
        ({"diffusion": {"beta_end": 1.5}}, "diffusion.beta_end"),
        ({"diffusion": {"beta_end": 1.0}}, "diffusion.beta_end"),
        ({"diffusion": {"beta_start": 0.0}}, "diffusion.beta_start"),
        ({"diffusion": {"beta_end": math.nan}}, "diffusion.beta_end"),
        ({"diffusion": {"num_timesteps": 4}, "validation": {"timesteps": 8, "batch_clips": 4}}, "validation.timesteps"),
        ({"optimizer": {"lr": 3e-3, "grad_clip": math.nan}}, "optimizer.grad_clip"),
        ({"optimizer": {"lr": 3e-3, "grad_clip": math.inf}}, "optimizer.grad_clip"),
        ({"optimizer": {"lr": 3e-3, "eps": math.nan}}, "optimizer.eps"),
        ({"optimizer": {"lr": 3e-3, "weight_decay": math.nan}}, "optimizer.weight_decay"),
        ({"optimizer": {"lr": 3e-3, "weight_decay": math.inf}}, "optimizer.weight_decay"),
        ({"optimizer": {"lr": math.inf}}, "optimizer.lr"),
        ({"ema": {"gamma": math.inf}}, "ema.gamma"),
        ({"progress": {"interval_seconds": math.nan}}, "progress.interval_seconds"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(tmp_path, capsys, changes, key):
    config = tiny_run_config(tmp_path / "no-data", **changes)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(config)
    assert train_in_process(config, tmp_path / "run") == 2
    stderr = capsys.readouterr().err
    assert key in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


def test_values_at_the_edges_of_their_ranges_are_accepted(prepared_data):
    config = config_from_dict(tiny_run_config(
        prepared_data, diffusion={"num_timesteps": 4, "beta_start": 0.02, "beta_end": 0.02},
        validation={"timesteps": 4}, optimizer={"lr": 3e-3, "weight_decay": 0.0, "grad_clip": 1.0},
        divergence={"max_loss": math.inf}))  # no divergence threshold
    assert config.validation.timesteps == config.diffusion.num_timesteps == 4
    assert config.divergence.max_loss == math.inf


@pytest.mark.parametrize("changes, key", [
    ({"device": "cuda"}, "device 'cuda': no CUDA device"),
    ({"device": "cpu", "model": {"size": "tiny-8k", "patch": [2, 4, 4], "attention": "xformers"}}, "model.attention"),
], ids=["cuda-without-a-gpu", "xformers-on-a-cpu"])
def test_a_device_or_attention_backend_this_machine_lacks_fails_before_anything_is_written(
        prepared_data, tmp_path, monkeypatch, capsys, changes, key):
    """Valid settings this machine cannot honour: a configuration error (exit 2) naming the setting, before any
    file of the run is written (no summary saying it failed, no config.yaml, no metrics)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has no GPU, whatever it has
    config = tiny_run_config(prepared_data, **changes)
    config_from_dict(config)  # the config itself is valid
    assert train_in_process(config, tmp_path / "run") == 2
    stderr = capsys.readouterr().err
    assert "configuration error" in stderr and key in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["validation", "train"])
def test_a_data_folder_with_an_empty_split_is_refused_before_training(prepared_data, tmp_path, capsys, split):
    """A prepared folder whose validation (or training) split holds no clips: refused at start, naming the folder,
    not after training to the first milestone."""
    data = tmp_path / "prepared"
    shutil.copytree(prepared_data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"][split] = {"clips": 0, "shards": []}
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert train_in_process(tiny_run_config(data), tmp_path / "run") == 2
    stderr = capsys.readouterr().err
    assert f"data.root: {data} holds no {split} clips" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("damage", ["truncated manifest", "manifest not an object", "missing shard", "truncated shard"])
def test_a_damaged_data_folder_is_refused_naming_the_file(prepared_data, tmp_path, capsys, damage):
    """A manifest or shard file that cannot be read stops the job at start with the file's name (exit 2), not a traceback."""
    data = tmp_path / "prepared"
    shutil.copytree(prepared_data, data)
    shard = sorted(data.glob("train-*.frames.npy"))[0]
    if damage == "truncated manifest":
        damaged = data / "manifest.json"
        damaged.write_text(damaged.read_text()[:100])
    elif damage == "manifest not an object":
        damaged = data / "manifest.json"
        damaged.write_text("[1, 2]")
    elif damage == "missing shard":
        damaged = shard
        shard.unlink()
    else:
        damaged = shard
        shard.write_bytes(shard.read_bytes()[:200])
    assert train_in_process(tiny_run_config(data), tmp_path / "run") == 2
    stderr = capsys.readouterr().err
    assert f"data.root: {damaged}" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_batch_not_divisible_by_processes_names_the_key(prepared_data):
    config = config_from_dict(tiny_run_config(prepared_data, batch={"global_clips": 12, "micro_clips": 4}))
    assert config.validate_world_size(1) == 4 and config.validate_world_size(3) == 4
    with pytest.raises(ConfigError, match=r"batch\.micro_clips"):
        config.validate_world_size(2)  # 6 clips per process, not divisible by 4
    with pytest.raises(ConfigError, match=r"batch\.global_clips"):
        config_from_dict(tiny_run_config(prepared_data, batch={"global_clips": 9})).validate_world_size(2)


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert train_in_process(tiny_run_config(tmp_path / "nowhere"), tmp_path / "run") == 2
    stderr = capsys.readouterr().err
    assert "data.root" in stderr and "dit.data prepare" in stderr


def test_unreadable_checkpoint_is_a_clear_failure_and_is_kept(prepared_data, tmp_path, capsys):
    content = b"PK\x03\x04 a truncated checkpoint"
    out = tmp_path / "run"
    checkpoint = out / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(content)
    assert train_in_process(tiny_run_config(prepared_data), out) == 1
    stderr = capsys.readouterr().err
    assert f"checkpoint {checkpoint} cannot be read" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "cannot be read" in summary["status_reason"]
    assert checkpoint.read_bytes() == content, "the unreadable checkpoint must be left for inspection"


def test_a_checkpoint_of_another_config_is_refused_and_left_alone(prepared_data, tiny_run, tmp_path, capsys):
    """Resuming into a folder whose checkpoint was written under another config would mix two runs."""
    run = copy_run(tiny_run, tmp_path / "run")
    state = torch.load(run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    state["layout"][0][0] = str(run)  # as if trained here
    torch.save(state, run / "checkpoints" / "latest.pt")
    checkpoint = (run / "checkpoints" / "latest.pt").read_bytes()
    metrics = (run / "metrics.csv").read_text()
    (run / "summary.json").unlink()  # an unfinished run, so its checkpoint is not spent
    other = tiny_run_config(prepared_data, optimizer={"lr": 1e-3, "warmup_steps": 2})
    assert train_in_process(other, run) == 2
    stderr = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'latest.pt'} belongs to another ensemble layout" in stderr and "Traceback" not in stderr
    assert (run / "checkpoints" / "latest.pt").read_bytes() == checkpoint
    assert (run / "metrics.csv").read_text() == metrics


def test_a_spent_checkpoint_of_a_run_is_removed_and_the_run_trained_under_its_new_config(
        prepared_data, tiny_run, tmp_path, capsys):
    """A finished run's folder is its job's: rerun under another config, its checkpoint is spent (its run finished),
    removed, and the run is trained afresh, to the numbers of the new config trained in a fresh folder."""
    other = tiny_run_config(prepared_data, optimizer={"lr": 1e-3, "warmup_steps": 2})
    fresh = tmp_path / "fresh" / "run"
    assert train_in_process(other, fresh) == 0
    run = tmp_path / "run"
    assert train_in_process(tiny_run_config(prepared_data), run) == 0  # here: its checkpoint names this folder
    capsys.readouterr()
    assert train_in_process(other, run) == 0
    stderr = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'latest.pt'}: its runs ['run'] have all finished; removed, starting afresh" in stderr
    assert "resumed from" not in stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["learning_rate"] == 1e-3
    assert loss_rows(run) == loss_rows(fresh) != loss_rows(tiny_run)


def test_stale_temporary_files_of_a_killed_checkpoint_write_are_removed_when_the_job_starts(
        prepared_data, tiny_run, tmp_path, capsys):
    """A SIGKILL while ``latest.pt`` was being written leaves its temporary file (``dit.atomic.atomic_path``'s
    name); the job's next start removes those of its own checkpoint folder and nothing else."""
    import tempfile

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    stale = [Path(tempfile.mkstemp(prefix=".latest.pt.", suffix=".tmp", dir=out / "checkpoints")[1]) for _ in range(2)]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    kept = [out / "checkpoints" / ".model.pt.abcd1234.tmp", out / "checkpoints" / "notes.tmp",
            tmp_path / "other-job" / "checkpoints" / ".latest.pt.abcd1234.tmp"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not this job's")
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    stderr = capsys.readouterr().err
    assert all(f"removed {path}, left by a checkpoint write that was killed" in stderr for path in stale)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert loss_rows(out) == loss_rows(tiny_run)


def test_quiet_silences_progress_lines_and_changes_no_number(prepared_data, tiny_run, tmp_path, capsys):
    loud = tiny_run_config(prepared_data, progress={"interval_seconds": 0.001})
    assert train_in_process(loud, tmp_path / "loud") == 0
    printed = capsys.readouterr().err
    assert "milestone 2,048 tokens: step 4" in printed and "step 20 | tokens 10,240/10,240 (100%)" in printed
    assert train_in_process(loud, tmp_path / "quiet", "--quiet") == 0
    assert capsys.readouterr().err == ""
    assert loss_rows(tmp_path / "quiet") == loss_rows(tmp_path / "loud") == loss_rows(tiny_run)
