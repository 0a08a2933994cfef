"""CPU cores this process may use (its affinity mask where the OS has one), without importing torch, and the
thread budget a job applies to the pools it already holds."""

from __future__ import annotations

import os
import sys


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


def apply_job_env(env: dict[str, str]) -> None:
    """What a forked worker or kernel must set itself (kernels started afresh read the environment at start): its
    thread budget in torch's pool and the BLAS / OpenMP pools it inherited from the runner, and glibc's
    settings when the job retains freed memory."""
    if "CXR_THREADS" in env:
        n = int(env["CXR_THREADS"])
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    from .allocator import RETAIN_ENV, retain_freed_memory

    if env.keys() >= RETAIN_ENV.keys():
        retain_freed_memory()
