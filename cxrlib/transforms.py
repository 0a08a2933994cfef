"""Batched image transforms on in-memory uint8 grayscale arrays (torchvision.transforms.v2 functional ops).

Images arrive already resized to ``data.resize`` (the cache). Training: random crop to ``image_size`` +
horizontal flip (+ optional rotation, brightness/contrast jitter); evaluation: centre crop. Gray is
replicated to three channels and normalised with ImageNet mean/std. Random parameters are drawn per image
from an explicit ``torch.Generator``, never from torch's global RNG.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_uint8_batch(images) -> torch.Tensor:
    """(N,S,S) or (N,1,S,S) uint8 numpy/tensor -> (N,1,S,S) uint8 tensor (no copy when possible)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected (N,S,S) or (N,1,S,S) grayscale images, got shape {tuple(x.shape)}")
    return x


def normalize(gray_uint8: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) uint8 -> (N,3,H,W) float32: gray replicated to RGB, ImageNet mean/std."""
    x = F.to_dtype(gray_uint8, torch.float32, scale=True)
    return _normalize_float(x)


def _normalize_float(x01: torch.Tensor) -> torch.Tensor:
    return F.normalize(x01.expand(-1, 3, -1, -1), list(IMAGENET_MEAN), list(IMAGENET_STD))


def eval_crop(images, image_size: int) -> torch.Tensor:
    """The geometric part of the evaluation transform: (N,1,image_size,image_size) uint8 centre crops."""
    x = as_uint8_batch(images)
    _check_size(x, image_size)
    return F.center_crop(x, [image_size, image_size])


def eval_batch(images, image_size: int) -> torch.Tensor:
    """The evaluation transform: centre crop to ``image_size`` and normalise -> (N,3,H,W) float32.

    Validation, evaluation, external validation, Grad-CAM and prediction all use this one function."""
    return normalize(eval_crop(images, image_size))


def _check_size(x: torch.Tensor, image_size: int) -> None:
    if x.shape[-1] < image_size or x.shape[-2] < image_size:
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are smaller than the crop train.image_size={image_size}")


@dataclass(frozen=True)
class AugParams:
    """Per-image random choices of one batch (None: that augmentation is off)."""

    top: Optional[torch.Tensor]
    left: Optional[torch.Tensor]
    flip: Optional[torch.Tensor]
    angle: Optional[torch.Tensor]
    brightness: Optional[torch.Tensor]
    contrast: Optional[torch.Tensor]


@dataclass(frozen=True)
class Augment:
    """Training transform. ``draw`` consumes the generator in a fixed order: crop, flip, rotation, jitter."""

    image_size: int
    random_crop: bool = True
    hflip: bool = True
    rotation: float = 0.0
    brightness: float = 0.0

    @classmethod
    def from_config(cls, train_cfg) -> "Augment":
        return cls(train_cfg.image_size, train_cfg.random_crop, train_cfg.hflip, train_cfg.rotation,
                   train_cfg.brightness)

    def draw(self, n: int, source_size: int, generator: torch.Generator) -> AugParams:
        top = left = flip = angle = bright = contrast = None
        if self.random_crop:
            span = source_size - self.image_size + 1
            top = torch.randint(0, span, (n,), generator=generator)
            left = torch.randint(0, span, (n,), generator=generator)
        if self.hflip:
            flip = torch.rand(n, generator=generator) < 0.5
        if self.rotation > 0:
            angle = (torch.rand(n, generator=generator) * 2 - 1) * self.rotation
        if self.brightness > 0:
            bright = 1 + (torch.rand(n, generator=generator) * 2 - 1) * self.brightness
            contrast = 1 + (torch.rand(n, generator=generator) * 2 - 1) * self.brightness
        return AugParams(top, left, flip, angle, bright, contrast)

    def apply(self, images, params: AugParams) -> torch.Tensor:
        """Apply drawn ``params`` to a uint8 batch -> normalised (N,3,H,W) float32."""
        x = as_uint8_batch(images)
        _check_size(x, self.image_size)
        h = self.image_size
        if params.top is None:
            x = F.center_crop(x, [h, h])
        else:
            x = torch.stack([x[i, :, t:t + h, l:l + h] for i, (t, l) in
                             enumerate(zip(params.top.tolist(), params.left.tolist()))])
        if params.flip is not None:
            x = torch.where(params.flip[:, None, None, None], F.horizontal_flip(x), x)
        if params.angle is not None:
            x = torch.stack([F.rotate(img, float(a), interpolation=v2.InterpolationMode.BILINEAR)
                             for img, a in zip(x, params.angle.tolist())])
        x = F.to_dtype(x, torch.float32, scale=True)
        if params.brightness is not None:
            # per image: F.adjust_brightness, then F.adjust_contrast (blend with the image mean)
            x = (x * params.brightness[:, None, None, None]).clamp_(0, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * params.contrast[:, None, None, None] + mean).clamp_(0, 1)
        return _normalize_float(x)

    def __call__(self, images, generator: torch.Generator) -> torch.Tensor:
        x = as_uint8_batch(images)
        return self.apply(x, self.draw(len(x), x.shape[-1], generator))


def check_batch_stats(x: torch.Tensor, where: str = "first training batch") -> tuple[float, float]:
    """Warn when a normalised batch is grossly off (mean far from 0, std far from 1): a known cause of
    constant predictions (unscaled pixels, blank images, wrong normalisation). Returns (mean, mean per-channel std)."""
    x = x.float()
    mean, std = float(x.mean()), float(x.transpose(0, 1).reshape(x.shape[1], -1).std(dim=1).mean())
    if not (abs(mean) < 2.0 and 0.1 < std < 3.0):
        warnings.warn(
            f"{where}: after normalisation mean={mean:.3g}, std={std:.3g} (expected about 0 and 1). "
            "Check the images (blank? not 8-bit?) and the normalisation; models fed such inputs often "
            "predict a constant class.", RuntimeWarning, stacklevel=2)
    return mean, std
