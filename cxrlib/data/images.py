"""Robust decoding to 8-bit grayscale, square resizing, and an on-disk cache keyed by content hash.

Training reads the cache, so PNGs and JPEGs are decoded once per (image, size), never every epoch.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import io
from ..errors import DataError
from . import dicom

Image.MAX_IMAGE_PIXELS = 20000 * 20000  # radiographs are large but never this large


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the image content hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def decode_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a 2-D uint8 array.

    Handles 8/16-bit PNG, RGB/RGBA/LA/palette, JPEG (EXIF orientation applied) and DICOM (``.dcm`` or
    the DICM magic; see :mod:`cxrlib.data.dicom`). Raises DataError
    naming the file and the reason for zero-byte, truncated, corrupt or non-image files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    if size == 0:
        raise DataError(f"{path}: zero-byte file")
    if dicom.is_dicom(path):
        return dicom.decode_dicom(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_gray_uint8(img)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = "truncated image"
        raise DataError(f"{path}: corrupt image ({reason})") from exc


def _to_gray_uint8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= 255 and lo >= 0:
            return arr.astype(np.uint8)
        if hi == lo:
            return np.zeros(arr.shape, dtype=np.uint8)
        return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    # RGB, RGBA, LA, palette, 1-bit, CMYK: alpha is dropped, colour reduced by ITU-R 601 luma.
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 image to size x size (aspect ratio not kept, as in the original study)."""
    if gray.shape == (size, size):
        return gray
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.BILINEAR), dtype=np.uint8)


class ImageCache:
    """Decoded, resized images on disk: ``<cache_dir>/<size>/<sha[:2]>/<sha>.npy``."""

    def __init__(self, cache_dir: str | os.PathLike, size: int):
        self.root = Path(cache_dir).expanduser() / str(size)
        self.size = size

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.npy"

    def put(self, sha256: str, gray: np.ndarray) -> np.ndarray:
        """Resize ``gray`` and store it; returns the resized array."""
        small = resize_square(gray, self.size)
        target = self.path_for(sha256)
        if not target.exists():
            with io.atomic_path(target) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, small)
        return small

    def get(self, sha256: str, path: str | os.PathLike) -> np.ndarray:
        """The cached array for ``sha256``, decoding ``path`` on a miss."""
        target = self.path_for(sha256)
        if target.exists():
            try:
                arr = np.load(target)
                if arr.shape == (self.size, self.size) and arr.dtype == np.uint8:
                    return arr
            except (OSError, ValueError):
                pass  # a damaged cache entry is rebuilt below
            target.unlink(missing_ok=True)
        actual = file_sha256(path)  # never file another image's pixels under this hash
        if actual != sha256:
            raise DataError(f"{path}: content changed since it was scanned (sha256 {actual[:12]}…, expected "
                            f"{sha256[:12]}…): rebuild the splits")
        return self.put(sha256, decode_gray(path))


def load_images(
    paths: Sequence[str],
    sha256: Sequence[str],
    size: int,
    cache_dir: str | os.PathLike,
    progress: bool = False,
) -> np.ndarray:
    """Stack the cached size x size uint8 images for ``paths`` (decoding misses) into (N, size, size)."""
    if len(paths) != len(sha256):
        raise ValueError("paths and sha256 must be row-aligned")
    cache = ImageCache(cache_dir, size)
    out = np.empty((len(paths), size, size), dtype=np.uint8)
    items = zip(paths, sha256)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(paths), desc=f"images {size}px", leave=False)
    for i, (p, h) in enumerate(items):
        out[i] = cache.get(h, p)
    return out
