"""glibc malloc settings for a CPU training process: freed blocks are kept for reuse.

Every training step and validation pass allocates the same large activation tensors (at the default's
larger sizes, several MB each) and frees them again. On CPU PyTorch takes them from ``malloc``. With
glibc's default settings a block above the mmap threshold is mapped afresh and unmapped when freed, and
free memory at the top of the heap is given back to the kernel above the trim threshold, so a step
faults in the pages of its activations again and again. ``retain_freed_memory`` raises both thresholds
(``mallopt``): blocks up to ``MMAP_THRESHOLD_BYTES`` come from the heap and freed memory stays there for
the next step. Only where memory comes from changes, never an operation's arithmetic, so every loss
and parameter is the same to the bit (tests/test_train.py); the process's peak memory is unchanged and
its resident memory no longer shrinks between steps.

The settings are left alone where the user chose them (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) and where the C library
is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): larger values are refused.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def user_chose_malloc_settings(environ: dict | None = None) -> str | None:
    """The environment variable by which the user set glibc's thresholds, or ``None``."""
    environ = os.environ if environ is None else environ
    for name in USER_SETTINGS:
        if name in environ:
            return name
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def retain_freed_memory(environ: dict | None = None) -> dict:
    """Raise glibc's mmap and trim thresholds for this process (module docstring); says what was done.

    Returns ``{"applied": True, "mmap_threshold_bytes": ..., "trim_threshold_bytes": ...}``, or
    ``{"applied": False, "reason": ...}`` where the settings were left as they are.
    """
    chosen = user_chose_malloc_settings(environ)
    if chosen:
        return {"applied": False, "reason": f"set by the user ({chosen})"}
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {"applied": False, "reason": "the C library is not glibc"}
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        return {"applied": False, "reason": "mallopt refused the thresholds"}
    return {"applied": True, "mmap_threshold_bytes": MMAP_THRESHOLD_BYTES, "trim_threshold_bytes": TRIM_THRESHOLD_BYTES}
