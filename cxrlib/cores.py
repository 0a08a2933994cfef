"""CPU cores this process may use (its affinity mask where the OS has one), without importing torch."""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_budget() -> int:
    """CPU threads this job may use: the runner's share for it (``CXR_THREADS``, set when jobs run side by side
    or one starts alone), else every usable core."""
    try:
        return max(1, int(os.environ["CXR_THREADS"]))
    except (KeyError, ValueError):
        return usable_cores()
