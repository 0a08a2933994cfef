"""How a fold's training uses the hardware: mixed precision, torch.compile, where augmentation runs.

None of these change what is learnt beyond floating-point rounding; each is a ``train`` param, resolved once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import TrainConfig


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: fp32) and whether the loss needs scaling (fp16 only)."""

    dtype: torch.dtype | None

    @property
    def scaled(self) -> bool:
        return self.dtype == torch.float16


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """``auto``: bf16 on a CUDA device that supports it, else fp16 on CUDA; fp32 elsewhere."""
    if setting == "fp32":
        return Precision(None)
    if setting == "bf16":
        return Precision(torch.bfloat16)
    if setting == "fp16":
        return Precision(torch.float16)
    if device.type == "cuda":
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return Precision(None)


def augment_on_device(setting: str, device: torch.device) -> bool:
    """Keep the uint8 images on the training device and augment there (``train.augment_on``; auto: on CUDA)."""
    return setting == "device" or (setting == "auto" and device.type == "cuda")


def maybe_compile(model: nn.Module, t: TrainConfig, echo: Callable[[str], None]) -> nn.Module:
    """``torch.compile(model)`` when ``train.compile``; the model itself when off or when compiling fails.

    Compilation is lazy, so a failure can only show at the first step: :class:`CompiledOrEager` catches it
    there and continues eagerly."""
    if not t.compile:
        return model
    try:
        compiled = torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - any backend problem means: train eagerly
        echo(f"torch.compile unavailable ({type(exc).__name__}: {exc}); training eagerly")
        return model
    return CompiledOrEager(compiled, model, echo)


class CompiledOrEager(nn.Module):
    """Calls the compiled model; if its first call fails (no C++ compiler, unsupported op), falls back for good."""

    def __init__(self, compiled: nn.Module, eager: nn.Module, echo: Callable[[str], None]):
        super().__init__()
        self.eager = eager
        self._compiled = [compiled]  # a list: not registered as a submodule (its parameters are eager's)
        self._echo = echo
        self.failed = False
        self.succeeded = False  # set after the first full training step (forward and backward) worked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self._compiled[0](x)
            except Exception as exc:  # noqa: BLE001 - compile errors surface here, at the first call
                self.failed = True
                self._echo(f"torch.compile failed at the first step ({type(exc).__name__}); training eagerly")
        return self.eager(x)
