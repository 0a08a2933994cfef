"""Confidence intervals: Wilson score intervals for proportions, percentile bootstrap (optionally by cluster).

The bootstrap resamples images, or whole clusters (patients / leakage groups) when cluster ids are given, so
that images of one patient never count as independent evidence.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import norm


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n``; (nan, nan) when ``n`` is 0."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class Resampler:
    """Draws bootstrap index arrays over ``n`` rows, resampling whole clusters when ``clusters`` is given.

    ``clusters``: one id per row (rows sharing an id are drawn together); None resamples single rows.
    """

    def __init__(self, n: int, clusters: Sequence | None = None):
        self.n = int(n)
        if clusters is None:
            self.order = np.arange(self.n)
            self.starts = np.arange(self.n)
            self.sizes = np.ones(self.n, dtype=np.int64)
        else:
            ids = np.asarray(clusters)
            if len(ids) != self.n:
                raise ValueError(f"clusters has {len(ids)} ids for {self.n} rows")
            _, codes = np.unique(ids, return_inverse=True)
            self.order = np.argsort(codes, kind="stable")
            self.sizes = np.bincount(codes).astype(np.int64)
            self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.n_clusters = len(self.sizes)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One resample: row indices (with repetition) of ``n_clusters`` clusters drawn with replacement."""
        pick = rng.integers(0, self.n_clusters, self.n_clusters)
        sizes = self.sizes[pick]
        # positions inside each picked cluster: 0..size-1, offset by the cluster's start in ``order``
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return self.order[np.repeat(self.starts[pick], sizes) + offsets]


def bootstrap(
    statistic: Callable[[np.ndarray], dict[str, float]],
    n: int,
    clusters: Sequence | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for every statistic returned by ``statistic(row_indices)``.

    ``statistic`` maps an index array to a dict of named floats (computed on those rows); it is called once
    per resample, so several statistics share the same draws. NaN draws (e.g. an AUC on a resample lacking a
    class) are left out of that statistic's percentiles. ``rng`` must be an explicit numpy Generator.
    Returns name -> (low, high); (nan, nan) with no resamples or no finite draw.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if rng is None:
        raise ValueError("bootstrap needs an explicit numpy Generator (rng=np.random.default_rng(seed))")
    if resamples <= 0 or n == 0:
        names = statistic(np.arange(n)).keys()
        return {name: (math.nan, math.nan) for name in names}
    sampler = Resampler(n, clusters)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        for name, value in statistic(sampler.draw(rng)).items():
            draws.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    out = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            out[name] = (math.nan, math.nan)
        else:
            lo, hi = np.quantile(arr, [alpha, 1 - alpha])
            out[name] = (float(lo), float(hi))
    return out
