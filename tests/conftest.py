"""Fixtures shared by the whole test suite.

``cuda_xformers``: the CUDA device for tests of xformers' kernels (skipped without CUDA, failed when
xformers cannot run on it).

``slurm_cluster`` (session scope) is a real one-node SLURM cluster started by tests/slurm_cluster.py.
Without slurm-wlm/munge or root its tests are skipped with the reason; with DIT_REQUIRE_SLURM=1 in
the environment (CI sets it once it has installed the packages) they fail instead.

``smoke_run`` (session scope) is the tests' cut-down smoke config (config/test.yaml: the smoke
config with half its token budgets and one diverging noise-floor cell) run once end to end by
Snakemake on the local profile, in a temporary folder; ``make_pipeline`` writes a pipeline config of
a test's own (absolute workdir and results, optional overrides; by default from config/test.yaml, so
its runs are the smoke run's: same seeds, same numbers). tests/test_workflow.py and
tests/test_workflow_slurm.py use them, with ``Pipeline``, ``SnakemakeRun``, ``read_losses`` and
``copy_data`` from here.

``prepared_data`` and ``tiny_run`` (session scope) are the one prepared data set and the one trained
tiny run that the engine, evaluation, sampling and latent-space tests share; tests read them and copy
them before changing anything. ``caption_gain_run`` (session scope) is the caption-gain check's run,
made in a background process (tests/caption_gain.py); that check runs last.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from dit.attention import xformers_unavailable_reason

TESTS_DIRECTORY = Path(__file__).resolve().parent
REPOSITORY_ROOT = TESTS_DIRECTORY.parent
if str(TESTS_DIRECTORY) not in sys.path:
    sys.path.insert(0, str(TESTS_DIRECTORY))

import caption_gain  # noqa: E402
from prepared_clips import prepare_clips  # noqa: E402
from slurm_cluster import MARKER, SYSTEM_CONFIG, SlurmCluster, SlurmClusterError, missing_requirements  # noqa: E402
from training_runs import tiny_run_config, train_in_process  # noqa: E402

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


def cuda_xformers_outcome(cuda_available: bool, xformers_reason: str | None) -> tuple[str, str]:
    """What an xformers-on-CUDA test does: ("skip", why) without a CUDA device, ("fail", why) on a CUDA
    machine where xformers cannot run (a broken install must not pass as a skip), else ("run", "")."""
    if not cuda_available:
        return "skip", "needs a CUDA device (xformers memory_efficient_attention has no CPU kernel)"
    if xformers_reason is not None:
        return "fail", f"a CUDA device is here but xformers cannot run on it: {xformers_reason}"
    return "run", ""


@pytest.fixture
def cuda_xformers():
    """The CUDA device, for tests marked ``cuda`` that run xformers: skipped without a CUDA device; failed
    (with the reason) where a CUDA device exists but xformers cannot run on it."""
    available = torch.cuda.is_available()
    outcome, why = cuda_xformers_outcome(available, xformers_unavailable_reason(torch.device("cuda")) if available else None)
    if outcome == "skip":
        pytest.skip(why)
    if outcome == "fail":
        pytest.fail(why, pytrace=False)
    return torch.device("cuda")


CAPTION_GAIN_CHECK = "test_captions_lower_the_validation_loss_by_more_than_the_protocol_spread"


# Session fixtures that one process must own alone: the smoke workflow (run once, read by many tests) and the
# local SLURM cluster (one per machine: it rewrites /etc/slurm/slurm.conf). Under pytest-xdist
# (scripts/test.sh runs ``-n`` workers with ``--dist loadgroup``) every test that uses one of them, directly
# or through another fixture, goes to one worker, the "pipeline" group; every other test goes with the
# rest of its module, so a module's fixtures are made once.
PIPELINE_FIXTURES = frozenset({"smoke_run", "slurm_cluster"})
PIPELINE_GROUP = "pipeline"


def in_pipeline_group(item) -> bool:
    return bool(PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook, which reads the group marks
def pytest_collection_modifyitems(config, items):
    """The pipeline group first, then the caption-gain check, then the rest.

    The pipeline group is the longest unit of work (its SLURM tests mostly wait), so under pytest-xdist it
    starts at once on one worker while the others take the remaining tests, the longest of them first: the
    caption-gain check (its run trains for about 90 s on one core)."""
    def rank(item) -> int:
        return 0 if in_pipeline_group(item) else 1 if item.name == CAPTION_GAIN_CHECK else 2

    for item in items:
        item.add_marker(pytest.mark.xdist_group(PIPELINE_GROUP if rank(item) == 0 else item.nodeid.split("::")[0]))
    items.sort(key=rank)  # stable: collection order within each rank


@pytest.fixture(scope="session")
def caption_gain_run(tmp_path_factory):
    """(run folder, BackgroundCommand): the caption-gain run (tests/caption_gain.py), started in the background."""
    folder = tmp_path_factory.mktemp("caption-gain")
    process = BackgroundCommand(caption_gain.command(folder), timeout_s=900, output=folder / "caption-gain.log")
    yield folder / "run", process
    process.stop()


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """48 generated MP4 clips of 8 frames rendered at 32x32, prepared by ``python -m dit.data prepare`` at
    16x16 with a quarter for validation (as the default pipeline prepares its clips)."""
    return prepare_clips(tmp_path_factory.mktemp("prepared-data"), clips=48, seed=5, render_size=32)


@pytest.fixture(scope="session")
def tiny_run(prepared_data, tmp_path_factory) -> Path:
    """The completed tiny run (tests/training_runs.py) on ``prepared_data``, trained by ``dit.train.main``."""
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    assert train_in_process(tiny_run_config(prepared_data), out) == 0
    return out


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


# ------------------------------------------------------------------ the Snakemake pipeline, end to end

SNAKEFILE = REPOSITORY_ROOT / "Snakefile"
LOCAL_PROFILE = REPOSITORY_ROOT / "workflow" / "profiles" / "local"
SLURM_PROFILE = REPOSITORY_ROOT / "workflow" / "profiles" / "slurm"
TEST_CONFIG = "test"  # config/test.yaml
SMOKE_RUN_TIMEOUT_S = 780  # the whole workflow of config/test.yaml on 2 cores (about 1.5 to 3 minutes)
KILL_AFTER_S = 10


def merge_config(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in: nested mappings merge key by key, other values replace."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def workflow_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with this interpreter's folder first on PATH.

    The rules call ``python -m dit...`` and ``python -m analysis...``: that ``python`` must be the one
    running the tests (the project's venv), also when pytest was started as ``.venv/bin/python -m pytest``.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def bounded(command: list[str], timeout_s: float) -> list[str]:
    """``command`` under ``timeout -k`` (the whole process group dies at the limit: exit 124/137)."""
    return ["timeout", "-k", str(KILL_AFTER_S), str(int(timeout_s)), *map(str, command)]


def run_bounded(command: list[str], *, timeout_s: float, env: dict[str, str] | None = None,
                cwd: Path = REPOSITORY_ROOT) -> SnakemakeRun:
    """Run ``command`` under ``timeout -k`` (``bounded``) and wait for it."""
    started = time.monotonic()
    result = subprocess.run(
        bounded(command, timeout_s), cwd=cwd, env=workflow_environment(env), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=timeout_s + KILL_AFTER_S + 30,
    )
    return SnakemakeRun(list(map(str, command)), result.returncode, result.stdout, time.monotonic() - started)


@dataclass(frozen=True)
class PlannedJob:
    """One job block of Snakemake's output (``rule NAME:`` ... ``jobid:``, ``reason:``, ``wildcards:``)."""

    rule: str
    jobid: int | None
    reason: str
    wildcards: str
    resources: str
    local: bool  # printed as ``localrule``: run by this Snakemake process, not submitted to an executor
    priority: float = 0.0  # printed only when not 0


