"""Device policy shared by training, evaluation, Grad-CAM and prediction."""

from __future__ import annotations

import torch

from .errors import CxrError


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: cuda (this process's local rank) > mps > cpu; otherwise the named device."""
    if spec != "auto":
        try:
            return torch.device(spec)
        except RuntimeError as exc:
            raise CxrError(f"train.device = {spec!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from exc
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device``; image batches go channels_last on CUDA."""
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
