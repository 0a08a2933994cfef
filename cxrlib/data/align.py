"""Verify near-duplicate candidates by lining one fingerprint grid up with the other.

The coarse search in ``phash`` compares a few fixed crop views, so a copy that was cropped, padded, rescaled or
rotated by a few degrees correlates with its original only a little better than two different patients' images
(~0.95). Lined up exactly, copies correlate at ~0.99. ``aligned_correlation`` finds, for each candidate pair, the
affine map (rotation, scale per axis, shear, shift) and grey-level gain / offset that best predict the first
grid's central region from the second grid (Gauss-Newton on lightly smoothed grids, all pairs at once), and
returns the correlation there.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.ndimage import gaussian_filter

SMOOTH = 1.0  # Gaussian sigma (cells) applied before aligning: rank levels are step-like
MARGIN = 0.10  # share of the reference grid left out on each side (borders that a crop or pad changes)
STEP = 2  # reference cells used while iterating (every STEP-th per axis); the final correlation uses all
COARSE_ITERATIONS = 10
FINE_ITERATIONS = 4
OUTLIERS = 0.05  # share of cells left out of the fit and of the final correlation
REFINE = 0.985  # coarse aligned correlation from which a pair is aligned at full resolution
CHUNK = 128  # pairs per batch: its ~CHUNK x cells x 8 floats stay in a core's cache (512: 1.4x slower)


def _points(grid: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred cell coordinates (x, y) of the reference region, every ``step``-th cell."""
    lo = int(round(MARGIN * grid))
    idx = np.arange(lo, grid - lo, step)
    y, x = np.meshgrid(idx, idx, indexing="ij")
    c = (grid - 1) / 2
    return (x.ravel() - c).astype(np.float32), (y.ravel() - c).astype(np.float32)


