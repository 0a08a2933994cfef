"""Robust decoding to 8-bit grayscale, square resizing, and an on-disk cache keyed by content hash.

Training reads the cache, so PNGs and JPEGs are decoded once per (image, ``data.resize``), never every epoch.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

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


def crop_centre(gray: np.ndarray, fraction: float) -> np.ndarray:
    """Cut ``fraction`` of the height/width from each side of a 2-D uint8 image and resize back to its shape."""
    if not fraction:
        return gray
    h, w = gray.shape
    dy, dx = round(fraction * h), round(fraction * w)
    inner = np.ascontiguousarray(gray[dy:h - dy, dx:w - dx])
    return np.asarray(Image.fromarray(inner).resize((w, h), Image.BILINEAR), dtype=np.uint8)


def equalize(gray: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """Contrast-limited histogram equalisation of a 2-D uint8 image (global; CLAHE without the tiles).

    Histogram bins above ``clip`` x the mean bin count are cut and the excess spread over all bins, so flat
    regions are not blown up into noise; the clipped cumulative histogram maps grey levels to 0..255.
    """
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    limit = clip * hist.sum() / 256
    excess = np.clip(hist - limit, 0, None).sum()
    hist = np.minimum(hist, limit) + excess / 256
    cdf = np.cumsum(hist)
    lut = np.round(255 * (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1e-9))
    return lut.astype(np.uint8)[gray]


def preprocess(gray: np.ndarray, crop_border: float = 0.0, equalized: bool = False) -> np.ndarray:
    """The study's mitigations on a cached image, in this order: centre crop (``data.crop_border``), then
    equalisation (``data.equalize``). Identity with the defaults."""
    out = crop_centre(gray, crop_border)
    return equalize(out) if equalized else out


def image_options(data: Any) -> dict[str, Any]:
    """``{"crop_border", "equalize"}`` of a DataConfig or of a checkpoint's ``meta["params"]["data"]`` (older
    checkpoints lack them: the defaults, i.e. no preprocessing)."""
    get = data.get if isinstance(data, dict) else (lambda key, default: getattr(data, key, default))
    return {"crop_border": float(get("crop_border", 0.0) or 0.0), "equalize": bool(get("equalize", False))}


def cache_variant(crop_border: float = 0.0, equalize: bool = False) -> str:
    """The cache folder suffix of preprocessed images: ``""`` for plain ones, so the variants never collide."""
    return (f"-crop{crop_border:g}" if crop_border else "") + ("-eq" if equalize else "")


class ImageCache:
    """Decoded, resized images on disk: ``<cache_dir>/<resize><variant>/<sha[:2]>/<sha>.npy``.

    ``variant`` (:func:`cache_variant`) names preprocessed copies (``128-crop0.1-eq``); they are made from the
    plain cached image on a miss.
    """

    def __init__(self, cache_dir: str | os.PathLike, resize: int, crop_border: float = 0.0, equalize: bool = False):
        self.root = Path(cache_dir).expanduser() / f"{resize}{cache_variant(crop_border, equalize)}"
        self.resize = resize
        self.options = (crop_border, equalize)
        self.plain = ImageCache(cache_dir, resize) if any(self.options) else None

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.npy"

    def put(self, sha256: str, gray: np.ndarray) -> np.ndarray:
        """Resize ``gray`` and store it; returns the resized array."""
        small = resize_square(gray, self.resize)
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
                if arr.shape == (self.resize, self.resize) and arr.dtype == np.uint8:
                    return arr
            except (OSError, ValueError):
                pass  # a damaged cache entry is rebuilt below
            target.unlink(missing_ok=True)
        if self.plain is not None:
            made = preprocess(self.plain.get(sha256, path), *self.options)
            with io.atomic_path(target) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, made)
            return made
        actual = file_sha256(path)  # never file another image's pixels under this hash
        if actual != sha256:
            raise DataError(f"{path}: content changed since it was scanned (sha256 {actual[:12]}…, expected "
                            f"{sha256[:12]}…): rebuild the splits")
        return self.put(sha256, decode_gray(path))


def load_images(
    paths: Sequence[str],
    sha256: Sequence[str],
    resize: int,
    cache_dir: str | os.PathLike,
    progress: bool = False,
    crop_border: float = 0.0,
    equalize: bool = False,
) -> np.ndarray:
    """Stack the cached resize x resize uint8 images for ``paths`` (decoding misses) into (N, resize, resize).

    ``crop_border`` / ``equalize``: the study's mitigations (:func:`preprocess`; pass ``**image_options(...)``
    of the run's data config or of a checkpoint's params), cached under their own variant folder."""
    if len(paths) != len(sha256):
        raise ValueError("paths and sha256 must be row-aligned")
    cache = ImageCache(cache_dir, resize, crop_border, equalize)
    out = np.empty((len(paths), resize, resize), dtype=np.uint8)
    items = zip(paths, sha256)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(paths), desc=f"images {resize}px", leave=False)
    for i, (p, h) in enumerate(items):
        out[i] = cache.get(h, p)
    return out
