"""What each shortcut control hides, as boolean masks in the frame of the cached images (resize x resize).

The band is defined in the network's input frame, like the Grad-CAM border share (``cam.shortcuts.border_band``):
the centre is the middle ``1 - 2 * border`` of the ``image_size`` crop, and everything outside it in the cached
image (the band plus the margin a crop may cut away) is the border. So a random training crop never shows a
sliver of the centre to the border-only model, and the centre-only model never sees border pixels.

The removed region gets one constant for every image: ``fill: mean`` is the mean pixel of the round's training
images, ``fill: zero`` is 0 (black). A per-image mean is deliberately not used: it would carry each image's
brightness, itself a possible shortcut, from the hidden region into the visible one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..cam.shortcuts import mask_in_cached_frame
from ..data.images import decode_gray

#: The controls, in report order: the study's own models, then the masked retrainings and the source probe.
CONTROLS = ("full", "border_only", "centre_only", "lungs_masked", "source_probe")


def centre_box(resize: int, image_size: int, border: float) -> np.ndarray:
    """Bool (resize, resize): True on the centre, the middle ``1 - 2 border`` of the centred ``image_size`` crop."""
    if not 0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border}")
    if not 0 < image_size <= resize:
        raise ValueError(f"image_size must be in 1..resize ({resize}), got {image_size}")
    top = int(round((resize - image_size) / 2.0))  # torchvision's centre-crop anchor
    band = max(1, round(border * image_size))
    box = np.zeros((resize, resize), dtype=bool)
    box[top + band:top + image_size - band, top + band:top + image_size - band] = True
    return box


def hidden_region(control: str, resize: int, image_size: int, border: float) -> np.ndarray:
    """The pixels ``border_only`` or ``centre_only`` replaces (bool (resize, resize))."""
    box = centre_box(resize, image_size, border)
    if control == "border_only":
        return box
    if control == "centre_only":
        return ~box
    raise ValueError(f"{control!r} has no fixed region (lungs_masked uses each image's mask)")


def fill_value(train_images: np.ndarray, fill: str) -> int:
    """The constant of the removed region: the training images' mean pixel (``mean``) or 0 (``zero``)."""
    if fill == "zero":
        return 0
    if fill == "mean":
        return int(round(float(np.mean(train_images)))) if len(train_images) else 0
    raise ValueError(f"fill must be mean or zero, got {fill!r}")


def apply_mask(images: np.ndarray, hidden: np.ndarray, value: int) -> np.ndarray:
    """A copy of uint8 (N, S, S) ``images`` with ``hidden`` ((S, S) or (N, S, S)) set to ``value``."""
    out = np.array(images, dtype=np.uint8, copy=True)
    out[np.broadcast_to(hidden, out.shape)] = np.uint8(value)
    return out


def lung_masks(mask_paths: Sequence[str], resize: int, crop_border: float = 0.0) -> np.ndarray:
    """Bool (N, resize, resize) lung masks aligned to the cached, preprocessed images (``data.crop_border``)."""
    out = np.zeros((len(mask_paths), resize, resize), dtype=bool)
    for i, path in enumerate(mask_paths):
        out[i] = mask_in_cached_frame(decode_gray(path), resize, crop_border) > 127
    return out


def has_mask(frame) -> np.ndarray:
    """Bool per row: the image has a lung mask (``mask_path`` set)."""
    if "mask_path" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame["mask_path"].fillna("").astype(str).str.len().to_numpy() > 0