@dataclass
class SnakemakeRun:
    """A finished snakemake command: exit status, merged stdout/stderr and wall time in seconds."""

    command: list[str]
    returncode: int
    output: str
    seconds: float

    def tail(self, characters: int = 6000) -> str:
        return f"$ {' '.join(self.command)}\nexit {self.returncode} after {self.seconds:.0f} s\n" + self.output[-characters:]

    def job_counts(self) -> dict[str, int]:
        """The first ``Job stats`` table: jobs per rule (``total`` excluded)."""
        return job_counts(self.output)

    def jobs(self) -> list[PlannedJob]:
        """Every job block printed (planned in a dry run, started in a real run), in order."""
        return planned_jobs(self.output)


_JOB_HEADER = re.compile(r"^(local)?(?:rule|checkpoint) (\w+):$")


def job_counts(output: str) -> dict[str, int]:
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return {}
    counts = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def planned_jobs(output: str) -> list[PlannedJob]:
    jobs: list[PlannedJob] = []
    block: dict[str, str] | None = None

    def close() -> None:
        if block is not None:
            jobid = block.get("jobid")
            jobs.append(PlannedJob(block["rule"], int(jobid) if jobid and jobid.isdigit() else None,
                                   block.get("reason", ""), block.get("wildcards", ""), block.get("resources", ""),
                                   block["local"] == "yes", float(block.get("priority", 0))))

    for line in output.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            close()
            block = {"rule": header.group(2), "local": "yes" if header.group(1) else "no"}
        elif block is not None and line.startswith("    ") and ":" in line:
            key, _, value = line.strip().partition(":")
            block.setdefault(key, value.strip())
        elif block is not None and not line.startswith("    "):
            close()
            block = None
    close()
    return jobs