def _sample(images: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``images`` (P, G, G, C) at per-pair coordinates x, y (P, M) in cell units (clamped):
    (P, M, C)."""
    p, g = images.shape[:2]
    x = np.clip(x, 0, g - 1.001)
    y = np.clip(y, 0, g - 1.001)
    x0 = x.astype(np.intp)
    y0 = y.astype(np.intp)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    flat = images.reshape(p * g * g, -1)
    base = y0 * g + x0 + (np.arange(p) * g * g)[:, None]
    v00, v01, v10, v11 = flat[base], flat[base + 1], flat[base + g], flat[base + g + 1]
    return (v00 + (v01 - v00) * fx) * (1 - fy) + (v10 + (v11 - v10) * fx) * fy


def _warp(params: np.ndarray, u: np.ndarray, v: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates of the reference points under params (P, 6) = (a11-1, a12, a21, a22-1, tx, ty)."""
    c = (grid - 1) / 2
    a11, a12, a21, a22, tx, ty = (params[:, k : k + 1] for k in range(6))
    return (1 + a11) * u + a12 * v + tx + c, a21 * u + (1 + a22) * v + ty + c


def _correlation(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Row-wise (weighted) Pearson correlation of (P, M) arrays."""
    w = np.ones_like(a) if weights is None else weights
    total = np.maximum(w.sum(axis=1, keepdims=True), 1e-6)
    a = a - (w * a).sum(axis=1, keepdims=True) / total
    b = b - (w * b).sum(axis=1, keepdims=True) / total
    den = np.sqrt((w * a * a).sum(axis=1) * (w * b * b).sum(axis=1))
    return (w * a * b).sum(axis=1) / np.where(den > 0, den, 1)


def _inliers(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weights (P, M): 0 for the ``OUTLIERS`` share of cells where standardised a and b differ most (a burned-in
    marker, a label that one copy has and the other not), 1 elsewhere."""
    za = (a - a.mean(axis=1, keepdims=True)) / np.maximum(a.std(axis=1, keepdims=True), 1e-6)
    zb = (b - b.mean(axis=1, keepdims=True)) / np.maximum(b.std(axis=1, keepdims=True), 1e-6)
    diff = np.abs(za - zb)
    k = int((1 - OUTLIERS) * (diff.shape[1] - 1))
    cut = np.partition(diff, k, axis=1)[:, k : k + 1]
    return (diff <= cut).astype(a.dtype)


def _align_batch(ref: np.ndarray, mov: np.ndarray, params: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of ref (P, G, G) with mov (P, G, G) after Gauss-Newton affine alignment of mov onto ref,
    starting from params (P, 6); also the final params."""
    p, g, _ = ref.shape
    u, v = _points(g, STEP)
    uf, vf = _points(g, 1)
    lo = int(round(MARGIN * g))
    a = ref[:, lo : g - lo : STEP, lo : g - lo : STEP].reshape(p, -1)
    gy, gx = np.gradient(mov, axis=(1, 2))
    stack = np.stack([mov, gx, gy], axis=3)  # sampled together
    params = params.astype(np.float32)
    uu = np.broadcast_to(u, (p, len(u)))
    vv = np.broadcast_to(v, (p, len(v)))
    damping = np.diag([1e-2, 1e-2, 1e-2, 1e-2, 1e-4, 1e-4, 0, 0]).astype(np.float32)
    for _ in range(iterations):
        x, y = _warp(params, u, v, g)
        b, sx, sy = np.moveaxis(_sample(stack, x, y), 2, 0)
        bc = b - b.mean(axis=1, keepdims=True)
        gain = (bc * (a - a.mean(axis=1, keepdims=True))).sum(axis=1) / np.maximum((bc * bc).sum(axis=1), 1e-6)
        gain = gain[:, None]
        r = a - gain * b
        r -= r.mean(axis=1, keepdims=True)  # grey-level offset solved exactly
        w = _inliers(a, b)
        jx = gain * sx
        jy = gain * sy
        jac = np.stack([jx * uu, jx * vv, jy * uu, jy * vv, jx, jy, b, np.ones_like(b)], axis=2)  # (P, M, 8)
        r = r * w
        jt = jac.transpose(0, 2, 1) * w[:, None, :]
        jtj = jt @ jac
        jtr = (jt @ r[..., None])[..., 0]
        scale = np.einsum("pii->pi", jtj).mean(axis=1)[:, None, None]
        step = np.linalg.solve(jtj + damping * scale + 1e-6 * np.eye(8, dtype=np.float32), jtr[..., None])[..., 0]
        params += step[:, :6]
        params[:, :4] = np.clip(params[:, :4], -0.15, 0.15)
        params[:, 4:] = np.clip(params[:, 4:], -0.15 * g, 0.15 * g)
    x, y = _warp(params, uf, vf, g)
    full = ref[:, lo : g - lo, lo : g - lo].reshape(p, -1)
    b = _sample(mov[..., None], x, y)[..., 0]
    return _correlation(full, b, _inliers(full, b)), params


def pooled_grids(grids: np.ndarray) -> np.ndarray:
    """(N, G, G) -> (N, G/2, G/2) means of 2 x 2 blocks."""
    n, g, _ = grids.shape
    return grids.reshape(n, g // 2, 2, g // 2, 2).mean(axis=(2, 4))


def smoothed(grids: np.ndarray, side: int) -> np.ndarray:
    """(N, side*side) rank levels -> (N, side, side) float32 grids, lightly smoothed for alignment."""
    out = grids.reshape(len(grids), side, side).astype(np.float32)
    return gaussian_filter(out, sigma=(0, SMOOTH, SMOOTH), mode="nearest")


def aligned_correlation(grids: np.ndarray, i: np.ndarray, j: np.ndarray, mirror: np.ndarray,
                        workers: int = 1) -> np.ndarray:
    """Correlation of pair (i[k], j[k]) of ``grids`` (N, G, G, smoothed) after aligning j (flipped where
    ``mirror``) onto i's central region.

    Coarse to fine: ``COARSE_ITERATIONS`` on 2 x 2 pooled grids for every pair, then ``FINE_ITERATIONS`` at
    full resolution for pairs that already reach ``REFINE`` (the others keep their coarse correlation).
    With ``workers`` > 1 (Linux), contiguous runs of batches go to that many forked processes; each batch is
    computed exactly as alone, so the scores do not depend on ``workers``.
    """
    half = pooled_grids(grids)
    starts = list(range(0, len(i), CHUNK))
    if workers <= 1 or len(starts) < 2 or not sys.platform.startswith("linux"):
        return _aligned_batches(grids, half, i, j, mirror, starts)
    global _SHARED
    _SHARED = (grids, half, i, j, mirror)  # inherited by the forked workers, not pickled
    runs = [list(run) for run in np.array_split(np.asarray(starts), min(workers, len(starts)))]
    try:
        with ProcessPoolExecutor(len(runs), mp_context=multiprocessing.get_context("fork")) as pool:
            return np.concatenate(list(pool.map(_shared_batches, runs)))
    finally:
        _SHARED = None


_SHARED = None


def _shared_batches(starts: list[int]) -> np.ndarray:
    return _aligned_batches(*_SHARED, starts)


def _aligned_batches(grids, half, i, j, mirror, starts) -> np.ndarray:
    out = np.empty(sum(len(i[s : s + CHUNK]) for s in starts), dtype=np.float32)
    at = 0
    for s in starts:
        ii, jj, mm = i[s : s + CHUNK], j[s : s + CHUNK], mirror[s : s + CHUNK]
        flip = mm[:, None, None]
        hj = half[jj]
        corr, params = _align_batch(half[ii], np.where(flip, hj[:, :, ::-1], hj), np.zeros((len(ii), 6)), COARSE_ITERATIONS)
        fine = np.flatnonzero(corr >= REFINE)
        if len(fine):
            params = params[fine]
            params[:, 4:] *= 2  # shifts in full-resolution cells
            gj = grids[jj[fine]]
            corr[fine], _ = _align_batch(grids[ii[fine]], np.where(flip[fine], gj[:, :, ::-1], gj), params, FINE_ITERATIONS)
        out[at : at + len(ii)] = corr
        at += len(ii)
    return out
