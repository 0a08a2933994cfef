"""Near-duplicate fingerprint of an image and a chunked, vectorised near-duplicate search.

Public chest X-ray sets copy each other's images after border crops or padding (up to ~5%), small rotations,
horizontal flips, resizing (aspect ratio included), JPEG re-encoding, gamma or histogram equalisation and a
burned-in marker. The fingerprint is a ``GRID`` x ``GRID`` thumbnail of the image with flat borders trimmed,
area-averaged, then replaced by its ranks (any monotone grey-level change - gamma, equalisation, brightness,
contrast - leaves ranks nearly unchanged) quantised to 16 levels: one hex character per cell, so the ``phash``
column holds ``HEX_LEN`` hex characters.

Search, in two stages. Candidates: the grid pooled to ``COARSE`` x ``COARSE``; the central region of one image
against views of the other as if a border of up to ``CROPS`` had been cut off, plain or mirrored; pairs at
``CANDIDATE`` correlation or more (matrix products, ``chunk`` rows at a time: sub-quadratic memory).
Verification: each candidate pair is lined up by an affine search (``align``: shift, scale, rotation, shear
and grey-level gain), and the correlation of the aligned grids, leaving out the 5% of cells that differ most
(markers), must reach the threshold (``data.near_duplicate_threshold``). Copies line up at ~0.999, different
patients' images at <= ~0.993.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DataError
from .align import aligned_correlation, smoothed

GRID = 64  # stored cells per side: the ranks of the whole image (borders trimmed)
COARSE = 32  # cells per side of the grid the candidate search pools the stored one to (2 x 2 means)
CANDIDATE = 0.93  # coarse similarity at which a pair is aligned and verified (``align``)
VIEW = 16  # cells per side of a compared view
MARGIN = 0.10  # share of width / height a view leaves out on each side
CROPS = ((0.0, 0.0), (0.04, 0.0), (0.0, 0.04), (0.04, 0.04))  # (start, end) share cut off, per axis
LEVELS = 16  # rank quantisation: one hex digit per cell
HEX_LEN = GRID * GRID
BORDER_TOL = 10  # a border row / column whose grey levels span at most this much is padding and is trimmed

_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
    _HEX_VALUE[ord(chr(_c).upper())] = _i
_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def fingerprint(gray: np.ndarray) -> str:
    """Fingerprint of a 2-D uint8 image: ``HEX_LEN`` hex characters (quantised ranks of the central thumbnail)."""
    if gray.ndim != 2:
        raise ValueError(f"fingerprint expects a 2-D gray image, got shape {gray.shape}")
    gray = trim_borders(gray)
    # BOX = area average: every source pixel counts, whatever the input size or aspect ratio.
    small = np.asarray(Image.fromarray(gray).resize((GRID, GRID), Image.BOX), dtype=np.float32).ravel()
    return _quantised_ranks(small).tobytes().decode("ascii")


def trim_borders(gray: np.ndarray, tol: int = BORDER_TOL, passes: int = 3) -> np.ndarray:
    """``gray`` without outer rows and columns of (nearly) one grey level: padding, flat frames. Repeated (up to
    ``passes`` times) so that a pad of one colour around an image's own frame of another is trimmed too."""
    for _ in range(passes):
        rows = np.flatnonzero(np.ptp(gray, axis=1) > tol)
        cols = np.flatnonzero(np.ptp(gray, axis=0) > tol)
        if len(rows) < 8 or len(cols) < 8:  # (nearly) blank image: keep it whole
            return gray
        trimmed = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        if trimmed.shape == gray.shape:
            break
        gray = trimmed
    return gray


def _quantised_ranks(values: np.ndarray) -> np.ndarray:
    """Mid-ranks (ties share their mean rank) of ``values`` mapped to 0..LEVELS-1, as hex character codes."""
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    starts = np.r_[True, sorted_vals[1:] != sorted_vals[:-1]]
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(values)] - 1
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = (first[run] + last[run]) / 2.0
    levels = np.minimum((ranks + 0.5) * LEVELS / len(values), LEVELS - 1).astype(np.intp)
    return _HEX_CHARS[levels]


