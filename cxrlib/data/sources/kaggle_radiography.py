"""Kaggle "COVID-19 Radiography Database" (Chowdhury, Rahman et al.), every release layout.

- v1: ``COVID-19 Radiography Database/{COVID-19,NORMAL,Viral Pneumonia}/NAME (n).png``
- v2: ``COVID-19_Radiography_Dataset/{COVID,Normal,Viral Pneumonia,Lung_Opacity}/NAME-n.png``
- v4: the v2 class folders each with ``images/`` and ``masks/`` (lung masks with the image's file name).

Class folders may be missing (a mirror may hold only COVID and Normal). The database has no patient ids.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ...labels import COVID, LUNG_OPACITY, NORMAL, VIRAL
from ..table import new_table
from .generic import image_names, subdirs

NAME = "covid19_radiography_database"

#: Class folder names (lower case) of every release, mapped to canonical labels.
CLASS_FOLDERS = {
    "covid": COVID,
    "covid-19": COVID,
    "normal": NORMAL,
    "viral pneumonia": VIRAL,
    "lung_opacity": LUNG_OPACITY,
    "lung opacity": LUNG_OPACITY,
}

_COVID_FOLDERS = {"covid", "covid-19"}
_ROOT_NAME = re.compile(r"covid[-_ ]?19[-_ ]radiography[-_ ](database|dataset)", re.IGNORECASE)


def detect(folder: Path) -> bool:
    """A folder with the database's class folders: named like the release, or with COVID plus another class."""
    classes = set(subdirs(folder)) & CLASS_FOLDERS.keys()
    if not classes:
        return False
    if _ROOT_NAME.fullmatch(folder.name):
        return True
    return bool(classes & _COVID_FOLDERS) and len(classes) >= 2


def read(folder: Path) -> pd.DataFrame:
    """One row per image; ``mask_path`` is the same-named file under ``masks/`` when the release has masks."""
    rows = []
    for name, class_dir in sorted(subdirs(folder).items()):
        label = CLASS_FOLDERS.get(name)
        if label is None:
            continue
        inner = subdirs(class_dir)
        image_dir = inner.get("images", class_dir)
        mask_dir = inner.get("masks")
        masks = set(image_names(mask_dir)) if mask_dir is not None else set()
        for image in image_names(image_dir):
            rows.append(
                {
                    "path": os.path.abspath(image_dir / image),
                    "label": label,
                    "source": NAME,
                    "patient_id": "",
                    "mask_path": os.path.abspath(mask_dir / image) if image in masks else "",
                }
            )
    return new_table(rows)
