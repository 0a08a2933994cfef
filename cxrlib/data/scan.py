"""Scan a sample table's images once: content hash, near-duplicate fingerprint, size, and the resized cache entry.

Files that cannot be used (zero-byte, truncated, corrupt, not an image, missing) go to a data-quality table
and are left out; the scan goes on. A scan index in the cache (``<cache_dir>/<resize>/scan_index.csv``, keyed
by path, byte size and mtime) makes a re-scan of an unchanged data root a matter of ``stat`` calls. The
``phash`` column holds ``cxrlib.data.phash.fingerprint``; rows with a hash of another format (the 64-character
dHash or the 1,024-character 32 x 32 fingerprint of older versions) are scanned again.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from .. import io
from ..errors import DataError
from . import images
from .phash import HEX_LEN, fingerprint
from .table import SCAN_COLUMNS, check_table

INDEX_NAME = "scan_index.csv"
INDEX_COLUMNS = ("path", "bytes", "mtime_ns", "sha256", "phash", "width", "height", "reason")
QUALITY_COLUMNS = ("path", "reason")


def scan_file(path: str, cache_dir: str, resize: int) -> dict:
    """Hash, decode and cache one image; returns an index row (``reason`` is "" for a good file)."""
    row = {"path": path, "bytes": -1, "mtime_ns": -1, "sha256": "", "phash": "", "width": 0, "height": 0, "reason": ""}
    try:
        st = os.stat(path)
    except OSError as exc:
        row["reason"] = f"cannot read ({exc.strerror})"
        return row
    row["bytes"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
    try:
        sha = images.file_sha256(path)
        gray = images.decode_gray(path)
    except OSError as exc:
        row["reason"] = f"cannot read ({exc.strerror})"
        return row
    except DataError as exc:
        row["reason"] = _strip_path(str(exc), path)
        return row
    images.ImageCache(cache_dir, resize).put(sha, gray)
    row.update(sha256=sha, phash=fingerprint(gray), width=int(gray.shape[1]), height=int(gray.shape[0]))
    return row


def _scan_many(args: tuple[list[str], str, int]) -> list[dict]:
    paths, cache_dir, resize = args
    return [scan_file(p, cache_dir, resize) for p in paths]


def _strip_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def index_path(cache_dir: str | os.PathLike, resize: int) -> Path:
    """Where the scan index of images cached at ``resize`` x ``resize`` lives."""
    return Path(cache_dir).expanduser() / str(resize) / INDEX_NAME


def read_index(cache_dir: str | os.PathLike, resize: int) -> pd.DataFrame:
    """The scan index (empty when absent or unreadable: it is only a cache and is rebuilt)."""
    path = index_path(cache_dir, resize)
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})
    if not path.exists():
        return empty
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return empty
    if list(frame.columns) != list(INDEX_COLUMNS):
        return empty
    for col in ("bytes", "mtime_ns", "width", "height"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(-1).astype("int64")
    return frame


def scan_table(
    table: pd.DataFrame,
    cache_dir: str | os.PathLike,
    resize: int,
    workers: int = 1,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan every image of a source table.

    Returns ``(scanned, quality)``: the good rows with ``sha256, phash, width, height`` added (row order
    kept, fresh index), and a ``path, reason`` table of the files left out. Each resized image is stored
    in ``ImageCache(cache_dir, resize)``; unchanged files already in the scan index are neither read nor
    decoded. ``workers > 1`` scans in a process pool.
    """
    check_table(table, where="scan_table")
    cache_dir = str(cache_dir)
    cache = images.ImageCache(cache_dir, resize)
    index = read_index(cache_dir, resize)
    known = {r.path: r for r in index.itertuples(index=False)}

    paths = list(dict.fromkeys(str(p) for p in table["path"]))
    results: dict[str, dict] = {}
    todo: list[str] = []
    for p in paths:
        hit = known.get(p)
        if hit is not None and _still_valid(hit, p, cache):
            results[p] = hit._asdict()
        else:
            todo.append(p)

    for row in _run(todo, cache_dir, resize, workers, progress):
        results[row["path"]] = row

    if todo:
        fresh = pd.DataFrame([results[p] for p in todo], columns=list(INDEX_COLUMNS))
        keep = index[~index["path"].isin(set(todo))]
        merged = pd.concat([keep, fresh], ignore_index=True) if len(keep) else fresh
        merged = merged[merged["bytes"] >= 0]  # missing files are re-checked every time
        io.write_csv(index_path(cache_dir, resize), merged)

    info = pd.DataFrame([results[p] for p in paths], columns=list(INDEX_COLUMNS)).set_index("path")
    per_row = info.loc[table["path"].astype(str)]
    good = (per_row["reason"] == "").to_numpy()
    scanned = table.loc[good].copy()
    for col in SCAN_COLUMNS:
        values = per_row[col].to_numpy()[good]
        scanned[col] = values.astype("int64") if col in ("width", "height") else values.astype(str)
    scanned = scanned.reset_index(drop=True)
    bad = info[info["reason"] != ""]
    quality = pd.DataFrame({"path": bad.index.astype(str), "reason": bad["reason"].astype(str).to_numpy()})
    return scanned, quality.reset_index(drop=True)


def _still_valid(hit, path: str, cache: images.ImageCache) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != hit.bytes or st.st_mtime_ns != hit.mtime_ns:
        return False
    if hit.reason:
        return True
    return len(hit.phash) == HEX_LEN and cache.path_for(hit.sha256).exists()  # older hash format: re-scan


def _run(paths: list[str], cache_dir: str, resize: int, workers: int, progress: bool):
    """Yield index rows for ``paths``, in a process pool when it pays off."""
    bar = None
    if progress and paths:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=f"scan {resize}px", leave=False)
    try:
        if workers <= 1 or len(paths) < 64:
            for p in paths:
                yield scan_file(p, cache_dir, resize)
                if bar is not None:
                    bar.update(1)
            return
        step = max(8, min(256, len(paths) // (workers * 8)))
        batches = [(paths[i : i + step], cache_dir, resize) for i in range(0, len(paths), step)]
        # fork on Linux: spawn would re-run an unguarded calling script; workers only touch PIL and numpy.
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for rows in pool.map(_scan_many, batches):
                yield from rows
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
