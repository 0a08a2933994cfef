"""Heat maps over the un-normalised grayscale image; empty or NaN maps are drawn as no heat at all."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps

from ..transforms import IMAGENET_MEAN, IMAGENET_STD


def denormalise_gray(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Undo the ImageNet normalisation of a gray batch (N, 3, H, W) -> uint8 (N, H, W) as the model saw it."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device)[None, :, None, None]
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device)[None, :, None, None]
    gray = (images.detach() * s + m).mean(dim=1)
    return (gray * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def blank_map(cam: np.ndarray, tol: float = 1e-6) -> bool:
    """True when ``cam`` carries no location: any NaN/inf, or (near) constant."""
    cam = np.asarray(cam, dtype=np.float64)
    return cam.size == 0 or not np.isfinite(cam).all() or float(cam.max() - cam.min()) <= tol


def overlay(gray: np.ndarray, cam: np.ndarray, colormap: str = "jet", alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``alpha`` x colour-mapped ``cam`` (values in [0, 1]) over the uint8 ``gray`` image.

    A blank map (NaN or constant, see ``blank_map``) returns the plain grayscale image.
    """
    gray = np.asarray(gray)
    cam = np.asarray(cam)
    if gray.ndim != 2 or cam.shape != gray.shape:
        raise ValueError(f"overlay: gray {gray.shape} and cam {cam.shape} must be the same 2-D shape")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    base = np.repeat(gray.astype(np.float32)[..., None] / 255.0, 3, axis=2)
    if blank_map(cam):
        out = base
    else:
        heat = colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3].astype(np.float32)
        out = (1.0 - alpha) * base + alpha * heat
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)
