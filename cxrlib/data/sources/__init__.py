"""Data source readers, one per native layout, and :func:`discover` to find them all under a data root.

Every reader turns one folder into a sample table (:func:`cxrlib.data.table.new_table`). ``discover`` walks
the root (down to ``max_depth`` folder levels) and lets the readers claim folders:

1. native readers are tried first, in ``READERS`` order: Kaggle radiography database (class folders),
   Cohen-style ``metadata.csv`` + ``images/``, Kermany ``NORMAL``/``PNEUMONIA``, Hannover ``data.csv`` +
   ``png/``, NIH ChestX-ray14 ``Data_Entry_2017*.csv`` + ``images*/``, RSNA ``stage_2_train_labels.csv`` +
   ``stage_2_train_images/``, and last a DICOM folder with a labels CSV (``dicom_labels``: only when a CSV
   in the folder names existing ``.dcm`` files, so manifests of PNG/JPEG files stay generic, while a
   manifest naming DICOM files is read by it). A claimed folder is read by that reader and not searched
   further;
2. generic readers (manifest CSV, one folder per canonical label) are tried only on folders that neither
   hold nor lie under a natively claimed folder, the highest such folder first. A CSV beside native
   sources (like ``dev_manifest.csv`` at the shared data root) is therefore never read as a manifest.

Folders listed in ``exclude`` are skipped entirely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from ...errors import DataError
from ..table import SOURCE_COLUMNS, check_table
from . import cohen, dicom_labels, generic, hannover, kaggle_radiography, kermany, nih, rsna
from .generic import subdirs

__all__ = ["Reader", "READERS", "READ_ERRORS", "MAX_DEPTH", "find_sources", "discover", "summarize"]

#: How many folder levels below the root are searched for sources.
MAX_DEPTH = 4


@dataclass(frozen=True)
class Reader:
    """A layout: ``detect(folder)`` says whether the folder is one, ``read(folder)`` returns its table."""

    name: str
    detect: Callable[[Path], bool]
    read: Callable[[Path], pd.DataFrame]
    generic: bool = False


#: Readers in the order they are tried on each folder.
READERS: list[Reader] = [
    Reader("covid19_radiography_database", kaggle_radiography.detect, kaggle_radiography.read),
    Reader("cohen", cohen.detect, cohen.read),
    Reader("kermany", kermany.detect, kermany.read),
    Reader("hannover", hannover.detect, hannover.read),
    Reader("nih_chestxray14", nih.detect, nih.read),
    Reader("rsna_pneumonia", rsna.detect, rsna.read),
    Reader("dicom_labels", dicom_labels.detect, dicom_labels.read),
    Reader("manifest", generic.detect_manifest, generic.read_manifests, generic=True),
    Reader("class_folders", generic.detect_class_folders, generic.read_class_folders, generic=True),
]


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data root does not exist")
    if not path.is_dir():
        raise DataError(f"{path}: data root is not a folder")
    path = path.resolve()
    if not any(os.scandir(path)):
        raise DataError(f"{path}: data root is empty")
    return path


def find_sources(
    root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = (), max_depth: int = MAX_DEPTH
) -> list[tuple[Reader, Path]]:
    """The (reader, folder) pairs ``discover`` would read, in folder order; see the module docstring."""
    root = _check_root(root)
    skip = {(root / Path(p).expanduser()).resolve() for p in exclude}
    native = [r for r in READERS if not r.generic]
    generic_readers = [r for r in READERS if r.generic]

    def scan(folder: Path, depth: int) -> tuple[list[tuple[Reader, Path]], bool]:
        # Returns the claims in this subtree and whether any of them is native.
        for reader in native:
            if reader.detect(folder):
                return [(reader, folder)], True
        claims: list[tuple[Reader, Path]] = []
        has_native = False
        if depth < max_depth:
            for _, sub in sorted(subdirs(folder).items()):
                if sub.resolve() in skip:
                    continue
                sub_claims, sub_native = scan(sub, depth + 1)
                claims += sub_claims
                has_native |= sub_native
        if not has_native:
            for reader in generic_readers:
                if reader.detect(folder):
                    return [(reader, folder)], False
        return claims, has_native

    claims, _ = scan(root, 0)
    return claims


#: What a reader may raise on a bad source; it costs only that source (see :func:`discover`).
READ_ERRORS = (DataError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError)


def discover(
    root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = (), max_depth: int = MAX_DEPTH
) -> pd.DataFrame:
    """Read every source under ``root`` into one table sorted by path.

    ``attrs["sources"]`` lists, per source folder read, the reader, source names, image count, the rows it
    ``skipped`` (missing image files) or ``dropped`` (filters), and its ``warnings`` (e.g. a metadata file
    read as cp1252). A source whose reader fails is left out and listed in ``attrs["failed"]`` as
    ``{"reader", "folder", "reason"}``; the others are still read. Raises DataError naming the folder when
    the root is missing or empty, no source is recognised, every source failed (the reasons are listed),
    no image is found, or one image is listed by two sources.
    """
    claims = find_sources(root, exclude=exclude, max_depth=max_depth)
    root = Path(root).expanduser().resolve()
    if not claims:
        raise DataError(
            f"{root}: no recognisable data source within {max_depth} folder levels "
            f"(looked for: {', '.join(r.name for r in READERS)})"
        )
    tables, report, failed = [], [], []
    for reader, folder in claims:
        try:
            table = reader.read(folder)
        except READ_ERRORS as exc:
            failed.append({"reader": reader.name, "folder": str(folder), "reason": str(exc) or type(exc).__name__})
            continue
        report.append(_report_entry(reader, folder, table))
        table = table.copy()
        table.attrs = {}
        tables.append(table)
    if not tables:
        reasons = "; ".join(f"{f['reader']} at {f['folder']}: {f['reason']}" for f in failed)
        raise DataError(f"{root}: no data source could be read ({reasons})")
    frame = pd.concat(tables, ignore_index=True)
    if frame.empty:
        raise DataError(f"{root}: sources found ({', '.join(r['folder'] for r in report)}) but no images in them")
    dup = frame["path"].duplicated(keep=False)
    if dup.any():
        first = frame.loc[dup, "path"].iloc[0]
        owners = sorted(set(frame.loc[frame["path"] == first, "source"]))
        raise DataError(f"{first}: image listed by more than one source folder ({owners}); exclude one of them")
    frame = frame[list(SOURCE_COLUMNS)].sort_values("path", kind="stable").reset_index(drop=True)
    check_table(frame, where=str(root))
    frame.attrs["sources"] = report
    frame.attrs["failed"] = failed
    return frame


def _report_entry(reader: Reader, folder: Path, table: pd.DataFrame) -> dict:
    return {
        "reader": reader.name,
        "folder": str(folder),
        "sources": sorted(set(table["source"])),
        "images": len(table),
        "skipped": table.attrs.get("skipped", 0),
        "dropped": dict(table.attrs.get("dropped", {})),
        "warnings": list(table.attrs.get("warnings", [])),
    }


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Images per source (rows) and label (columns), with patient counts and totals."""
    counts = pd.crosstab(table["source"], table["label"], margins=True, margins_name="total")
    patients = table[table["patient_id"] != ""].groupby("source")["patient_id"].nunique()
    counts["patients"] = patients.reindex(counts.index).fillna(0).astype(int)
    counts.loc["total", "patients"] = int(patients.sum())
    return counts
