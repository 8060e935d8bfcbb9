"""Real prepared data for tests: generated MP4 clips run through the data stage's ``generate`` and ``prepare``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The repository first, then whatever the caller put on PYTHONPATH (scripts/gpu-check.sh's carried wheels).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_module(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ARGS`` from the repository, with its output captured."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=ROOT)


def prepare_clips(
    base: Path,
    clips: int = 40,
    frames: int = 8,
    seed: int = 3,
    validation_fraction: float = 0.25,
    render_size: int = 16,
    size: int = 16,
    **generate,
) -> Path:
    """Generate ``clips`` clips of ``frames`` frames rendered at ``render_size`` pixels, prepare them at
    ``size`` x ``size``; returns the prepared folder (``base/prepared``).

    Both steps are ``python -m dit.data`` called in this process (``dit.data.__main__.main``), the
    decoding without worker processes. ``generate``: further ``dit.data generate`` options
    (``max_objects=1`` -> ``--max-objects 1``).
    """
    from dit.data.__main__ import main

    source, prepared = base / "source", base / "prepared"
    extra = [item for key, value in generate.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    for args in (
        ["generate", "--out", str(source), "--clips", str(clips), "--seed", str(seed),
         "--frames", str(frames), "--size", str(render_size), *extra],
        ["prepare", "--source", str(source), "--out", str(prepared), "--frames", str(frames),
         "--height", str(size), "--width", str(size), "--validation-fraction", str(validation_fraction),
         "--workers", "0"],
    ):
        assert main(args) == 0, args
    return prepared
