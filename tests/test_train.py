"""The training engine: exact resume after SIGKILL, SIGTERM preemption, micro-batch and multi-process
equivalence, divergence handling, config errors and the run folder's records."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dit.config import ConfigError, config_from_dict
from dit.flops import paper_flops_per_token
from dit.sizes import get_size
from prepared_clips import prepare_clips

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOSS_COLUMNS = ("milestone_tokens", "step", "tokens", "train_loss", "validation_loss")


@pytest.fixture(scope="module")
def prepared_data(tmp_path_factory) -> Path:
    """A real prepared data folder: 40 generated MP4 clips, 8 frames of 16x16 pixels."""
    return prepare_clips(tmp_path_factory.mktemp("data"), clips=40, seed=3)


def run_config(data: Path, **changes) -> dict:
    config = {
        "seed": 7,
        "threads": 1,
        "model": {"size": "tiny-8k", "patch": [2, 4, 4], "attention": "sdpa"},
        "data": {"root": str(data)},
        "optimizer": {"lr": 3e-3, "warmup_steps": 2},
        "batch": {"global_clips": 8},
        "schedule": {"milestones_tokens": [2048, 4096, 6144, 10240]},  # 64 tokens/clip, 512 tokens/step
        "validation": {"timesteps": 4, "batch_clips": 4},
        "checkpoint": {"every_steps": 3},
        "progress": {"interval_seconds": 0.2},
    }
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            config.setdefault(section, {})[key] = value
        else:
            config[section] = value
    return config


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config_path: Path, out: Path) -> list[str]:
    return [PYTHON, "-m", "dit.train", "--config", str(config_path), "--out", str(out)]


def run_training(config: dict, out: Path, **kwargs) -> subprocess.CompletedProcess:
    config_path = write_config(out.parent / f"{out.name}.yaml", config)
    return subprocess.run(
        train_command(config_path, out), capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs,
    )


def read_metrics(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def loss_rows(out: Path) -> list[tuple[str, ...]]:
    return [tuple(row[c] for c in LOSS_COLUMNS) for row in read_metrics(out)]


@pytest.fixture(scope="module")
def reference_run(prepared_data, tmp_path_factory) -> Path:
    """An uninterrupted run that the interrupted ones must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run_training(run_config(prepared_data), out)
    assert result.returncode == 0, result.stderr
    return out


