"""The conda recipe and pyproject.toml pin the same versions, and the pins are exact."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _requirement_pins(requirements):
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", requirement)
        assert match, f"requirement {requirement!r} is not an exact '==' pin"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def _pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _requirement_pins(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins.update(_requirement_pins(extra))
    return pins


def _conda_pip_pins():
    recipe = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [item["pip"] for item in recipe["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert len(pip_lists) == 1, "environment.yml must have exactly one pip: section"
    return _requirement_pins([line for line in pip_lists[0] if not line.startswith("-e")])


def test_every_pyproject_pin_is_exact_and_in_environment_yml():
    pyproject = _pyproject_pins()
    conda = _conda_pip_pins()
    assert pyproject == conda, {
        "only in pyproject": sorted(set(pyproject) - set(conda)),
        "only in environment.yml": sorted(set(conda) - set(pyproject)),
        "different": {k: (pyproject[k], conda[k]) for k in set(pyproject) & set(conda) if pyproject[k] != conda[k]},
    }


def test_design_card_packages_are_pinned():
    pins = _pyproject_pins()
    for package in ("torch", "xformers", "torchvision", "decord", "snakemake", "pandas", "matplotlib", "scipy", "pytest-benchmark"):
        assert package in pins, f"{package} is not pinned in pyproject.toml"


def test_python_version_in_recipe_is_supported_by_pyproject():
    recipe = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in recipe["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major_minor = tuple(int(x) for x in python.split("=")[1].split(".")[:2])
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", requires).group(1).split("."))
    high = tuple(int(x) for x in re.search(r"<\s*([\d.]+)", requires).group(1).split("."))
    assert low <= major_minor < high


def test_the_main_job_needs_no_test_extra():
    """`bash scripts/reproduce.sh` installs only the runtime dependencies; its last step, `snakemake --report`,
    imports pygments, which snakemake does not depend on (pytest does, which hid its absence)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _requirement_pins(project["dependencies"])
    assert "pygments" in runtime
    setup = (ROOT / "scripts" / "reproduce.sh").read_text()
    assert "scripts/setup-venv.sh" in setup and "--report" in setup


@pytest.mark.slow  # a pytest session that imports every benchmark
def test_the_readme_benchmark_command_collects_every_benchmark_file():
    """`python -m pytest benchmarks/ --benchmark-only` (README) must find benchmarks/bench_*.py."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    assert collected == {f"benchmarks/{path.name}" for path in (ROOT / "benchmarks").glob("bench_*.py")}
