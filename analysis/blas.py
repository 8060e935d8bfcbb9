"""One OpenBLAS thread for the fits: ``limit_openblas_threads()``, called by the command-line entry points that fit.

The analysis works on small matrices (a few hundred points, at most five parameters), where OpenBLAS
threads only add overhead: scipy's L-BFGS-B calls BLAS on 5-vectors, and with two OpenBLAS threads
on a loaded 2-core machine each call takes ~50x longer (the smoke fit went from ~8 s to ~90 s).
Snakemake sets ``OPENBLAS_NUM_THREADS`` to a rule's ``threads``, so the fit sets it back to 1 (for
OpenBLAS libraries loaded later) and tells every OpenBLAS already loaded in the process to use one
thread. Nothing happens on import.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Iterator

#: Names of OpenBLAS's thread-count getter, in the order of ``SETTERS``.
GETTERS = (
    "openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "scipy_openblas_get_num_threads64_",
)
#: Names of OpenBLAS's thread-count setter in the builds numpy and scipy ship (and in plain OpenBLAS).
SETTERS = (
    "openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "scipy_openblas_set_num_threads64_",
)


def _loaded_openblas() -> list[tuple[str, ctypes.CDLL]]:
    """The OpenBLAS libraries mapped into this process (``/proc/self/maps``), with their handles."""
    try:
        with open("/proc/self/maps") as handle:
            paths = {line.split(maxsplit=5)[-1].strip() for line in handle if "openblas" in line.lower()}
    except OSError:
        return []
    libraries = []
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            libraries.append((path, ctypes.CDLL(path)))
        except OSError:
            continue
    return libraries


def openblas_threads() -> dict[str, int]:
    """Each loaded OpenBLAS library's thread count (path -> threads)."""
    counts = {}
    for path, library in _loaded_openblas():
        getter = _first_function(library, GETTERS)
        if getter is not None:
            getter.restype = ctypes.c_int
            counts[path] = int(getter())
    return counts


@contextlib.contextmanager
def one_openblas_thread() -> Iterator[list[str]]:
    """``limit_openblas_threads()`` for the block, then ``OPENBLAS_NUM_THREADS`` and every library's count as before."""
    variable = os.environ.get("OPENBLAS_NUM_THREADS")
    before = openblas_threads()
    try:
        yield limit_openblas_threads()
    finally:
        if variable is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = variable
        for path, library in _loaded_openblas():
            if path in before:
                _set_threads(library, before[path])


def limit_openblas_threads() -> list[str]:
    """Run OpenBLAS with one thread in this process; returns the loaded libraries that were set.

    Sets ``OPENBLAS_NUM_THREADS=1`` (read by OpenBLAS when it loads) and calls the thread setter of
    each OpenBLAS library already mapped into the process (found in ``/proc/self/maps``; on systems
    without it only the environment variable applies).
    """
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return [path for path, library in _loaded_openblas() if _set_threads(library, 1)]


def _set_threads(library: ctypes.CDLL, threads: int) -> bool:
    """Call ``library``'s thread setter (the first of ``SETTERS`` it has); whether it had one."""
    setter = _first_function(library, SETTERS)
    if setter is None:
        return False
    setter.argtypes = [ctypes.c_int]
    setter(threads)
    return True


def _first_function(library: ctypes.CDLL, names: tuple[str, ...]):
    """The first of ``names`` that ``library`` exports (OpenBLAS builds name their functions differently), or None."""
    return next((getattr(library, name) for name in names if hasattr(library, name)), None)