def test_run_folder_records_metrics_summary_and_provenance(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["status_reason"] == ""
    size = get_size("tiny-8k")
    assert summary["non_embedding_parameters"] == size.non_embedding_parameters
    assert summary["tokens_per_clip"] == 64 and summary["batch_tokens"] == 512
    assert summary["steps"] == 20 and summary["tokens"] == 10240
    provenance = summary["provenance"]
    assert provenance["packages"]["torch"] and provenance["config"]["optimizer"]["lr"] == 3e-3
    assert len(provenance["config_hash"]) == 64 and "commit" in provenance["code_version"]

    rows = read_metrics(reference_run)
    assert [int(r["milestone_tokens"]) for r in rows] == [2048, 4096, 6144, 10240]
    assert [int(r["tokens"]) for r in rows] == [2048, 4096, 6144, 10240]
    per_token = paper_flops_per_token(size.non_embedding_parameters, 64, size.width)
    for row in rows:
        assert float(row["flops"]) == pytest.approx(int(row["tokens"]) * per_token)
        assert float(row["flops_6n"]) == pytest.approx(int(row["tokens"]) * 6 * size.non_embedding_parameters)
        assert 0 < float(row["validation_loss"]) < 2 and math.isfinite(float(row["train_loss"]))
        assert float(row["lr"]) == pytest.approx(3e-3)
        assert float(row["tokens_per_s"]) > 0
        assert sum(1 for key in row if key.startswith("validation_loss_t")) == 4
    assert float(rows[-1]["validation_loss"]) < float(rows[0]["validation_loss"])
    assert (reference_run / "checkpoints" / "latest.pt").exists()
    assert yaml.safe_load((reference_run / "config.yaml").read_text())["model"]["size"] == "tiny-8k"


def test_rerun_of_a_completed_run_does_nothing(prepared_data, reference_run):
    before = (reference_run / "metrics.csv").read_text()
    mtime = (reference_run / "summary.json").stat().st_mtime_ns
    result = run_training(run_config(prepared_data), reference_run)
    assert result.returncode == 0 and "already completed" in result.stderr
    assert (reference_run / "metrics.csv").read_text() == before
    assert (reference_run / "summary.json").stat().st_mtime_ns == mtime


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


def test_sigkill_then_restart_reproduces_an_uninterrupted_run(prepared_data, reference_run, tmp_path):
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "run.yaml", run_config(prepared_data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(train_command(config_path, out), env=env, stderr=subprocess.PIPE, text=True)
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
    result = subprocess.run(train_command(config_path, out), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr
    assert loss_rows(out) == loss_rows(reference_run)


def test_sigterm_writes_a_checkpoint_exits_75_and_resumes_exactly(prepared_data, reference_run, tmp_path):
    out = tmp_path / "run"
    config_path = write_config(tmp_path / "run.yaml", run_config(prepared_data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(train_command(config_path, out), env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _milestone_rows(out) >= 1, 120, process)  # mid-run: after the first milestone
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "preempted" and "SIGTERM" in summary["status_reason"]
    result = subprocess.run(train_command(config_path, out), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert loss_rows(out) == loss_rows(reference_run)


def test_micro_batches_give_the_same_run_as_one_batch(prepared_data, reference_run, tmp_path):
    out = tmp_path / "micro"
    result = run_training(run_config(prepared_data, batch={"global_clips": 8, "micro_clips": 2}), out)
    assert result.returncode == 0, result.stderr
    for split, whole in zip(read_metrics(out), read_metrics(reference_run)):
        assert float(split["validation_loss"]) == pytest.approx(float(whole["validation_loss"]), rel=1e-5)
        assert float(split["train_loss"]) == pytest.approx(float(whole["train_loss"]), rel=1e-5)


@pytest.mark.slow
def test_two_processes_match_one_process(prepared_data, reference_run, tmp_path):
    """torchrun with 2 gloo processes and the same global batch: same validation loss within 1e-5."""
    out = tmp_path / "ddp"
    config_path = write_config(tmp_path / "ddp.yaml", run_config(prepared_data))
    command = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dit.train",
               "--config", str(config_path), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 20
    for two, one in zip(read_metrics(out), read_metrics(reference_run), strict=True):
        assert float(two["validation_loss"]) == pytest.approx(float(one["validation_loss"]), rel=1e-5)


def test_divergence_is_recorded_and_exits_zero(prepared_data, tmp_path):
    out = tmp_path / "diverge"
    config = run_config(prepared_data, optimizer={"lr": 3e-3}, divergence={"max_loss": 0.5})
    result = run_training(config, out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "above divergence.max_loss=0.5" in summary["status_reason"]


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"model": {"size": "tiny-huge"}}, "model.size"),
        ({"optimizer": {"lr": -1.0}}, "optimizer.lr"),
        ({"batch": {"global_clips": 8, "micro_clips": 3}}, "batch.micro_clips"),
        ({"schedule": {"milestones_tokens": [1024, 4096], "total_tokens": 2048}}, "schedule.milestones_tokens"),
        ({"optimizer": {"lr": 1e-3, "momentum": 0.9}}, "optimizer.momentum"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(tmp_path, changes, key):
    config = run_config(tmp_path / "no-data", **changes)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(config)
    result = run_training(config, tmp_path / "run")
    assert result.returncode == 2
    assert key in result.stderr and "Traceback" not in result.stderr


def test_batch_not_divisible_by_processes_names_the_key(prepared_data):
    config = config_from_dict(run_config(prepared_data, batch={"global_clips": 12, "micro_clips": 4}))
    assert config.validate_world_size(1) == 4 and config.validate_world_size(3) == 4
    with pytest.raises(ConfigError, match=r"batch\.micro_clips"):
        config.validate_world_size(2)  # 6 clips per process, not divisible by 4
    with pytest.raises(ConfigError, match=r"batch\.global_clips"):
        config_from_dict(run_config(prepared_data, batch={"global_clips": 9})).validate_world_size(2)


def test_missing_data_folder_is_a_clear_error(tmp_path):
    result = run_training(run_config(tmp_path / "nowhere"), tmp_path / "run")
    assert result.returncode == 2
    assert "data.root" in result.stderr and "dit.data prepare" in result.stderr


def test_unreadable_checkpoint_is_a_clear_failure_and_is_kept(prepared_data, tmp_path):
    content = b"PK\x03\x04 a truncated checkpoint"
    out = tmp_path / "run"
    checkpoint = out / "checkpoints" / "latest.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(content)
    result = run_training(run_config(prepared_data), out)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"checkpoint {checkpoint} cannot be read" in result.stderr and "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "cannot be read" in summary["status_reason"]
    assert checkpoint.read_bytes() == content, "the unreadable checkpoint must be left for inspection"
