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


#: On CPU, channels_last pays from this crop size on (oneDNN convolutions; resnet18 on 2 idle cores: a bare
#: training step ~1.2x faster at 112 px, slower at 64 px; an epoch against a plain loop on the same in-memory
#: images, with train.retain_memory, 1.23x at 112 and 128 px: bench/train_speed.py's compute_ratio).
CPU_CHANNELS_LAST_FROM = 96


def use_channels_last(device: torch.device, image_size: int, setting: str = "auto") -> bool:
    """Whether image batches and the model use the channels_last memory format (``train.memory_format``)."""
    if setting != "auto":
        return setting == "channels_last"
    return device.type == "cuda" or (device.type == "cpu" and image_size >= CPU_CHANNELS_LAST_FROM)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool | None = None) -> torch.Tensor:
    """Move a batch to ``device``; 4-D image batches go channels_last when asked (default: on CUDA)."""
    x = x.to(device, non_blocking=True)
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
