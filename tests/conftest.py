"""Fixtures shared by the whole test suite.

``slurm_cluster`` (session scope) is a real one-node SLURM cluster started by tests/slurm_cluster.py.
Without slurm-wlm/munge or root its tests are skipped with the reason; with DIT_REQUIRE_SLURM=1 in
the environment (CI sets it once it has installed the packages) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

TESTS_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY_ROOT = TESTS_DIRECTORY.parent
if str(TESTS_DIRECTORY) not in sys.path:
    sys.path.insert(0, str(TESTS_DIRECTORY))

from slurm_cluster import MARKER, SYSTEM_CONFIG, SlurmCluster, SlurmClusterError, missing_requirements  # noqa: E402

SLURM_REQUIRED_VARIABLE = "DIT_REQUIRE_SLURM"
SLURM_START_TIMEOUT_S = 60.0
SLURM_BUSY_WAIT_S = 300.0  # another test session's cluster owns /etc/slurm/slurm.conf


def slurm_required() -> bool:
    """True when a missing or broken local SLURM cluster must fail the tests rather than skip them."""
    return os.environ.get(SLURM_REQUIRED_VARIABLE, "") == "1"


def _slurm_unavailable(reason: str):
    if slurm_required():
        pytest.fail(f"{reason} ({SLURM_REQUIRED_VARIABLE}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repository_root() -> Path:
    """The repository's top folder (holds workflow/, config/, dit/)."""
    return REPOSITORY_ROOT


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running tests/slurm_cluster.SlurmCluster: partition ``debug``, one node, two placeholder GPUs.

    Useful members: ``env()``, ``snakemake_args()``, ``write_profile(source, destination)`` (then
    ``snakemake --profile DESTINATION``), ``run_bounded(command, timeout_s=...)``, ``sbatch(...)``,
    ``jobs()``, ``wait_for_rule_job(rule, "RUNNING")``, ``wait_for_job_state(job, states)``,
    ``send_signal(job, "TERM")``, ``job_info(job)["ExitCode"]``; and slurm_cluster.wait_for_path.
    At the end of the session the fixture cancels the cluster's jobs, stops exactly the daemons it
    started and checks that /etc/slurm/slurm.conf is back as it was.
    """
    reason = missing_requirements()
    if reason:
        _slurm_unavailable(reason)
    config_before = SYSTEM_CONFIG.read_bytes() if SYSTEM_CONFIG.exists() else None
    # Not under pytest's tmp_path: munged (user munge) must be able to reach its socket in here.
    directory = tempfile.mkdtemp(prefix="dit-slurm-")
    try:
        cluster = SlurmCluster.start(directory, timeout_s=SLURM_START_TIMEOUT_S, busy_wait_s=SLURM_BUSY_WAIT_S)
    except SlurmClusterError as error:
        _slurm_unavailable(f"the local SLURM cluster did not start: {error}")
    yield cluster
    cluster.stop()
    leftovers = [f"{d.name} (PID {d.pid})" for d in cluster.daemons if d.alive()]
    config_after = SYSTEM_CONFIG.read_bytes() if SYSTEM_CONFIG.exists() else None
    assert not leftovers, f"daemons still running after stop: {leftovers}; files in {directory}"
    if config_before is not None and config_before.startswith(MARKER.encode()):
        config_before = config_after  # a crashed earlier cluster's config: start put the original back
    assert config_after == config_before, f"{SYSTEM_CONFIG} was not restored; the cluster's files are in {directory}"
    shutil.rmtree(directory, ignore_errors=True)
