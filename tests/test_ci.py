"""The CI entry point (.ci/run): under CI=true it cannot pass by skipping the SLURM tests.

``.ci/run`` is run with a PATH of stand-ins only: ``id`` (root or not), ``apt-get`` when the case has one
(records that it was asked, then fails), SLURM's programs when the case has them, and ``bash`` (records the
command ``.ci/run`` hands over to, and its DIT_REQUIRE_SLURM, instead of running the suite); its daemons'
folder (DIT_CI_SBIN) is an empty one, so every branch runs whatever this machine has installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SLURM_PROGRAMS = ("slurmctld", "slurmd", "munged", "sbatch", "srun", "squeue", "scancel")


def run_ci(tmp_path: Path, *, user_id: int, ci: bool, slurm: bool = False, apt_get: bool = True) -> tuple[subprocess.CompletedProcess, Path]:
    """``.ci/run`` with PATH holding only the stand-ins (and ``dirname``): SLURM's programs are there when
    ``slurm`` is true (the daemons' folder, DIT_CI_SBIN, is an empty one), apt-get when ``apt_get`` is."""
    fakes, sbin = tmp_path / "bin", tmp_path / "sbin"
    fakes.mkdir()
    sbin.mkdir()
    record = tmp_path / "record"
    scripts = {
        "id": f'#!/bin/sh\n[ "$1" = "-u" ] && echo {user_id} && exit 0\nexec /usr/bin/id "$@"\n',
        "bash": f'#!/bin/sh\necho "handed over: $* DIT_REQUIRE_SLURM=${{DIT_REQUIRE_SLURM:-unset}}" >> {record}\n',
    }
    if apt_get:
        scripts["apt-get"] = f'#!/bin/sh\necho "apt-get $*" >> {record}\nexit 100\n'
    if slurm:
        scripts.update({name: "#!/bin/sh\nexit 0\n" for name in SLURM_PROGRAMS})
    for name, text in scripts.items():
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    (fakes / "dirname").symlink_to(shutil.which("dirname"))
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "DIT_REQUIRE_SLURM")}
    env.update(PATH=str(fakes), DIT_CI_SBIN=str(sbin))
    if ci:
        env["CI"] = "true"
    result = subprocess.run(["/bin/bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    return result, record


def recorded(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_under_ci_a_machine_without_root_fails_before_the_tests(tmp_path):
    result, record = run_ci(tmp_path, user_id=1000, ci=True, slurm=True)
    assert result.returncode == 1
    assert "ci: not root, so a local SLURM cluster cannot be started (CI=true needs the SLURM tests to run)" in result.stderr
    assert recorded(record) == []  # neither apt-get nor the test suite ran


def test_outside_ci_a_machine_without_root_runs_the_suite_and_may_skip(tmp_path):
    result, record = run_ci(tmp_path, user_id=1000, ci=False, slurm=True)
    assert result.returncode == 0, result.stderr
    assert "SLURM tests will be skipped" in result.stderr
    assert recorded(record) == ["handed over: scripts/test.sh DIT_REQUIRE_SLURM=unset"]


def test_under_ci_as_root_with_slurm_installed_the_suite_runs_with_slurm_required(tmp_path):
    result, record = run_ci(tmp_path, user_id=0, ci=True, slurm=True)
    assert result.returncode == 0, result.stderr
    assert recorded(record) == ["handed over: scripts/test.sh DIT_REQUIRE_SLURM=1"]  # nothing installed


def test_under_ci_as_root_an_install_that_fails_stops_ci(tmp_path):
    result, record = run_ci(tmp_path, user_id=0, ci=True)
    assert result.returncode == 1
    assert "ci: slurm-wlm/munge could not be installed (CI=true needs the SLURM tests to run)" in result.stderr
    assert recorded(record)[-1].startswith("apt-get install") and not any("handed over" in r for r in recorded(record))


@pytest.mark.parametrize("ci", [True, False])
def test_as_root_without_slurm_or_apt_get_ci_stops_and_elsewhere_the_suite_may_skip(tmp_path, ci):
    result, record = run_ci(tmp_path, user_id=0, ci=ci, apt_get=False)
    reason = "slurm-wlm/munge are not installed and there is no apt-get to install them"
    if ci:
        assert result.returncode == 1
        assert f"ci: {reason} (CI=true needs the SLURM tests to run)" in result.stderr and recorded(record) == []
    else:
        assert result.returncode == 0, result.stderr
        assert f"ci: {reason}; SLURM tests will be skipped" in result.stderr
        assert recorded(record) == ["handed over: scripts/test.sh DIT_REQUIRE_SLURM=unset"]


PIPELINE_FIXTURES = ("smoke_run", "slurm_cluster")
GROUPING_FILES = ("tests/test_slurm_harness.py", "tests/test_workflow.py", "tests/test_sizes.py")


def _fixtures_per_test(files: tuple[str, ...]) -> dict[str, set[str]]:
    """Test name -> the fixtures pytest itself says it uses (``--fixtures-per-test``, without xdist)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
                             "--fixtures-per-test", *files], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    used: dict[str, set[str]] = {}
    test = None
    for line in result.stdout.splitlines():
        header = re.match(r"^-+ fixtures used by (\S+) -+$", line.strip()) or re.match(r"^- fixtures used by (\S+) -$", line.strip())
        if header:
            test = header.group(1)
            used[test] = set()
        elif test is not None and re.match(r"^\w+ -- ", line):
            used[test].add(line.split(" -- ")[0])
    return used


@pytest.mark.slow  # two pytest sessions of their own (about 15 s)
def test_xdist_keeps_the_pipeline_fixtures_in_one_group_and_each_module_in_its_own():
    """Under scripts/test.sh's options, every test that uses the smoke workflow or the SLURM cluster is in the
    group "pipeline" (one worker: those session fixtures are made once, and one cluster owns slurm.conf); every
    other test is in its module's group."""
    used = _fixtures_per_test(GROUPING_FILES)
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder",
                             "--setup-plan", "-v", "-p", "no:cacheprovider", *GROUPING_FILES],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    groups = dict(re.findall(r"^(tests/\S+?)@(\S+)\s*$", result.stdout, re.MULTILINE))
    assert len(groups) == len(used) > 40, result.stdout[-3000:]
    pipeline = set()
    for nodeid, group in groups.items():
        module, _, test = nodeid.partition("::")
        if used[test] & set(PIPELINE_FIXTURES):
            pipeline.add(test)
            assert group == "pipeline", nodeid
        else:
            assert group == module, nodeid
    assert {"test_cluster_node_is_idle_in_default_partition", "test_smoke_runs_table_has_every_run_at_every_milestone",
            "test_killed_run_resumes_on_rerun_with_identical_numbers"} <= pipeline


def test_every_test_that_reads_the_smoke_workflow_is_marked_slow():
    """The fast tier (``-m "not slow"``) must not start the smoke workflow, a minute or more of training: every test
    that takes its fixture (``smoke_run`` or ``smoke_workflow``) is marked slow, itself or by its module."""
    import importlib
    import inspect

    readers = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        module = importlib.import_module(path.stem)
        module_marks = {mark.name for mark in getattr(module, "pytestmark", [])}
        for name, function in vars(module).items():
            if not (name.startswith("test_") and inspect.isfunction(function)):
                continue
            if {"smoke_run", "smoke_workflow"} & set(inspect.signature(function).parameters):
                marks = module_marks | {mark.name for mark in getattr(function, "pytestmark", [])}
                readers.append((f"{path.name}::{name}", "slow" in marks))
    assert len(readers) > 5, readers
    assert [name for name, slow in readers if not slow] == []
