"""Finding, decoding and checking the images to score.

Files are decoded by the data layer (``decode_gray``: PNG/JPEG, DICOM with its modality and VOI LUTs,
MONOCHROME1 inverted) and resized to the run's ``resize`` exactly as the training cache does
(``resize_square``). ``out_of_distribution`` flags images unlike the chest radiographs the models saw; it warns,
it never refuses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..data import dicom
from ..data.images import decode_gray, preprocess, resize_square
from ..errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
ASPECT_RANGE = (0.6, 1.7)  # width / height of a chest radiograph
MIN_SIDE = 64  # px
MIN_STD = 2.0  # grey levels: below this an image is nearly constant
LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"}


@dataclass
class LoadedImage:
    """One decoded image: the original grayscale and its ``resize`` x ``resize`` copy, with its warnings."""

    path: str
    gray: np.ndarray
    resized: np.ndarray
    warnings: list[str] = field(default_factory=list)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named directly (whatever their suffix) and, under each folder, recursively, every file with an
    image suffix (png, jpg, jpeg, dcm) or the DICOM magic; sorted per folder, duplicates dropped."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*"))
                       if f.is_file() and (f.suffix.lower() in IMAGE_SUFFIXES or dicom.is_dicom(f)))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def out_of_distribution(gray: np.ndarray, view_position: str = "") -> list[str]:
    """Why ``gray`` looks unlike a frontal chest radiograph (an empty list when it does not)."""
    h, w = gray.shape
    found = []
    if not ASPECT_RANGE[0] <= w / h <= ASPECT_RANGE[1]:
        found.append(f"aspect ratio {w / h:.2f} outside {ASPECT_RANGE[0]}-{ASPECT_RANGE[1]}")
    if min(h, w) < MIN_SIDE:
        found.append(f"small image ({w}x{h} px, under {MIN_SIDE} px)")
    if float(gray.std()) < MIN_STD:
        found.append(f"nearly constant pixels (std {float(gray.std()):.2f})")
    if view_position.upper() in LATERAL_VIEWS:
        found.append(f"lateral view (DICOM ViewPosition {view_position})")
    return found


def load_image(path: str | os.PathLike, resize: int, crop_border: float = 0.0, equalize: bool = False) -> LoadedImage:
    """Decode ``path`` (DataError when it cannot be read), resize it and apply the run's mitigations as its image
    cache did (``data.crop_border``, ``data.equalize``); warnings per ``out_of_distribution``."""
    path = Path(path)
    gray = decode_gray(path)
    view = ""
    if dicom.is_dicom(path):
        try:
            view = dicom.dicom_info(path)["view_position"]
        except DataError:
            view = ""
    resized = preprocess(resize_square(gray, resize), crop_border, equalize)
    return LoadedImage(str(path), gray, resized, out_of_distribution(gray, view))
