"""The sample table: one row per image, the contract every data source fulfils.

Like torchxrayvision's datasets, the table is row-aligned with the labels and every sample knows its
path, label, source and patient.
"""

from __future__ import annotations

import pandas as pd

from ..errors import DataError
from ..labels import CANONICAL_LABELS

#: Columns every source reader returns. ``path`` is absolute; ``patient_id`` is "" when unknown;
#: ``mask_path`` is "" when the source ships no lung mask.
SOURCE_COLUMNS = ("path", "label", "source", "patient_id", "mask_path")

#: Columns added by scanning the images (cxrlib.data.scan): content hash, perceptual hash, size.
SCAN_COLUMNS = ("sha256", "phash", "width", "height")


def new_table(rows: list[dict]) -> pd.DataFrame:
    """Build a source table from row dicts, filling optional columns and checking labels."""
    frame = pd.DataFrame(rows, columns=list(SOURCE_COLUMNS))
    for column in ("patient_id", "mask_path"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    check_table(frame, where="source table")
    return frame


def check_table(frame: pd.DataFrame, where: str) -> None:
    """Raise DataError naming ``where`` if columns are missing or a label is not canonical."""
    missing = [c for c in SOURCE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing columns {missing}")
    bad = sorted(set(frame["label"]) - set(CANONICAL_LABELS))
    if bad:
        raise DataError(f"{where}: labels {bad} are not canonical (known: {list(CANONICAL_LABELS)})")
