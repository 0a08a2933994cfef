"""Kermany pediatric chest X-ray set ("Chest X-Ray Images (Pneumonia)").

Layouts: ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/`` or a bare ``{NORMAL,PNEUMONIA}/`` folder.
Viral vs bacterial comes from the file name (``person1_virus_6.jpeg``, ``person1_bacteria_1.jpeg``); a
pneumonia file with neither marker is labelled ``other``. Patient ids come from the file name too:
``personN`` for pneumonia, ``IM-XXXX`` / ``NORMAL2-IM-XXXX`` for normals ("" when the name has neither).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ...labels import BACTERIAL, NORMAL, OTHER, VIRAL
from ..table import new_table
from .generic import image_names, subdirs

NAME = "kermany"

SPLITS = ("train", "val", "test")

_PATIENT = re.compile(r"^(person\d+)_|^((?:NORMAL2-)?IM-\d+)-", re.IGNORECASE)
_KIND = re.compile(r"_(virus|bacteria)_", re.IGNORECASE)


def _is_class_level(folder: Path) -> bool:
    return {"normal", "pneumonia"} <= set(subdirs(folder))


def _split_folders(folder: Path) -> list[Path]:
    if _is_class_level(folder):
        return [folder]
    subs = subdirs(folder)
    return [subs[s] for s in SPLITS if s in subs and _is_class_level(subs[s])]


def detect(folder: Path) -> bool:
    """A folder with NORMAL and PNEUMONIA sub-folders, directly or under train/val/test."""
    return bool(_split_folders(folder))


def patient_id(file_name: str) -> str:
    """``personN``, ``IM-XXXX`` or ``NORMAL2-IM-XXXX`` from a Kermany file name; "" if none matches."""
    match = _PATIENT.match(file_name)
    if match is None:
        return ""
    return match.group(1) or match.group(2)


def pneumonia_label(file_name: str) -> str:
    """viral_pneumonia for ``*_virus_*``, bacterial_pneumonia for ``*_bacteria_*``, otherwise other."""
    match = _KIND.search(file_name)
    if match is None:
        return OTHER
    return VIRAL if match.group(1).lower() == "virus" else BACTERIAL


def read(folder: Path) -> pd.DataFrame:
    """One row per image of every split found (train, val, test)."""
    rows = []
    for split in _split_folders(folder):
        classes = subdirs(split)
        for cls, label_of in (("normal", lambda _: NORMAL), ("pneumonia", pneumonia_label)):
            class_dir = classes[cls]
            for name in image_names(class_dir):
                rows.append(
                    {
                        "path": os.path.abspath(class_dir / name),
                        "label": label_of(name),
                        "source": NAME,
                        "patient_id": patient_id(name),
                        "mask_path": "",
                    }
                )
    return new_table(rows)
