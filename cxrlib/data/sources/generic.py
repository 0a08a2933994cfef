"""Generic sources, plus the file-listing helpers every reader shares.

Two generic layouts are read:

- a manifest CSV with columns ``path,label[,patient_id,source,mask_path]`` (any ``*.csv`` whose header has
  ``path`` and ``label``); relative paths are relative to the CSV's folder, labels must be canonical;
- one folder per canonical label (``root/normal/*.png``, ``root/covid19/*.png``, searched recursively).

Manifests may be UTF-8, cp1252 or Latin-1 (:mod:`.csvfile`). The source name is the column ``source`` when the manifest has one, otherwise the folder's name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ...errors import DataError
from ...labels import CANONICAL_LABELS
from ..table import new_table
from .csvfile import header, read_metadata_csv, with_warnings

#: Image file extensions every reader accepts (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")

_JUNK_DIRS = {"__macosx"}


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image extension (skips ``.DS_Store`` and ``._x.png`` forks)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_junk_dir(name: str) -> bool:
    """True for hidden folders and macOS archive debris (``__MACOSX``)."""
    return name.startswith(".") or name.lower() in _JUNK_DIRS


def subdirs(folder: Path) -> dict[str, Path]:
    """Visible sub-folders of ``folder`` keyed by lower-case name."""
    out: dict[str, Path] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for entry in entries:
        if not is_junk_dir(entry.name) and entry.is_dir():
            out[entry.name.lower()] = Path(entry.path)
    return out


def image_names(folder: Path) -> list[str]:
    """Sorted names of the image files directly inside ``folder``."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(e.name for e in entries if is_image_name(e.name) and e.is_file())


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (and its visible sub-folders when ``recursive``)."""
    if not recursive:
        return [folder / name for name in image_names(folder)]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not is_junk_dir(d)]
        found.extend(Path(dirpath) / f for f in filenames if is_image_name(f))
    return sorted(found)


class ImageFinder:
    """Case-insensitive look-up of image names, trying each image extension when the name has none."""

    def __init__(self) -> None:
        self._listings: dict[Path, dict[str, str]] = {}

    def find(self, folder: Path, name: str) -> Path | None:
        listing = self._listings.get(folder)
        if listing is None:
            listing = self._listings[folder] = {n.lower(): n for n in image_names(folder)}
        key = name.strip().lower()
        candidates = [key] if key.endswith(IMAGE_EXTENSIONS) else [key + ext for ext in IMAGE_EXTENSIONS]
        for candidate in candidates:
            if candidate in listing:
                return folder / listing[candidate]
        return None


# ---------------------------------------------------------------------------------------------- manifest


def manifest_files(folder: Path) -> list[Path]:
    """CSV files in ``folder`` whose header names both ``path`` and ``label`` columns."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.name.lower().endswith(".csv") or not entry.is_file():
            continue
        columns = {c.lower() for c in header(entry.path)}
        if {"path", "label"} <= columns:
            found.append(Path(entry.path))
    return found


def detect_manifest(folder: Path) -> bool:
    """True if ``folder`` holds at least one manifest CSV."""
    return bool(manifest_files(folder))


def read_manifest(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read one manifest CSV; DataError names the file and line for unknown labels or missing images."""
    csv_path = Path(csv_path)
    raw = read_metadata_csv(csv_path, what="manifest")
    raw.columns = [c.lower() for c in raw.columns]
    missing = [c for c in ("path", "label") if c not in raw.columns]
    if missing:
        raise DataError(f"{csv_path}: manifest lacks columns {missing}")
    if raw.empty:
        raise DataError(f"{csv_path}: manifest has no rows")
    base = csv_path.parent
    default_source = base.name
    rows = []
    for i, rec in enumerate(raw.to_dict("records")):
        line = i + 2  # the header is line 1
        label = rec["label"].strip().lower()
        if label not in CANONICAL_LABELS:
            raise DataError(
                f"{csv_path}: line {line}: unknown label {rec['label']!r} (known: {', '.join(CANONICAL_LABELS)})"
            )
        path = _manifest_path(csv_path, line, base, rec["path"], "path")
        mask = rec.get("mask_path", "").strip()
        rows.append(
            {
                "path": path,
                "label": label,
                "source": rec.get("source", "").strip() or default_source,
                "patient_id": rec.get("patient_id", "").strip(),
                "mask_path": _manifest_path(csv_path, line, base, mask, "mask_path") if mask else "",
            }
        )
    return with_warnings(new_table(rows), raw)


def _manifest_path(csv_path: Path, line: int, base: Path, value: str, column: str) -> str:
    value = value.strip()
    if not value:
        raise DataError(f"{csv_path}: line {line}: empty {column}")
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise DataError(f"{csv_path}: line {line}: {column} {value!r} does not exist ({path})")
    return os.path.abspath(path)


def read_manifests(folder: Path) -> pd.DataFrame:
    """Read every manifest CSV in ``folder`` into one table."""
    tables = [read_manifest(p) for p in manifest_files(folder)]
    if not tables:
        raise DataError(f"{folder}: no manifest CSV (a CSV with 'path' and 'label' columns)")
    return with_warnings(new_table([r for t in tables for r in t.to_dict("records")]), *tables)


# ----------------------------------------------------------------------------------------- class folders


def class_folders(folder: Path) -> dict[str, Path]:
    """Sub-folders of ``folder`` named by a canonical label (case-insensitive), keyed by label."""
    return {name: path for name, path in subdirs(folder).items() if name in CANONICAL_LABELS}


def detect_class_folders(folder: Path) -> bool:
    """True if ``folder`` has at least one sub-folder named by a canonical label."""
    return bool(class_folders(folder))


def read_class_folders(folder: Path) -> pd.DataFrame:
    """One row per image under ``folder/<label>/`` (recursive); source is the folder's name."""
    rows = [
        {"path": os.path.abspath(p), "label": label, "source": folder.name, "patient_id": "", "mask_path": ""}
        for label, sub in sorted(class_folders(folder).items())
        for p in list_images(sub, recursive=True)
    ]
    return new_table(rows)
