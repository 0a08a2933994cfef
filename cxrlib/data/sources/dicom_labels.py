"""A folder of DICOM files with a labels CSV (a hospital export, a challenge's DICOM release).

Claimed when a CSV directly in the folder has a file column (``path``, ``file``, ``filename``, ``image``,
``dicom``...) and a label column (``label``, ``class``, ``finding``, ``diagnosis``) and names at least one
existing ``.dcm`` file. A manifest CSV that names DICOM files is therefore read here rather than by the
generic manifest reader; the differences are that label aliases (``COVID-19``, ``No Finding``, ``viral``...)
are accepted and a row whose file is missing is counted in ``attrs["skipped"]`` instead of stopping the
source. A label that is neither canonical nor an alias is a DataError naming the CSV and line. Paths are
relative to the CSV's folder; the source name is the folder's name; ``patient_id`` comes from a patient
column when there is one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ...labels import BACTERIAL, CANONICAL_LABELS, COVID, LUNG_OPACITY, NORMAL, VIRAL
from .collect import RowCollector
from .csvfile import header, pick_column, read_metadata_csv

NAME = "dicom_labels"

FILE_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "dicom", "dicom_path")
LABEL_COLUMNS = ("label", "class", "finding", "diagnosis")

#: Label spellings (lower case, ``_``/``-`` as spaces) besides the canonical labels.
LABEL_ALIASES = {
    "no finding": NORMAL,
    "healthy": NORMAL,
    "covid": COVID,
    "covid 19": COVID,
    "sars cov 2": COVID,
    "viral": VIRAL,
    "bacterial": BACTERIAL,
    "opacity": LUNG_OPACITY,
}


def canonical_label(value: str) -> str | None:
    """The canonical label for a canonical label or alias, compared without case, ``_`` and ``-``."""
    key = " ".join(str(value).replace("_", " ").replace("-", " ").lower().split())
    canonical = {label.replace("_", " "): label for label in CANONICAL_LABELS}
    return canonical.get(key) or LABEL_ALIASES.get(key)


def _columns(names) -> tuple[str, str] | None:
    file_col, label_col = pick_column(names, *FILE_COLUMNS), pick_column(names, *LABEL_COLUMNS)
    return (file_col, label_col) if file_col and label_col else None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value.strip())
    return path if path.is_absolute() else base / path


def label_files(folder: Path) -> list[Path]:
    """CSVs directly in ``folder`` with file and label columns that name at least one existing ``.dcm``."""
    found = []
    try:
        candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith("."))
    except OSError:
        return []
    for path in candidates:
        if not path.is_file() or _columns(header(path)) is None:
            continue
        try:
            meta = read_metadata_csv(path)
        except DataError:
            continue
        file_col, _ = _columns(meta.columns)
        if any(v.strip().lower().endswith(".dcm") and _resolve(folder, v).is_file() for v in meta[file_col]):
            found.append(path)
    return found


def detect(folder: Path) -> bool:
    """True if a labels CSV in ``folder`` names DICOM files that exist (see the module docstring)."""
    return bool(label_files(folder))


def read(folder: Path) -> pd.DataFrame:
    """One row per listed file found; DataError for an unknown label."""
    rows = RowCollector(folder.name)
    metas = []
    for path in label_files(folder):
        meta = read_metadata_csv(path)
        metas.append(meta)
        file_col, label_col = _columns(meta.columns)
        patient_col = pick_column(meta.columns, "patient_id", "patientid", "patient")
        for line, rec in enumerate(meta.to_dict("records"), start=2):
            label = canonical_label(rec[label_col])
            if label is None:
                raise DataError(f"{path}: line {line}: unknown label {rec[label_col]!r} "
                                f"(known: {', '.join(CANONICAL_LABELS)} and {', '.join(LABEL_ALIASES)})")
            image = _resolve(path.parent, rec[file_col]) if rec[file_col].strip() else None
            patient = rec[patient_col].strip() if patient_col else ""
            rows.add(image if image is not None and image.is_file() else None, label, patient)
    return rows.table(*metas)
