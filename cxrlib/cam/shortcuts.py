"""Shortcut checks on CAMs: mass in the border band (markers, text) or inside the lungs, and ROAD faithfulness."""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import crop_centre, resize_square
from ..transforms import eval_crop


def border_band(height: int, width: int, border: float) -> np.ndarray:
    """Bool (H, W): the outer band ``border`` x height rows and ``border`` x width columns wide on each side."""
    if not 0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border}")
    bh, bw = max(1, round(border * height)), max(1, round(border * width))
    band = np.ones((height, width), dtype=bool)
    band[bh:height - bh, bw:width - bw] = False
    return band


def mass_share(cams: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Share of each map's mass inside ``region`` (bool (H, W) or (N, H, W)); NaN for maps with no mass."""
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim == 2:
        cams = cams[None]
    region = np.broadcast_to(np.asarray(region, dtype=bool), cams.shape)
    if (cams < 0).any():
        raise ValueError("CAMs must be non-negative to share out their mass")
    total = cams.sum(axis=(1, 2))
    inside = np.where(region, cams, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = inside / total
    share[~np.isfinite(total) | (total <= 0)] = np.nan
    return share


def border_share(cams: np.ndarray, border: float = 0.12) -> np.ndarray:
    """Share of CAM mass in the outer border band (the central share is 1 minus this)."""
    cams = np.asarray(cams)
    return mass_share(cams, border_band(cams.shape[-2], cams.shape[-1], border))


def border_area(height: int, width: int, border: float = 0.12) -> float:
    """Fraction of the image the band covers: the border share a uniform map would have."""
    return float(border_band(height, width, border).mean())


def mask_in_cached_frame(mask_gray: np.ndarray, resize: int, crop_border: float = 0.0) -> np.ndarray:
    """A lung mask (uint8, any size) as uint8 (resize, resize) aligned to the cached, preprocessed images: square
    resize, then the same ``data.crop_border`` centre crop (equalisation does not move pixels)."""
    return crop_centre(resize_square(np.asarray(mask_gray, dtype=np.uint8), resize), crop_border)


def mask_in_input_frame(mask_gray: np.ndarray, resize: int, image_size: int, crop_border: float = 0.0) -> np.ndarray:
    """A lung mask (uint8, any size) as bool (image_size, image_size) in the frame the model sees.

    The same steps as the images: square resize to ``resize``, the ``data.crop_border`` crop, then the evaluation
    centre crop.
    """
    small = mask_in_cached_frame(mask_gray, resize, crop_border)
    return eval_crop(small[None], image_size)[0, 0].numpy() > 127


def random_maps(n: int, size: tuple[int, int], generator: torch.Generator, cells: int = 7) -> np.ndarray:
    """Baseline maps: uniform noise on a ``cells`` x ``cells`` grid, upsampled bilinearly (CAM-like blobs)."""
    noise = torch.rand((n, 1, cells, cells), generator=generator)
    up = F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(1).values[:, None, None]
    hi = up.flatten(1).max(1).values[:, None, None]
    return ((up - lo) / (hi - lo + 1e-7)).numpy().astype(np.float32)