def fingerprint_grids(hashes) -> np.ndarray:
    """Fingerprints -> (N, HEX_LEN) float32 rank levels 0..15.

    DataError names the first bad entry: wrong length (e.g. a 64-character dHash of an older scan) or not hex.
    """
    hashes = list(hashes)
    lengths = np.fromiter((len(h) if isinstance(h, str) else -1 for h in hashes), dtype=np.int64, count=len(hashes))
    bad = np.flatnonzero(lengths != HEX_LEN)
    if len(bad):
        i = int(bad[0])
        raise DataError(f"perceptual hash #{i} {str(hashes[i])[:16]!r}...: expected {HEX_LEN} hex characters, "
                        f"got {lengths[i]} (made by an older version? scan the images again)")
    if not hashes:
        return np.empty((0, HEX_LEN), dtype=np.float32)
    codes = np.frombuffer("".join(hashes).encode("ascii", errors="replace"), dtype=np.uint8)
    values = _HEX_VALUE[codes].reshape(len(hashes), HEX_LEN)
    bad = np.flatnonzero((values == 255).any(axis=1))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"perceptual hash #{i} {hashes[i][:16]!r}...: not hexadecimal")
    return values.astype(np.float32)


def _axis_weights(start: float, end: float) -> np.ndarray:
    """(VIEW, COARSE) linear-interpolation weights sampling the view's cells along one axis of the grid."""
    u = MARGIN + (np.arange(VIEW) + 0.5) / VIEW * (1 - 2 * MARGIN)
    pos = np.clip((start + u * (1 - start - end)) * COARSE - 0.5, 0, COARSE - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, COARSE - 1)
    frac = (pos - lo).astype(np.float32)
    out = np.zeros((VIEW, COARSE), dtype=np.float32)
    np.add.at(out, (np.arange(VIEW), lo), 1 - frac)
    np.add.at(out, (np.arange(VIEW), hi), frac)
    return out


def _view_operator() -> np.ndarray:
    """(COARSE*COARSE, K*VIEW*VIEW): every crop view of a pooled grid, K = len(CROPS) ** 2; view 0 is the uncropped one."""
    axes = [_axis_weights(*c) for c in CROPS]
    mats = [np.kron(ay, ax) for ay in axes for ax in axes]  # row-major grid: kron(rows, columns)
    return np.concatenate(mats, axis=0).T


def pooled(grids: np.ndarray) -> np.ndarray:
    """(N, GRID*GRID) -> (N, COARSE*COARSE): means of GRID // COARSE square blocks."""
    f = GRID // COARSE
    return grids.reshape(len(grids), COARSE, f, COARSE, f).mean(axis=(2, 4)).reshape(len(grids), -1)


def fingerprint_views(hashes, grids: np.ndarray | None = None) -> np.ndarray:
    """(N, K, VIEW*VIEW) views of each fingerprint: the central region as it is and as if a border of
    ``CROPS`` had been cut off, each zero-mean and unit-norm so that a dot product is a correlation."""
    grids = pooled(fingerprint_grids(hashes) if grids is None else grids)
    k = len(CROPS) ** 2
    views = (grids @ _view_operator()).reshape(len(grids), k, VIEW * VIEW)
    views -= views.mean(axis=2, keepdims=True)
    norm = np.linalg.norm(views, axis=2, keepdims=True)
    return views / np.where(norm > 0, norm, 1.0)


def _mirrored(views: np.ndarray) -> np.ndarray:
    """Views of the horizontally flipped images (each view's columns reversed)."""
    shape = views.shape
    return np.ascontiguousarray(views.reshape(*shape[:-1], VIEW, VIEW)[..., ::-1].reshape(shape))


