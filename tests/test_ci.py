"""The CI entry point (.ci/run): under CI=true it cannot pass by skipping the SLURM tests.

``.ci/run`` is run with stand-ins first on PATH: ``id`` (root or not), ``apt-get`` (records that it was
asked, then fails) and ``bash`` (records the command ``.ci/run`` hands over to, and its
DIT_REQUIRE_SLURM, instead of running the suite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLURM_PROGRAMS = ("slurmctld", "slurmd", "munged", "sbatch", "srun", "squeue", "scancel")


def slurm_installed(path: str) -> bool:
    return all(shutil.which(name, path=path) or os.access(f"/usr/sbin/{name}", os.X_OK) for name in SLURM_PROGRAMS)


def run_ci(tmp_path: Path, *, user_id: int, ci: bool) -> tuple[subprocess.CompletedProcess, Path]:
    fakes = tmp_path / "bin"
    fakes.mkdir()
    record = tmp_path / "record"
    scripts = {
        "id": f'#!/bin/sh\n[ "$1" = "-u" ] && echo {user_id} && exit 0\nexec /usr/bin/id "$@"\n',
        "apt-get": f'#!/bin/sh\necho "apt-get $*" >> {record}\nexit 100\n',
        "bash": f'#!/bin/sh\necho "handed over: $* DIT_REQUIRE_SLURM=${{DIT_REQUIRE_SLURM:-unset}}" >> {record}\n',
    }
    for name, text in scripts.items():
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "DIT_REQUIRE_SLURM")}
    env["PATH"] = f"{fakes}{os.pathsep}{env['PATH']}"
    if ci:
        env["CI"] = "true"
    result = subprocess.run(["/bin/bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    return result, record


def recorded(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_under_ci_a_machine_without_root_fails_before_the_tests(tmp_path):
    result, record = run_ci(tmp_path, user_id=1000, ci=True)
    assert result.returncode == 1
    assert "ci: not root, so a local SLURM cluster cannot be started (CI=true needs the SLURM tests to run)" in result.stderr
    assert recorded(record) == []  # neither apt-get nor the test suite ran


def test_outside_ci_a_machine_without_root_runs_the_suite_and_may_skip(tmp_path):
    result, record = run_ci(tmp_path, user_id=1000, ci=False)
    assert result.returncode == 0, result.stderr
    assert "SLURM tests will be skipped" in result.stderr
    assert recorded(record) == ["handed over: scripts/test.sh DIT_REQUIRE_SLURM=unset"]


def test_under_ci_as_root_the_suite_runs_with_slurm_required_or_ci_stops(tmp_path):
    result, record = run_ci(tmp_path, user_id=0, ci=True)
    if slurm_installed(os.environ["PATH"]):
        assert result.returncode == 0, result.stderr
        assert recorded(record) == ["handed over: scripts/test.sh DIT_REQUIRE_SLURM=1"]
    else:  # the stand-in apt-get fails to install: CI stops instead of skipping
        assert result.returncode == 1
        assert "ci: slurm-wlm/munge could not be installed (CI=true needs the SLURM tests to run)" in result.stderr
        assert recorded(record)[-1].startswith("apt-get install") and not any("handed over" in r for r in recorded(record))
