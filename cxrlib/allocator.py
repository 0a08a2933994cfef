"""Keep freed memory for reuse (glibc's malloc), instead of handing it back to the OS.

A training step allocates and frees the same activation and gradient buffers every time. glibc serves large
blocks with fresh ``mmap`` pages (and trims the heap top), so each step page-faults those tens of megabytes in
again: on 2 cores, resnet18 at 112 px and batch 32 took ~17,000 minor page faults and ~260 ms per step; with the
freed blocks kept it takes a few hundred faults and ~230 ms (bench/train_speed.py). The price: the process's
resident memory stays at its peak instead of shrinking between steps. ``train.retain_memory`` switches it off;
the runner applies it to every job (its kernels through :data:`RETAIN_ENV`, read by glibc at process start).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems; blocks above it are still mapped and unmapped
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_TRIM_NEVER = 2**31 - 1
#: the same settings as environment variables, for processes started from here (glibc reads them at start)
RETAIN_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_MAX), "MALLOC_TRIM_THRESHOLD_": str(_TRIM_NEVER)}

_applied = False


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") else None  # musl has no mallopt
    except OSError:
        return None


def retain_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and never trim it, for the rest of this process (it is a
    process-wide setting). Returns True when set (now or earlier), False where the C library is not glibc."""
    global _applied
    if _applied:
        return True
    libc = _libc()
    if libc is None:
        return False
    mapped = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
    _applied = mapped and bool(libc.mallopt(M_TRIM_THRESHOLD, _TRIM_NEVER))
    return _applied
