"""Cohen "covid-chestxray-dataset" style sources: ``metadata.csv`` plus ``images/``.

Also reads the two repositories that copy its format (agchung/Actualmed-COVID-chestxray-dataset and
agchung/Figure1-COVID-chestxray-dataset). Differences handled:

- image column ``filename`` (Cohen) or ``imagename`` (Actualmed); Figure1 has neither, its image is
  ``images/<patientid>.<jpg|jpeg|png>``; a name without an image extension is tried with each;
  names are matched case-insensitively; a ``folder`` column (Cohen: ``images``/``volumes``) picks the folder;
- no ``modality`` column means X-ray; no ``view`` column, or an empty view, keeps the row;
- ``finding`` values, flat (``SARS``, ``Streptococcus``) or hierarchical (``Pneumonia/Viral/SARS``), are
  mapped by :func:`finding_label`; rows with an empty finding (Actualmed's "Inconclusive") are dropped,
  because calling an unconfirmed case ``other`` would mislabel possible COVID-19 cases;
- Figure1 patient ids carry an image letter (``COVID-00003a``, ``COVID-00003b``): it is removed.

The CSV may be UTF-8, cp1252 or Latin-1 (:mod:`.csvfile`); a fallback is reported in ``attrs["warnings"]``.
Rows whose image file is missing are skipped, never fatal: the returned table's ``attrs["skipped"]`` counts
them and ``attrs["dropped"]`` counts rows left out by modality, view, empty finding and duplicate image.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ...errors import DataError
from ...labels import BACTERIAL, COVID, NORMAL, OTHER, VIRAL
from ..table import new_table
from .csvfile import read_metadata_csv, with_warnings
from .generic import ImageFinder

NAME = "cohen"

#: Views kept by default. ``AP erect`` is an upright AP film (Figure1 uses it); it is kept with AP.
FRONTAL_VIEWS = ("PA", "AP", "AP Supine", "AP erect")

_XRAY = {"x-ray", "xray", "cxr"}
_NORMAL_FINDINGS = {"no finding", "normal"}
_VIRAL_FINDINGS = {"viral", "viral pneumonia", "sars", "mers", "mers-cov", "influenza", "h1n1", "varicella", "herpes"}
_BACTERIAL_FINDINGS = {
    "bacterial",
    "bacterial pneumonia",
    "streptococcus",
    "klebsiella",
    "legionella",
    "chlamydophila",
    "e.coli",
    "mycoplasma",
    "mycoplasma bacterial pneumonia",
    "staphylococcus",
    "mrsa",
    "nocardia",
}


def source_name(folder: Path) -> str:
    """``actualmed`` or ``figure1`` when the repository folder is named so, else ``cohen``."""
    name = re.sub(r"[^a-z0-9]", "", folder.name.lower())
    if "actualmed" in name:
        return "actualmed"
    if "figure1" in name:
        return "figure1"
    return NAME


def detect(folder: Path) -> bool:
    """A folder with ``metadata.csv`` and an ``images/`` folder."""
    return (folder / "metadata.csv").is_file() and (folder / "images").is_dir()


_UNDETERMINED_FINDINGS = frozenset({"todo", "unknown", "inconclusive"})


def finding_label(finding: str) -> str | None:
    """Canonical label of a ``finding`` value; None when it is empty or not yet determined (todo, unknown).

    Any comma-separated part ending in COVID-19 -> covid19; ``Pneumonia/Viral/...`` or a viral organism ->
    viral_pneumonia; ``Pneumonia/Bacterial/...`` or a bacterial organism -> bacterial_pneumonia;
    ``No Finding``/``normal`` -> normal; anything else (fungal, lipoid, plain Pneumonia...) -> other.
    An undetermined finding could be COVID-19, so it is dropped (and counted), never called ``other``.
    """
    parts = [" ".join(p.split()).lower() for p in str(finding).split(",")]
    parts = [p for p in parts if p and p not in _UNDETERMINED_FINDINGS]
    if not parts:
        return None
    if any(p.endswith("covid-19") or p.endswith("covid19") for p in parts):
        return COVID
    first = parts[0]
    if first in _NORMAL_FINDINGS:
        return NORMAL
    segments = [s.strip() for s in first.split("/")]
    if segments[0] == "pneumonia" and len(segments) > 1:
        return {"viral": VIRAL, "bacterial": BACTERIAL}.get(segments[1], OTHER)
    if segments[-1] in _VIRAL_FINDINGS:
        return VIRAL
    if segments[-1] in _BACTERIAL_FINDINGS:
        return BACTERIAL
    return OTHER


def _normal_view(view: str) -> str:
    return " ".join(view.split()).lower()


def read(folder: Path, views: tuple[str, ...] = FRONTAL_VIEWS) -> pd.DataFrame:
    """One row per kept X-ray; see the module docstring for filtering and the ``skipped``/``dropped`` attrs."""
    meta_path = folder / "metadata.csv"
    meta = read_metadata_csv(meta_path)
    columns = {c.strip().lower(): c for c in meta.columns}
    if "finding" not in columns:
        raise DataError(f"{meta_path}: no 'finding' column (columns: {list(meta.columns)})")
    name_col = columns.get("filename") or columns.get("imagename")
    patient_col = columns.get("patientid") or columns.get("patient_id")
    if name_col is None and patient_col is None:
        raise DataError(f"{meta_path}: no image column ('filename' or 'imagename') and no 'patientid'")
    source = source_name(folder)
    kept_views = {_normal_view(v) for v in views}
    finder = ImageFinder()
    dropped = {"modality": 0, "view": 0, "empty_finding": 0, "duplicate": 0}
    skipped = 0
    seen: set[str] = set()
    rows = []
    for rec in meta.to_dict("records"):
        if "modality" in columns and rec[columns["modality"]].strip().lower() not in _XRAY | {""}:
            dropped["modality"] += 1
            continue
        if "view" in columns:
            view = _normal_view(rec[columns["view"]])
            if view and view not in kept_views:
                dropped["view"] += 1
                continue
        label = finding_label(rec[columns["finding"]])
        if label is None:
            dropped["empty_finding"] += 1
            continue
        patient = rec[patient_col].strip() if patient_col else ""
        image_name = rec[name_col].strip() if name_col else patient
        sub = rec[columns["folder"]].strip() if "folder" in columns else ""
        image = finder.find(folder / (sub or "images"), image_name) if image_name else None
        if image is None:
            skipped += 1
            continue
        path = os.path.abspath(image)
        if path in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(path)
        if source == "figure1":
            patient = re.sub(r"(?<=\d)[a-z]$", "", patient)
        rows.append({"path": path, "label": label, "source": source, "patient_id": patient, "mask_path": ""})
    table = with_warnings(new_table(rows), meta)
    table.attrs["skipped"] = skipped
    table.attrs["dropped"] = dropped
    return table
