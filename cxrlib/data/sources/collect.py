"""Rows of a metadata-driven reader plus the counts ``discover`` reports (``skipped``, ``dropped``, ``warnings``)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..table import new_table
from .csvfile import with_warnings


class RowCollector:
    """Collect one reader's rows: a missing image is ``skipped``, a repeated one a ``duplicate`` drop."""

    def __init__(self, source: str, *reasons: str) -> None:
        self.source = source
        self.dropped = dict.fromkeys((*reasons, "duplicate"), 0)
        self.skipped = 0
        self.rows: list[dict] = []
        self._seen: set[str] = set()

    def drop(self, reason: str) -> None:
        """Count a row left out by a filter."""
        self.dropped[reason] += 1

    def add(self, image: Path | None, label: str, patient_id: str = "") -> None:
        """Add the row for ``image`` (None when its file was not found)."""
        if image is None:
            self.skipped += 1
            return
        path = os.path.abspath(image)
        if path in self._seen:
            self.dropped["duplicate"] += 1
            return
        self._seen.add(path)
        self.rows.append({"path": path, "label": label, "source": self.source, "patient_id": patient_id,
                          "mask_path": ""})

    def table(self, *metadata: pd.DataFrame) -> pd.DataFrame:
        """The source table with ``skipped``, ``dropped`` and the ``warnings`` of the metadata frames read."""
        table = with_warnings(new_table(self.rows), *metadata)
        table.attrs["skipped"] = self.skipped
        table.attrs["dropped"] = dict(self.dropped)
        return table
