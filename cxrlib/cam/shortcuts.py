"""Shortcut checks on CAMs: mass in the border band (markers, text) or inside the lungs, and ROAD faithfulness."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import resize_square
from ..transforms import eval_crop
from .targets import ClassProbability

ROAD_PERCENTILES = (20, 40, 60, 80)


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


def mask_in_input_frame(mask_gray: np.ndarray, resize: int, image_size: int) -> np.ndarray:
    """A lung mask (uint8, any size) as bool (image_size, image_size) in the frame the model sees.

    The same steps as the images: square resize to ``resize``, then the evaluation centre crop.
    """
    small = resize_square(np.asarray(mask_gray, dtype=np.uint8), resize)
    return eval_crop(small[None], image_size)[0, 0].numpy() > 127


def random_maps(n: int, size: tuple[int, int], generator: torch.Generator, cells: int = 7) -> np.ndarray:
    """Baseline maps: uniform noise on a ``cells`` x ``cells`` grid, upsampled bilinearly (CAM-like blobs)."""
    noise = torch.rand((n, 1, cells, cells), generator=generator)
    up = F.interpolate(noise, size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(1).values[:, None, None]
    hi = up.flatten(1).max(1).values[:, None, None]
    return ((up - lo) / (hi - lo + 1e-7)).numpy().astype(np.float32)


def road_scores(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[int],
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
) -> np.ndarray:
    """ROAD combined score per image (pytorch-grad-cam's ``ROADCombined``, target = class probability).

    (LeRF - MoRF) / 2 averaged over ``percentiles``: higher means removing the most relevant pixels hurts the
    target more than removing the least relevant ones, i.e. the map is more faithful. The imputer's noise
    draws from torch's global generator; it runs under a forked, seeded RNG state so scores are reproducible
    and the caller's RNG state is untouched.
    """
    if len(targets) != len(inputs) or len(cams) != len(inputs):
        raise ValueError("road_scores: inputs, cams and targets must have one entry per image")
    from pytorch_grad_cam.metrics.road import ROADCombined  # slow to import; only needed here

    metric = ROADCombined(percentiles=list(percentiles))
    callables = [ClassProbability(int(t)) for t in targets]
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # the library's imputer hands torch tensors to numpy (a NumPy 2 deprecation, harmless here)
        warnings.filterwarnings("ignore", message=".*__array_wrap__.*", category=DeprecationWarning)
        torch.manual_seed(seed)
        with torch.no_grad():
            device = next(model.parameters()).device
            scores = metric(inputs.detach().to(device), np.asarray(cams, dtype=np.float32), callables, model)
    return np.asarray(scores, dtype=np.float64).reshape(-1)
