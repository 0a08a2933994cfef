"""The synthetic images every test uses (no real X-rays in the repo), and one writer for them.

- ``pattern``: a deterministic gradient whose pixels depend on ``value`` (distinct files for source-layout tests);
- ``xray_like``: two dark 'lungs' on a brighter body with random texture (exploration, runner, external tests);
- ``band``: noise with a bright band whose position is the class (learnable in a few epochs: training tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern(size: int = 16, value: int = 0) -> np.ndarray:
    return ((np.arange(size * size).reshape(size, size) + 7 * value) % 256).astype(np.uint8)


def xray_like(rng: np.random.Generator, size: int = 48, brightness: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = 150 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.08)
    lungs = (np.exp(-(((xx - 0.3) ** 2) / 0.01 + ((yy - 0.5) ** 2) / 0.06))
             + np.exp(-(((xx - 0.7) ** 2) / 0.01 + ((yy - 0.5) ** 2) / 0.06)))
    img = body - 90 * lungs + rng.normal(0, 25, (size, size)) + brightness
    return np.clip(img, 0, 255).astype(np.uint8)


def band(rng: np.random.Generator, size: int, class_index: int) -> np.ndarray:
    img = rng.integers(30, 110, (size, size)).astype(np.uint8)
    q = size // 4
    img[class_index * q: class_index * q + q + 4, :] += 120  # the class is where the bright band is
    return img


def write(path: str | Path, pixels: np.ndarray) -> Path:
    """Save a 2-D uint8 array as PNG or JPEG (by extension), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)
    return path
