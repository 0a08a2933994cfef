"""Hannover Medical School COVID-19 image repository (ml-workgroup/covid-19-image-repository).

Layout: ``data.csv`` plus ``png/<image_id>.png``. Every image is of a COVID-19 patient, so every row is
``covid19``. Columns looked up tolerantly (case, spaces, ``_`` ignored): image ``image_id`` (or ``image``,
``filename``), patient ``patient_id``, view ``projection`` (or ``view``; values ``ap``/``pa``) and
``modality`` (``CR``/``DX``). Rows of another modality or a non-frontal projection are dropped and counted
in ``attrs["dropped"]``; rows whose image is missing are counted in ``attrs["skipped"]``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ...labels import COVID
from .collect import RowCollector
from .csvfile import is_frontal, pick_column, read_metadata_csv
from .generic import ImageFinder

NAME = "hannover"

_XRAY_MODALITIES = {"cr", "dx", "x-ray", "xray", ""}


def detect(folder: Path) -> bool:
    """A folder with ``data.csv`` and a ``png/`` folder."""
    return (folder / "data.csv").is_file() and (folder / "png").is_dir()


def read(folder: Path) -> pd.DataFrame:
    """One ``covid19`` row per frontal X-ray found under ``png/``."""
    meta_path = folder / "data.csv"
    meta = read_metadata_csv(meta_path)
    image_col = pick_column(meta.columns, "image_id", "imageid", "image", "filename", "file")
    if image_col is None:
        raise DataError(f"{meta_path}: no image column ('image_id') (columns: {list(meta.columns)})")
    patient_col = pick_column(meta.columns, "patient_id", "patientid", "patient")
    view_col = pick_column(meta.columns, "projection", "view", "view_position")
    modality_col = pick_column(meta.columns, "modality")
    finder = ImageFinder()
    rows = RowCollector(NAME, "modality", "view")
    for rec in meta.to_dict("records"):
        if modality_col and rec[modality_col].strip().lower() not in _XRAY_MODALITIES:
            rows.drop("modality")
        elif view_col and not is_frontal(rec[view_col]):
            rows.drop("view")
        else:
            name = rec[image_col].strip()
            patient = rec[patient_col].strip() if patient_col else ""
            rows.add(finder.find(folder / "png", name) if name else None, COVID, patient)
    return rows.table(meta)
