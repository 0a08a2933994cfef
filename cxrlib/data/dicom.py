"""DICOM radiographs to 8-bit grayscale with pydicom, the way a viewer would show them.

Steps (DICOM PS3.3 C.11): the modality LUT (rescale slope/intercept or a Modality LUT Sequence); then the
VOI transform: a VOI LUT Sequence when present (through pydicom, its output min-max scaled), else the
first window centre/width (LINEAR, LINEAR_EXACT or SIGMOID, mapped straight onto 0..255, values outside the
window clipped); without either, data of more than 8 stored bits (or outside 0..255) is min-max scaled.
MONOCHROME1 (high values dark) is inverted last so bone is bright, as in MONOCHROME2. RGB is reduced by
ITU-R 601 luma. Compressed transfer syntaxes decode through pydicom's plugins (pylibjpeg where installed).

Multi-frame objects, objects without pixel data, and files pydicom cannot decode raise DataError naming the
file and the reason, so a scan lists them in its data-quality table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError

#: What to install for compressed (JPEG, JPEG-LS, JPEG 2000) pixel data.
PLUGIN_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"

_MAGIC_OFFSET = 128


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a ``.dcm`` file or one with the ``DICM`` magic after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read(path: Path, pixels: bool):
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError as exc:
        raise DataError(f"{path}: DICOM file, but pydicom is not installed (pip install pydicom)") from exc
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, force=path.suffix.lower() == ".dcm")
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({exc})") from exc
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: corrupt DICOM ({exc or type(exc).__name__})") from exc


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def dicom_info(path: str | os.PathLike) -> dict:
    """Header facts for callers that warn about views: ``view_position`` (e.g. PA, AP, LL), ``photometric``,
    ``frames``, ``modality`` and ``transfer_syntax`` ("" when absent). Pixel data is not read."""
    ds = _read(Path(path), pixels=False)
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return {
        "view_position": str(ds.get("ViewPosition", "") or "").strip(),
        "photometric": str(ds.get("PhotometricInterpretation", "") or "").strip(),
        "frames": _frames(ds),
        "modality": str(ds.get("Modality", "") or "").strip(),
        "transfer_syntax": syntax.name if syntax is not None else "",
    }


def decode_dicom(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-frame DICOM image to a 2-D uint8 array (see the module docstring)."""
    path = Path(path)
    ds = _read(path, pixels=True)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"{path}: DICOM without pixel data (not an image object)")
    frames = _frames(ds)
    if frames > 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames), not a single radiograph")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    arr = _pixels(path, ds)
    if photometric.startswith("MONOCHROME"):
        out = _monochrome(ds, arr)
        return 255 - out if photometric == "MONOCHROME1" else out
    if arr.ndim == 3 and arr.shape[-1] == 3:
        luma = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        return _minmax(luma) if luma.max() > 255 else np.round(luma).astype(np.uint8)
    raise DataError(f"{path}: unsupported DICOM photometric interpretation {photometric!r}")


def _pixels(path: Path, ds) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types (RuntimeError, ValueError, NotImplementedError...)
        if syntax is not None and syntax.is_compressed:
            raise DataError(
                f"{path}: compressed DICOM ({syntax.name}) and no decoder plugin could read it "
                f"({PLUGIN_HINT}): {exc}"
            ) from exc
        raise DataError(f"{path}: corrupt DICOM pixel data ({exc or type(exc).__name__})") from exc
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise DataError(f"{path}: DICOM pixel data has unexpected shape {arr.shape}")
    return arr


def _monochrome(ds, arr: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    modality = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds:  # a table is indexed by stored (integer) values
        indices = modality if np.issubdtype(modality.dtype, np.integer) else np.round(modality).astype(np.int64)
        return _minmax(np.asarray(apply_voi_lut(indices, ds, prefer_lut=True), dtype=np.float64))
    values = modality.astype(np.float64)
    window = _window(ds)
    if window is not None:
        return _apply_window(values, *window, str(ds.get("VOILUTFunction", "LINEAR")).strip().upper())
    bits = int(ds.get("BitsStored", 8) or 8)
    if bits <= 8 and values.min() >= 0 and values.max() <= 255:
        return np.round(values).astype(np.uint8)
    return _minmax(values)


def _first(value) -> float:
    """The first value of a possibly multi-valued DS element."""
    if isinstance(value, (str, bytes)):
        return float(value)
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _window(ds) -> tuple[float, float] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 0 else None


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window onto 0..1 by the DICOM VOI LUT function, then onto 0..255."""
    if function == "SIGMOID":
        unit = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        unit = (values - center) / width + 0.5
    else:  # LINEAR: the standard's centre - 0.5, width - 1 (a width of 1 is a threshold)
        unit = (values - (center - 0.5)) / max(width - 1.0, 1e-9) + 0.5
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