@dataclass
class Pipeline:
    """A pipeline config written for one test, with absolute ``workdir`` and ``results`` folders of its own.

    Snakemake runs from the repository root (as a user runs it) with ``--configfile`` naming this file;
    the Snakefile's own ``configfile: config/config.yaml`` is merged underneath, so keys given here win.
    """

    config_path: Path
    workdir: Path
    results: Path
    config: dict
    finished: SnakemakeRun | None = None  # the run that built it, for fixtures that run it

    def command(self, *options: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(self.config_path),
                *map(str, options)]

    def run(self, *options: str, timeout_s: float = SMOKE_RUN_TIMEOUT_S, env: dict[str, str] | None = None) -> SnakemakeRun:
        return run_bounded(self.command(*options), timeout_s=timeout_s, env=env)

    def run_dir(self, run_id: str) -> Path:
        return self.workdir / "runs" / run_id

    def with_overrides(self, overrides: dict, config_path: Path) -> "Pipeline":
        """The same folders with ``overrides`` merged into the config, written to ``config_path``."""
        return write_pipeline_config(config_path, merge_config(self.config, overrides))


def write_pipeline_config(config_path: Path, config: dict) -> Pipeline:
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return Pipeline(config_path, Path(config["workdir"]), Path(config["results"]), config)


def pipeline_in(directory: Path, source: str = TEST_CONFIG, overrides: dict | None = None) -> Pipeline:
    """``config/SOURCE.yaml`` with ``workdir`` = DIRECTORY/work, ``results`` = DIRECTORY/work/results and ``overrides``."""
    config = yaml.safe_load((REPOSITORY_ROOT / "config" / f"{source}.yaml").read_text())
    directory = Path(directory).resolve()
    config = merge_config(config, {"workdir": str(directory / "work"), "results": str(directory / "work" / "results")})
    return write_pipeline_config(directory / f"{source}.yaml", merge_config(config, overrides or {}))