def _block_similarity(views: np.ndarray, mirror: np.ndarray, start: int, stop: int,
                      both: np.ndarray | None = None) -> np.ndarray:
    """(stop-start, N-start) similarities of rows start..stop against rows start..N: the best correlation of one
    image's uncropped view with any cropped view of the other (either way round), as is or mirrored.

    ``both``: ``_stacked(views, mirror)``, made once for every block instead of copying rows start..N each time."""
    n, k, d = views.shape
    m = n - start
    both = _stacked(views, mirror) if both is None else both
    first = views[start:stop, 0] @ both[start * 2 * k:].T  # this row's plain view vs their crops
    sim = first.reshape(stop - start, m, 2 * k).max(axis=2)
    plain = np.concatenate([views[start:, 0], mirror[start:, 0]], axis=0)  # (2M, D)
    second = views[start:stop].reshape((stop - start) * k, d) @ plain.T  # this row's crops vs their plain view
    return np.maximum(sim, second.reshape(stop - start, k, 2, m).max(axis=(1, 2)))


def _stacked(views: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(N * 2K, D): each image's K views, then its K mirrored views."""
    n, k, d = views.shape
    return np.concatenate([views, mirror], axis=1).reshape(n * 2 * k, d)


def similarity(a: str, b: str) -> float:
    """Aligned correlation of two fingerprints (see ``near_duplicate_pairs``); coarse-stage misses give their
    coarse similarity (below ``CANDIDATE``)."""
    grids = fingerprint_grids([a, b])
    views = fingerprint_views(None, grids)
    mirror = _mirrored(views)
    coarse = float(_block_similarity(views, mirror, 0, 1)[0, 1])
    if coarse < CANDIDATE:
        return coarse
    flip = np.array([views[0, 0] @ mirror[1, 0] > views[0, 0] @ views[1, 0]])
    return float(aligned_correlation(smoothed(grids, GRID), np.array([0]), np.array([1]), flip)[0])


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in (0, 1]; ValueError otherwise (e.g. a Hamming bit count of the old dHash)."""
    if isinstance(threshold, bool) or not 0 < float(threshold) <= 1:
        raise ValueError(f"near-duplicate threshold must be a correlation in (0, 1], got {threshold!r}")
    return float(threshold)


def candidate_pairs(views: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) whose coarse similarity (``_block_similarity``) reaches ``CANDIDATE``, and whether j's
    mirror image matches i better than j itself. Memory about chunk x N x 2K floats."""
    mirror = _mirrored(views)
    both = _stacked(views, mirror)
    n = len(views)
    out_i: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    out_j: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        i, j = np.nonzero(_block_similarity(views, mirror, start, stop, both) >= CANDIDATE)
        keep = j > i  # rows and columns both count from ``start``: drops self-pairs and the lower triangle
        out_i.append(i[keep] + start)
        out_j.append(j[keep] + start)
    i = np.concatenate(out_i).astype(np.int64)
    j = np.concatenate(out_j).astype(np.int64)
    plain = np.einsum("pd,pd->p", views[i, 0], views[j, 0])
    flipped = np.einsum("pd,pd->p", views[i, 0], mirror[j, 0])
    return i, j, flipped > plain


def scored_pairs(hashes, chunk: int = 64, workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i < j) and their correlation once lined up (``align.aligned_correlation``, in
    ``workers`` processes)."""
    grids = fingerprint_grids(hashes)
    i, j, flip = candidate_pairs(fingerprint_views(None, grids), chunk)
    score = aligned_correlation(smoothed(grids, GRID), i, j, flip, workers)
    return i, j, score


def near_duplicate_pairs(hashes, threshold: float, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) that are near-duplicates.

    A pair is a candidate when one image's central view correlates at ``CANDIDATE`` or more with the other's
    views under crops of up to ``CROPS`` per side, plain or mirrored; candidates are lined up with an affine
    search (``align``) and kept when the aligned correlation reaches ``threshold``.
    """
    threshold = check_threshold(threshold)
    i, j, score = scored_pairs(hashes, chunk)
    keep = score >= threshold - 1e-6
    return i[keep], j[keep]
