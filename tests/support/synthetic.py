"""Tiny synthetic chest-X-ray-like data roots for tests (no real images in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def xray_like(rng: np.random.Generator, size: int = 48, brightness: int = 0) -> np.ndarray:
    """A gray image with two dark 'lungs' on a brighter body and random texture: distinct per draw."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = 150 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.08)
    lungs = np.exp(-(((xx - 0.3) ** 2) / 0.01 + ((yy - 0.5) ** 2) / 0.06)) + np.exp(-(((xx - 0.7) ** 2) / 0.01 + ((yy - 0.5) ** 2) / 0.06))
    img = body - 90 * lungs + rng.normal(0, 25, (size, size)) + brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def make_class_folders(root: Path, counts: dict[str, int], size: int = 48, seed: int = 0) -> Path:
    """Write ``root/<label>/<label>_<i>.png`` for each canonical label (the generic one-folder-per-class layout)."""
    rng = np.random.default_rng(seed)
    for k, (label, n) in enumerate(sorted(counts.items())):
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(xray_like(rng, size, brightness=12 * k)).save(folder / f"{label}_{i:03d}.png")
    return Path(root)
