"""Metadata CSVs in whatever encoding they were saved in, and tolerant column look-up.

Public metadata files were saved by many tools: UTF-8 (with or without a byte-order mark), Windows-1252
(Excel's ``’`` is byte 0x92) or Latin-1. :func:`read_metadata_csv` tries UTF-8 first, then cp1252, then
Latin-1 (which decodes any byte), so one stray byte never stops a reader; when it falls back, a warning
naming the file and the encoding used is put in the frame's ``attrs["warnings"]`` for the reader to pass on.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pandas as pd

from ...errors import DataError

#: Encodings tried in order; Latin-1 maps every byte, so the last try always decodes.
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")


def decode_text(data: bytes, path: str | os.PathLike) -> tuple[str, list[str]]:
    """Decode ``data`` with the first encoding that fits; the warnings say which one when not UTF-8."""
    for encoding in ENCODINGS:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == ENCODINGS[0]:
            return text, []
        return text, [f"{path}: not valid UTF-8, read as {encoding}"]
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def read_metadata_csv(path: str | os.PathLike, what: str = "metadata") -> pd.DataFrame:
    """All cells as stripped-header strings ("" when empty); DataError names the file when it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    text, warnings = decode_text(data, path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.attrs["warnings"] = warnings
    return frame


def header(path: str | os.PathLike) -> list[str]:
    """The stripped column names of a CSV's first line ([] when unreadable); any encoding."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 16)
    except OSError:
        return []
    text, _ = decode_text(first, path)
    try:
        row = next(csv.reader([text.strip("\r\n")]), [])
    except csv.Error:
        return []
    return [c.strip() for c in row]


def pick_column(columns, *candidates: str) -> str | None:
    """The first of ``columns`` matching a candidate, compared lower-case without spaces, ``_`` or ``-``."""
    def key(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch not in " _-")

    by_key = {}
    for column in columns:
        by_key.setdefault(key(column), column)
    for candidate in candidates:
        found = by_key.get(key(candidate))
        if found is not None:
            return found
    return None


def with_warnings(table: pd.DataFrame, *sources: pd.DataFrame) -> pd.DataFrame:
    """Put the ``attrs["warnings"]`` of ``sources`` (frames read by read_metadata_csv) on ``table``."""
    table.attrs["warnings"] = [w for s in sources for w in s.attrs.get("warnings", [])]
    return table


#: Frontal chest views kept by the readers (compared lower-case, spaces collapsed).
FRONTAL_VIEWS = ("pa", "ap", "ap supine", "ap erect")


def is_frontal(view: str) -> bool:
    """True for a PA or AP view value (``PA``, ``ap``, ``AP Supine``...)."""
    return " ".join(str(view).split()).lower() in FRONTAL_VIEWS
