"""On-disk cache of the near-duplicate pair scores (``phash.scored_pairs``).

The scores depend only on the fingerprint list (in order) and on the search's constants, so a study that groups
the same scanned images several times (the exploration notebook, then the ``splits`` job of each task) searches
once. Entries live in ``<cache_dir>/pairs/<key>.npz``; the key is a sha256 of ``algorithm_version()`` and the
fingerprints. The threshold is applied by the caller, so one entry serves every threshold.

An unreadable or damaged entry is a miss: the pairs are recomputed, the file rewritten and a warning names it;
a cache that cannot be written only costs a warning. Entries are written to a temporary file beside the target
and renamed onto it (``io.atomic_path``), so readers never see a partial one; a lock file beside the entry
(``filelock``) makes a job that asks for pairs another job is computing wait for them instead of searching too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
from filelock import FileLock

from .. import io
from ..cores import cpu_budget
from . import align, phash

VERSION = 1  # bump when phash / align change results in a way their constants below do not show
FOLDER = "pairs"

log = logging.getLogger(__name__)


def algorithm_version() -> str:
    """Short hash of ``VERSION`` and the phash / align constants that change the pairs or their scores."""
    parts = (
        VERSION,
        phash.GRID, phash.COARSE, phash.CANDIDATE, phash.VIEW, phash.MARGIN, phash.CROPS, phash.LEVELS,
        align.SMOOTH, align.MARGIN, align.STEP, align.COARSE_ITERATIONS, align.FINE_ITERATIONS, align.OUTLIERS,
        align.REFINE,
    )  # fmt: skip
    return hashlib.sha256(repr(parts).encode("ascii")).hexdigest()[:12]


def cache_key(hashes: list[str]) -> str:
    """sha256 of the algorithm version and the fingerprints, in order."""
    digest = hashlib.sha256(f"{algorithm_version()}\n{len(hashes)}\n".encode("ascii"))
    digest.update("\n".join(str(h) for h in hashes).encode("utf-8", errors="replace"))
    return digest.hexdigest()


def cache_path(cache_dir: str | os.PathLike, hashes: list[str]) -> Path:
    """Where the pairs of ``hashes`` are cached under ``cache_dir``."""
    return Path(cache_dir).expanduser() / FOLDER / f"{cache_key(hashes)}.npz"


def cached_scored_pairs(hashes, cache_dir: str | os.PathLike | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``phash.scored_pairs(hashes)``, read from / stored in ``cache_dir`` (None: computed, no cache)."""
    hashes = list(hashes)
    if cache_dir is None:
        return phash.scored_pairs(hashes, workers=cpu_budget())
    path = cache_path(cache_dir, hashes)
    with _computing(path):
        return _read_or_compute(path, hashes)


@contextlib.contextmanager
def _computing(path: Path):
    """Hold ``<key>.lock`` while the pairs are read or computed, so that a job starting the same search while
    another runs it waits and reads its result. Without a writable cache folder: no lock (each computes)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path.with_suffix(".lock")))
        lock.acquire()
    except OSError as exc:
        log.warning("%s: cannot lock the near-duplicate pair cache (%s)", path, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _read_or_compute(path: Path, hashes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if path.exists():
        try:
            return _read(path, len(hashes))
        except Exception as exc:  # any damage (truncated zip, wrong arrays, ...) is a miss, never a failure
            log.warning("%s: unreadable near-duplicate pair cache (%s); recomputing it", path, exc)
    i, j, score = phash.scored_pairs(hashes, workers=cpu_budget())
    try:
        with io.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
                np.savez(fh, i=i, j=j, score=score, n=np.int64(len(hashes)))
    except OSError as exc:
        log.warning("%s: cannot write the near-duplicate pair cache (%s)", path, exc)
    return i, j, score


def _read(path: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        i, j, score, stored_n = data["i"], data["j"], data["score"], int(data["n"])
    if stored_n != n:
        raise ValueError(f"made for {stored_n} fingerprints, not {n}")
    if not (i.ndim == j.ndim == score.ndim == 1 and len(i) == len(j) == len(score)):
        raise ValueError("arrays of different shapes")
    if i.dtype.kind != "i" or j.dtype.kind != "i" or score.dtype.kind != "f":
        raise ValueError("arrays of the wrong type")
    if len(i) and not (i.min() >= 0 and j.max() < n and (i < j).all()):
        raise ValueError("pair indices out of range")
    return i, j, score
