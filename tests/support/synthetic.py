"""Tiny synthetic chest-X-ray-like data roots for tests (no real images in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from support.images import xray_like


def make_class_folders(root: Path, counts: dict[str, int], size: int = 48, seed: int = 0) -> Path:
    """Write ``root/<label>/<label>_<i>.png`` for each canonical label (the generic one-folder-per-class layout)."""
    rng = np.random.default_rng(seed)
    for k, (label, n) in enumerate(sorted(counts.items())):
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(xray_like(rng, size, brightness=12 * k)).save(folder / f"{label}_{i:03d}.png")
    return Path(root)
