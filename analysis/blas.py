"""One OpenBLAS thread for the fits: ``limit_openblas_threads()``, called by the command-line entry points that fit.

The analysis works on small matrices (a few hundred points, at most five parameters), where OpenBLAS
threads only add overhead: scipy's L-BFGS-B calls BLAS on 5-vectors, and with two OpenBLAS threads
on a loaded 2-core machine each call takes ~50x longer (the smoke fit went from ~8 s to ~90 s).
Snakemake sets ``OPENBLAS_NUM_THREADS`` to a rule's ``threads``, so the fit sets it back to 1 (for
OpenBLAS libraries loaded later) and tells every OpenBLAS already loaded in the process to use one
thread. Nothing happens on import.
"""

from __future__ import annotations

import ctypes
import os

#: Names of OpenBLAS's thread-count setter in the builds numpy and scipy ship (and in plain OpenBLAS).
SETTERS = (
    "openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "scipy_openblas_set_num_threads64_",
)


def limit_openblas_threads() -> list[str]:
    """Run OpenBLAS with one thread in this process; returns the loaded libraries that were set.

    Sets ``OPENBLAS_NUM_THREADS=1`` (read by OpenBLAS when it loads) and calls the thread setter of
    each OpenBLAS library already mapped into the process (found in ``/proc/self/maps``; on systems
    without it only the environment variable applies).
    """
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        with open("/proc/self/maps") as handle:
            paths = {line.split(maxsplit=5)[-1].strip() for line in handle if "openblas" in line.lower()}
    except OSError:
        return []
    limited = []
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter(1)
                limited.append(path)
                break
    return limited
