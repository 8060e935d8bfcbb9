"""Provenance recorded in every result file: code version, package versions, config and its hash."""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy

from dit import __version__

#: Distributions whose versions are recorded with every result.
TRACKED_PACKAGES = (
    "torch",
    "torchvision",
    "xformers",
    "decord",
    "av",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "snakemake",
    "pyyaml",
    "pyarrow",
    "pygments",
    "jinja2",
    "tabulate",
    "jsonschema",
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Keys of result records whose values are clock readings (timestamps, durations, rates), not results:
#: the only values allowed to differ when the same command regenerates a file on the same machine.
VOLATILE_KEYS = frozenset({"created_utc", "seconds", "wall_time_s", "tokens_per_s", "timing_seconds"})


def without_volatile(record: Any) -> Any:
    """``record`` (nested dicts and lists) with every ``VOLATILE_KEYS`` entry removed, for comparisons."""
    if isinstance(record, dict):
        return {key: without_volatile(value) for key, value in record.items() if key not in VOLATILE_KEYS}
    if isinstance(record, list):
        return [without_volatile(value) for value in record]
    return record


def config_hash(config: Any) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys), as hex."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed version of each tracked distribution (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: Committed folders that the pipeline itself rewrites (its regenerated outputs): a change there is a result,
#: not a change of the code, so it does not make the code version dirty.
REGENERATED_OUTPUTS = ("results", "results-*")


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Git commit of the project and whether its tracked files, apart from the regenerated outputs
    (``REGENERATED_OUTPUTS``), had uncommitted changes.

    ``DIT_CODE_VERSION`` overrides the commit (for installs without a git checkout).
    """
    return _code_version(PROJECT_ROOT)


def _code_version(root: Path) -> dict[str, Any]:
    override = os.environ.get("DIT_CODE_VERSION")
    if override:
        return {"commit": override, "dirty": None, "source": "DIT_CODE_VERSION"}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             *(f":(exclude,glob){pattern}/**" for pattern in REGENERATED_OUTPUTS)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip()), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None, "source": "no git checkout"}


#: CPU flag prefixes that decide which SIMD kernels numpy, OpenBLAS, MKL, oneDNN and ATen run.
SIMD_FLAG_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi")


@lru_cache(maxsize=1)
def cpu_description() -> dict[str, Any]:
    """The CPU model, core count and SIMD flags (from ``/proc/cpuinfo`` where it exists).

    Other instruction sets make the math libraries pick other kernels, and so other rounding:
    ``cpu_flags_sha256`` (of the whole flag list) tells two machines apart at a glance.
    """
    record: dict[str, Any] = {"machine": platform.machine(), "logical_cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        record["model"] = platform.processor() or None
        return record
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = sorted(fields.get("flags", "").split())
    record["model"] = fields.get("model name")
    record["simd_flags"] = [flag for flag in flags if flag.startswith(SIMD_FLAG_PREFIXES)]
    record["cpu_flags_sha256"] = hashlib.sha256(" ".join(flags).encode()).hexdigest()
    return record


def math_libraries() -> dict[str, Any]:
    """The numerical builds in use: numpy's BLAS, and torch's BLAS, oneDNN and CPU capability if torch is loaded.

    torch is read only when this process has already imported it (``analysis`` never does).
    """
    record: dict[str, Any] = {}
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        record["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except (KeyError, TypeError, AttributeError):
        record["numpy_blas"] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        lines = [line.strip(" -") for line in torch.__config__.show().splitlines()]
        wanted = ("Math Kernel Library", "MKL-DNN", "oneDNN", "LAPACK", "CPU capability", "OpenMP")
        record["torch_build"] = [line for line in lines if line.startswith(wanted) or any(w in line for w in wanted[:3])]
        settings = next((line for line in lines if line.startswith("Build settings:")), "")
        settings = settings.removeprefix("Build settings:").strip()
        record["torch_blas"] = next(
            (item.split("=", 1)[1] for item in settings.split(", ") if item.startswith("BLAS_INFO=")), None
        )
        record["torch_threads"] = torch.get_num_threads()
    return record


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_without_clocks(path: str | os.PathLike) -> list[list[str]]:
    """A CSV table's cells as written, header first, without its clock columns (``VOLATILE_KEYS``)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [index for index, name in enumerate(rows[0]) if name not in VOLATILE_KEYS] if rows else []
    return [[row[index] for index in kept if index < len(row)] for row in rows]


def table_sha256_without_clocks(path: str | os.PathLike) -> str:
    """Hex SHA-256 of ``table_without_clocks(path)``: the same for two tables that differ only in their clock
    readings, as a regenerated runs table does."""
    digest = hashlib.sha256()
    for row in table_without_clocks(path) or [[]]:
        digest.update(json.dumps(row).encode() + b"\n")
    return digest.hexdigest()


def provenance(config: Any | None = None) -> dict[str, Any]:
    """A provenance record: time, code version, packages, Python, platform, CPU, math libraries, config and hash."""
    record: dict[str, Any] = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "project_version": __version__,
        "code_version": code_version(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "math_libraries": math_libraries(),
    }
    if config is not None:
        record["config"] = config
        record["config_hash"] = config_hash(config)
    return record
