"""NIH ChestX-ray14 (Wang et al. 2017): ``Data_Entry_2017*.csv`` plus ``images*/`` folders.

Images may lie in ``images/``, ``images_001/`` ... or ``images_001/images/`` (the Kaggle mirror's 12 parts);
parts not downloaded are simply missing and counted in ``attrs["skipped"]``. Labels: ``No Finding`` ->
normal; every other finding list (including ``Pneumonia``, which the set does not split into viral and
bacterial) -> other. Patient id from ``Patient ID``. Only PA/AP ``View Position`` rows are kept; others are
counted in ``attrs["dropped"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ...errors import DataError
from ...labels import NORMAL, OTHER
from .collect import RowCollector
from .csvfile import is_frontal, pick_column, read_metadata_csv
from .generic import image_names, subdirs

NAME = "nih_chestxray14"

_ENTRY = re.compile(r"data_entry_2017.*\.csv", re.IGNORECASE)
_IMAGE_DIR = re.compile(r"images(_\d+)?", re.IGNORECASE)


def entry_files(folder: Path) -> list[Path]:
    """The ``Data_Entry_2017*.csv`` files directly in ``folder``."""
    try:
        return sorted(p for p in folder.iterdir() if _ENTRY.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


def image_dirs(folder: Path) -> list[Path]:
    """``images*/`` sub-folders and the ``images/`` folder inside each."""
    found = []
    for name, sub in sorted(subdirs(folder).items()):
        if _IMAGE_DIR.fullmatch(name):
            found.append(sub)
            inner = subdirs(sub).get("images")
            if inner is not None:
                found.append(inner)
    return found


def detect(folder: Path) -> bool:
    """A folder with a ``Data_Entry_2017*.csv`` and at least one ``images*/`` folder."""
    return bool(entry_files(folder)) and bool(image_dirs(folder))


def finding_label(findings: str) -> str:
    """normal for ``No Finding``, other for anything else (the set has no viral/bacterial split)."""
    return NORMAL if findings.strip().lower() == "no finding" else OTHER


def read(folder: Path) -> pd.DataFrame:
    """One row per frontal image found; see the module docstring."""
    listing = {name: d / name for d in image_dirs(folder) for name in image_names(d)}
    paths = entry_files(folder)
    metas = [read_metadata_csv(p) for p in paths]
    rows = RowCollector(NAME, "view")
    for path, meta in zip(paths, metas):
        image_col = pick_column(meta.columns, "Image Index")
        finding_col = pick_column(meta.columns, "Finding Labels")
        if image_col is None or finding_col is None:
            raise DataError(f"{path}: needs 'Image Index' and 'Finding Labels' columns (columns: {list(meta.columns)})")
        patient_col = pick_column(meta.columns, "Patient ID")
        view_col = pick_column(meta.columns, "View Position")
        for rec in meta.to_dict("records"):
            if view_col and not is_frontal(rec[view_col]):
                rows.drop("view")
                continue
            patient = rec[patient_col].strip() if patient_col else ""
            rows.add(listing.get(rec[image_col].strip()), finding_label(rec[finding_col]), patient)
    return rows.table(*metas)