def read_losses(path: Path) -> dict[tuple[str, int], tuple[str, str]]:
    """(run_id, milestone_tokens) -> (train_loss, validation_loss) of a runs table, as written (exact text), for
    every milestone reached (a run that reached none has one row with an empty milestone)."""
    with open(path, newline="") as handle:
        return {
            (row["run_id"], int(row["milestone_tokens"])): (row["train_loss"], row["validation_loss"])
            for row in csv.DictReader(handle) if row["milestone_tokens"]
        }


@pytest.fixture(scope="session")
def make_pipeline():
    """``make_pipeline(directory, source="test", overrides=None) -> Pipeline``: a config of one's own."""
    return pipeline_in


class BackgroundCommand:
    """A command (a snakemake run, the caption-gain run) started under ``timeout -k`` in a process group of its
    own, its merged output in ``output``; ``wait()`` gives the finished ``SnakemakeRun``, ``stop()`` kills what
    is left."""

    def __init__(self, command: list[str], *, timeout_s: float, output: Path, env: dict[str, str] | None = None):
        self.command, self.timeout_s, self.output = list(map(str, command)), timeout_s, Path(output)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        with open(self.output, "w") as handle:
            self.process = subprocess.Popen(bounded(self.command, timeout_s), cwd=REPOSITORY_ROOT, env=workflow_environment(env),
                                            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.result: SnakemakeRun | None = None

    def wait(self) -> SnakemakeRun:
        if self.result is None:
            self.process.wait(timeout=self.timeout_s + KILL_AFTER_S + 30)
            self.result = SnakemakeRun(self.command, self.process.returncode, self.output.read_text(),
                                       time.monotonic() - self.started)
        return self.result

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)


SMOKE_RUN_SELECTED = pytest.StashKey[bool]()


def pytest_collection_finish(session):
    session.config.stash[SMOKE_RUN_SELECTED] = any("smoke_run" in getattr(item, "fixturenames", ()) for item in session.items)


@pytest.fixture(scope="session")
def smoke_workflow(tmp_path_factory):
    """(pipeline, BackgroundCommand): the tests' smoke workflow (config/test.yaml) started on the local profile
    with 2 cores, in its own folders under pytest's temporary directory (work/ is never touched)."""
    pipeline = pipeline_in(tmp_path_factory.mktemp("smoke-run"))
    run = BackgroundCommand(pipeline.command("--cores", "2", "--profile", str(LOCAL_PROFILE)),
                              timeout_s=SMOKE_RUN_TIMEOUT_S, output=pipeline.config_path.parent / "snakemake.out")
    yield pipeline, run
    run.stop()


@pytest.fixture(autouse=True)
def start_the_smoke_workflow_early(request):
    """In the process that runs the pipeline group, the smoke workflow starts with the group's first test, when
    any selected test reads it: the SLURM harness tests, first in the group and mostly waiting for the
    cluster, then run while it trains."""
    if request.config.stash.get(SMOKE_RUN_SELECTED, False) and in_pipeline_group(request.node):
        request.getfixturevalue("smoke_workflow")


@pytest.fixture(scope="session")
def smoke_run(smoke_workflow) -> Pipeline:
    """The tests' smoke workflow (``smoke_workflow``) run once, end to end, on the local profile with 2 cores.

    Tests read it and must not change it (``copy_data`` copies its data). ``smoke_run.finished`` is the
    snakemake command's result (output, wall time).
    """
    pipeline, run = smoke_workflow
    result = run.wait()
    if result.returncode != 0:
        pytest.fail(f"the smoke workflow failed:\n{result.tail()}", pytrace=False)
    print(f"\nsmoke workflow, local profile, 2 cores: {result.seconds:.0f} s")
    pipeline.finished = result
    return pipeline


def copy_data(source: Pipeline, destination: Pipeline) -> None:
    """``source``'s generated clips, prepared shards and latent codec into ``destination``'s workdir, with their
    times, so Snakemake there finds the data stage done (its configs share the data settings)."""
    shutil.copytree(source.workdir / "data", destination.workdir / "data", symlinks=True)
