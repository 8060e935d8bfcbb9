"""The local SLURM test cluster (tests/slurm_cluster.py) and the Snakemake profiles on a real cluster.

A failing training job under SLURM (its log named, retries bounded) is tested with the real pipeline
in tests/test_workflow_slurm.py.

The tests marked ``slurm`` use the session's ``slurm_cluster`` fixture (tests/conftest.py); the others
check the profiles and the harness without starting daemons.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import (
    GPUS,
    MIN_JOB_AGE_S,
    SlurmCluster,
    SlurmClusterBusy,
    system_config_owner,
    wait_for_path,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SLURM_PROFILE = REPOSITORY_ROOT / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPOSITORY_ROOT / "workflow" / "profiles" / "local"
SNAKEMAKE_TIMEOUT_S = 240

SIGTERM_TRAP = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path

    folder = Path(sys.argv[1])

    def write(name, text):  # whole or not at all: the test reads the file as soon as it exists
        (folder / f"{name}.part").write_text(text)
        os.replace(folder / f"{name}.part", folder / name)

    def checkpoint_and_exit(signum, frame):
        write("signal.txt", signal.Signals(signum).name)
        sys.exit(75)

    signal.signal(signal.SIGTERM, checkpoint_and_exit)
    write("ready.txt", "waiting")
    time.sleep(120)
    sys.exit(1)
    """
)

# Two independent rules, so both jobs run at once (each SLURM job costs 12-33 s of start and status checks).
TWO_RULE_WORKFLOW = textwrap.dedent(
    """
    rule all:
        input: "results/run_small.txt", "results/summary.txt"

    rule train_grid:
        output: "results/run_{run}.txt"
        shell: "echo job=$SLURM_JOB_ID gpus=$CUDA_VISIBLE_DEVICES > {output}"

    rule summarize:
        output: "results/summary.txt"
        shell: "echo job=$SLURM_JOB_ID > {output}"
    """
)



def _unstarted_cluster(tmp_path: Path) -> SlurmCluster:
    """A cluster record with this machine's shape, for the profile logic (no daemons)."""
    return SlurmCluster(
        directory=str(tmp_path), slurmctld_port=6817, slurmd_port=6818, cpus=2, topology="",
        real_memory_mb=20000, config_backup=None,
    )


