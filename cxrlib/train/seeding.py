"""Independent random streams derived from (seed, purpose, epoch, ...): no global seeding anywhere else."""

from __future__ import annotations

import os

import numpy as np
import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from (seed, purpose, epoch, ...) via numpy's SeedSequence (independent streams)."""
    words = [p if isinstance(p, int) else int.from_bytes(str(p).encode()[:8].ljust(8, b"\0"), "little")
             for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def set_deterministic(requested: bool, device: torch.device) -> dict:
    """``train.deterministic`` for this process: on a GPU, deterministic cuDNN (``benchmark`` off) and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``; CPU kernels already are. Returns what is in
    force, for train.json."""
    applied = bool(requested) and device.type == "cuda"
    if applied:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (CUDA >= 10.2)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return {"requested": bool(requested), "applied": applied,
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled())}
