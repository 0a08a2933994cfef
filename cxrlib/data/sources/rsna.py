"""RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` plus ``stage_2_train_images/*.dcm``.

The labels file has one row per opacity box (``patientId,x,y,width,height,Target``); rows are collapsed per
``patientId`` (Target 1 if any row says so). The optional ``stage_2_detailed_class_info.csv``
(``patientId,class``) separates ``Normal`` from ``No Lung Opacity / Not Normal``. Labels: Target 1 ->
lung_opacity; Target 0 with class ``Normal`` -> normal; any other Target 0 (or every Target 0 without the
class file) -> other. The set has one image per patient, so ``patientId`` is the image name and the patient
id. Stage 1 file names (``stage_1_*``) are read the same way when stage 2 is absent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ...labels import LUNG_OPACITY, NORMAL, OTHER
from .collect import RowCollector
from .csvfile import pick_column, read_metadata_csv
from .generic import ImageFinder

NAME = "rsna_pneumonia"

STAGES = ("stage_2", "stage_1")


def _stage(folder: Path) -> str | None:
    for stage in STAGES:
        if (folder / f"{stage}_train_labels.csv").is_file() and (folder / f"{stage}_train_images").is_dir():
            return stage
    return None


def detect(folder: Path) -> bool:
    """A folder with ``stage_2_train_labels.csv`` and ``stage_2_train_images/`` (or the stage 1 names)."""
    return _stage(folder) is not None


def _column(meta: pd.DataFrame, path: Path, name: str) -> str:
    column = pick_column(meta.columns, name)
    if column is None:
        raise DataError(f"{path}: no {name!r} column (columns: {list(meta.columns)})")
    return column


def _classes(folder: Path, stage: str) -> tuple[dict[str, str], list[pd.DataFrame]]:
    path = folder / f"{stage}_detailed_class_info.csv"
    if not path.is_file():
        return {}, []
    meta = read_metadata_csv(path)
    pid, cls = _column(meta, path, "patientId"), _column(meta, path, "class")
    classes: dict[str, str] = {}
    for rec in meta.to_dict("records"):
        classes.setdefault(rec[pid].strip(), rec[cls].strip().lower())
    return classes, [meta]


def read(folder: Path) -> pd.DataFrame:
    """One row per patient (image) found; see the module docstring."""
    stage = _stage(folder)
    if stage is None:
        raise DataError(f"{folder}: no stage_2_train_labels.csv with stage_2_train_images/")
    path = folder / f"{stage}_train_labels.csv"
    meta = read_metadata_csv(path)
    pid, target = _column(meta, path, "patientId"), _column(meta, path, "Target")
    positive: dict[str, bool] = {}
    for rec in meta.to_dict("records"):
        key = rec[pid].strip()
        if key:
            positive[key] = positive.get(key, False) or rec[target].strip() in ("1", "1.0")
    classes, class_meta = _classes(folder, stage)
    finder = ImageFinder()
    rows = RowCollector(NAME)
    for patient, is_positive in positive.items():
        if is_positive:
            label = LUNG_OPACITY
        else:
            label = NORMAL if classes.get(patient) == "normal" else OTHER
        rows.add(finder.find(folder / f"{stage}_train_images", patient), label, patient)
    return rows.table(meta, *class_meta)