def _snakemake(cluster: SlurmCluster, workdir: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"), "--directory", str(workdir), *options]
    return cluster.run_bounded(command, timeout_s=SNAKEMAKE_TIMEOUT_S, cwd=workdir)


# ------------------------------------------------------------------ without daemons


def test_slurm_profile_fits_the_local_cluster_and_keeps_its_policy(tmp_path):
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1, "preempted training jobs (exit 75) must be resubmitted"
    for rule in ("train_grid", "train_heldout"):
        assert {"runtime", "mem_mb", "cpus_per_task", "gpu"} <= set(profile["set-resources"][rule]), rule

    written = _unstarted_cluster(tmp_path).write_profile(SLURM_PROFILE, tmp_path / "profile")
    fitted = yaml.safe_load((written / "config.yaml").read_text())
    assert fitted["default-resources"]["slurm_partition"] == "debug"
    assert "slurm_account" not in fitted["default-resources"]
    assert fitted["retries"] == profile["retries"]
    assert fitted["slurm-status-command"] == "squeue" and fitted["slurm-no-account"] is True
    train = fitted["set-resources"]["train_grid"]
    assert train["cpus_per_task"] <= 2 and train["mem_mb"] <= 10000 and 1 <= train["gpu"] <= GPUS
    assert train["slurm_extra"] == profile["set-resources"]["train_grid"]["slurm_extra"]


@pytest.mark.parametrize("profile", [LOCAL_PROFILE, SLURM_PROFILE], ids=["local", "slurm"])
def test_profile_is_accepted_by_snakemake(profile, tmp_path):
    (tmp_path / "Snakefile").write_text(TWO_RULE_WORKFLOW)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(profile), "--dry-run", "--directory", str(tmp_path),
         "--snakefile", str(tmp_path / "Snakefile")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train_grid" in result.stdout


@pytest.mark.slow  # two pytest sessions of their own
def test_missing_packages_skip_or_fail_with_the_reason(tmp_path):
    """With SLURM's client programs off PATH the fixture skips, or fails under DIT_REQUIRE_SLURM=1."""
    (tmp_path / "empty").mkdir()
    test = f"{Path(__file__).resolve()}::test_cluster_node_is_idle_in_default_partition"
    outcomes = {}
    for required in ("0", "1"):
        env = {"PATH": str(tmp_path / "empty"), "DIT_REQUIRE_SLURM": required, "HOME": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", test, "-q", "-rs", "-p", "no:cacheprovider"],
            capture_output=True, text=True, timeout=120, env=env, cwd=REPOSITORY_ROOT,
        )
        outcomes[required] = result
    named = "sbatch" if os.geteuid() == 0 else "needs root"
    assert outcomes["0"].returncode == 0, outcomes["0"].stdout
    assert "1 skipped" in outcomes["0"].stdout and named in outcomes["0"].stdout, outcomes["0"].stdout
    assert outcomes["1"].returncode != 0, outcomes["1"].stdout
    assert "DIT_REQUIRE_SLURM=1" in outcomes["1"].stdout and named in outcomes["1"].stdout, outcomes["1"].stdout


# ------------------------------------------------------------------ on the running cluster


@pytest.mark.slurm
def test_cluster_node_is_idle_in_default_partition(slurm_cluster):
    print(f"cluster start: {slurm_cluster.start_seconds:.2f} s")
    listing = slurm_cluster.run(["sinfo", "--noheader", "--format=%P %T %D %G"]).stdout.split()
    assert listing == ["debug*", "idle", "1", f"gpu:{GPUS}"]
    config = slurm_cluster.run(["scontrol", "show", "config"]).stdout
    assert re.search(rf"^MinJobAge\s*=\s*{MIN_JOB_AGE_S} sec", config, re.MULTILINE), "squeue status needs MinJobAge >= 120"
    status = json.loads(
        subprocess.run(
            [sys.executable, str(REPOSITORY_ROOT / "tests" / "slurm_cluster.py"), "status", "--dir", slurm_cluster.directory],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
    )
    assert status["running"] and status["node_state"] == "idle"
    assert {name: entry["pid"] for name, entry in status["daemons"].items()} == {d.name: d.pid for d in slurm_cluster.daemons}


@pytest.mark.slurm
def test_second_cluster_waits_for_the_running_one(slurm_cluster):
    with tempfile.TemporaryDirectory(prefix="dit-slurm-second-") as directory:
        with pytest.raises(SlurmClusterBusy, match=re.escape(slurm_cluster.directory)):
            SlurmCluster.start(directory, busy_wait_s=0)
    assert slurm_cluster.running()
    assert system_config_owner() == Path(slurm_cluster.directory) / "cluster.json"


@pytest.mark.slurm
def test_sbatch_wrap_job_runs_and_writes_its_output(slurm_cluster, tmp_path):
    started = time.monotonic()
    job = slurm_cluster.sbatch("--output", str(tmp_path / "job.out"), "--chdir", str(tmp_path),
                               "--wrap", "echo hello from job $SLURM_JOB_ID on $SLURM_JOB_PARTITION")
    assert slurm_cluster.wait_for_job_state(job, "COMPLETED", timeout_s=60) == "COMPLETED"
    print(f"sbatch --wrap job, submit to COMPLETED: {time.monotonic() - started:.2f} s")
    assert (tmp_path / "job.out").read_text().strip() == f"hello from job {job} on debug"
    assert slurm_cluster.job_info(job)["ExitCode"] == "0:0"


@pytest.mark.slurm
@pytest.mark.parametrize(
    "launch, include_batch_script",
    [("srun", False), ("exec", True)],
    ids=["srun-step-plain-scancel", "batch-script-needs-full"],
)
def test_scancel_signal_term_reaches_the_job_process(slurm_cluster, tmp_path, launch, include_batch_script):
    (tmp_path / "trap.py").write_text(SIGTERM_TRAP)
    job = slurm_cluster.sbatch("--output", str(tmp_path / "job.out"), "--chdir", str(tmp_path),
                               "--wrap", f"{launch} {sys.executable} {tmp_path / 'trap.py'} {tmp_path}")
    slurm_cluster.wait_for_job_state(job, "RUNNING", timeout_s=60)
    wait_for_path(tmp_path / "ready.txt", timeout_s=60)
    slurm_cluster.send_signal(job, "TERM", include_batch_script=include_batch_script)
    wait_for_path(tmp_path / "signal.txt", timeout_s=30)
    assert (tmp_path / "signal.txt").read_text() == "SIGTERM"
    assert slurm_cluster.wait_for_job_state(job, "FAILED", timeout_s=60) == "FAILED"
    assert slurm_cluster.job_info(job)["ExitCode"] == "75:0"


@pytest.mark.slurm
@pytest.mark.slow
def test_snakemake_runs_a_workflow_through_the_slurm_executor(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TWO_RULE_WORKFLOW)
    profile = slurm_cluster.write_profile(SLURM_PROFILE, tmp_path / "profile")
    started = time.monotonic()
    result = _snakemake(slurm_cluster, tmp_path, "--profile", str(profile))
    print(f"snakemake, 2 rules through --executor slurm: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-6000:]
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", result.stdout)
    assert len(submitted) == 2, result.stdout[-6000:]
    train_job = slurm_cluster.wait_for_rule_job("train_grid", "COMPLETED", wildcards="small", timeout_s=10)
    summary_job = slurm_cluster.wait_for_rule_job("summarize", "COMPLETED", timeout_s=10)
    assert sorted([train_job, summary_job]) == sorted(submitted)
    train = (tmp_path / "results" / "run_small.txt").read_text().split()
    assert train[0] == f"job={train_job}"
    assert train[1] == "gpus=0", "the profile's gpu request for train_grid did not reach sbatch"
    assert (tmp_path / "results" / "summary.txt").read_text().split() == [f"job={summary_job}"]
