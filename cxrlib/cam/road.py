"""ROAD faithfulness with ties broken, per percentile, on a random sample of test images.

pytorch-grad-cam's ROAD removes the pixels at or above a percentile of the map (MoRF) or of ``1 - map`` (LeRF).
Grad-CAM maps have large areas of exactly zero, so on a raw map a percentile inside the tied area removes
every tied pixel (far more, or far fewer, than intended). :func:`rank_maps` replaces each map by the ranks of
its values, ties broken by a seeded random order (deterministic for a seed, unrelated to pixel position), so
percentile ``p`` removes exactly ``100 - p`` % of the pixels in both orders.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .targets import ClassProbability

ROAD_PERCENTILES = (20, 40, 60, 80)
ROAD_COLUMNS = ["fold", "path", "sha256", "true", "predicted", "correct", "layer", "percentile", "removed_share",
                "road_cam", "road_random"]


def rank_maps(cams: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each (H, W) map as its ranks scaled to [0, 1] (float32), equal values ordered by a seeded permutation."""
    cams = np.asarray(cams, dtype=np.float64)
    single = cams.ndim == 2
    flat = cams.reshape(1 if single else len(cams), -1)
    n = flat.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty(flat.shape, dtype=np.float32)
    for i, values in enumerate(flat):
        order = np.lexsort((rng.permutation(n), values))  # by value, then by the random tie-breaker
        ranks = np.empty(n, dtype=np.float64)
        ranks[order] = np.arange(n)
        out[i] = ranks / max(n - 1, 1)
    return out.reshape(cams.shape)


def road_by_percentile(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[int],
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
) -> np.ndarray:
    """ROAD combined score (LeRF - MoRF) / 2, target = class probability, per image (rows) and percentile.

    Maps are tie-broken with :func:`rank_maps` first. Higher means removing the most relevant pixels hurts the
    target more than removing the least relevant ones. The imputer's noise draws from torch's global generator;
    it runs under a forked, seeded RNG state, so scores are reproducible and the caller's RNG is untouched.
    """
    if len(targets) != len(inputs) or len(cams) != len(inputs):
        raise ValueError("road_scores: inputs, cams and targets must have one entry per image")
    from pytorch_grad_cam.metrics.perturbation_confidence import (  # slow import
        PerturbationConfidenceMetric, RemoveLeastRelevantFirst, RemoveMostRelevantFirst)

    from .imputer import FastLinearImputer

    ranked = rank_maps(cams, seed)
    callables = [ClassProbability(int(t)) for t in targets]
    out = np.empty((len(inputs), len(percentiles)), dtype=np.float64)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # the library's imputer hands torch tensors to numpy (a NumPy 2 deprecation, harmless here)
        warnings.filterwarnings("ignore", message=".*__array_wrap__.*", category=DeprecationWarning)
        torch.manual_seed(seed)
        with torch.no_grad():
            x = inputs.detach().to(next(model.parameters()).device)
            for j, p in enumerate(percentiles):
                # the library's ROADLeastRelevantFirst / ROADMostRelevantFirst with a faster imputer (same fills to rounding)
                # (LeRF - MoRF) needs no score of the unperturbed images: return_diff=False skips that forward
                lerf = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(p, FastLinearImputer()))(
                    x, ranked, callables, model, return_diff=False)
                morf = PerturbationConfidenceMetric(RemoveMostRelevantFirst(p, FastLinearImputer()))(
                    x, ranked, callables, model, return_diff=False)
                out[:, j] = (np.asarray(lerf, dtype=np.float64) - np.asarray(morf, dtype=np.float64)).reshape(-1) / 2
    return out


def road_scores(model: torch.nn.Module, inputs: torch.Tensor, cams: np.ndarray, *args, **kwargs) -> np.ndarray:
    """ROAD combined score per image: :func:`road_by_percentile` (same arguments) averaged over percentiles."""
    return road_by_percentile(model, inputs, cams, *args, **kwargs).mean(axis=1)


def sample_rows(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """A seeded uniform random sample (sorted) of ``min(samples, n)`` row indices."""
    gen = torch.Generator().manual_seed(seed)
    return np.sort(torch.randperm(n, generator=gen)[:samples].numpy())


def road_table(ex, method: str = "gradcam", samples: int = 64, seed: int = 0,
               percentiles: Sequence[int] = ROAD_PERCENTILES) -> pd.DataFrame:
    """ROAD of the predicted-class maps at the deepest layer and of random-map baselines, one row per image x
    percentile (``removed_share`` = 1 - p/100 of the pixels removed in each order).

    Images are a seeded random sample of ``samples`` rows of ``ex``; build ``ex`` with
    ``build_examples(..., selection="random")`` so the sample stands for the test set rather than a quota of
    correct and misclassified cases.
    """
    from .shortcuts import random_maps

    if samples <= 0 or len(ex) == 0:
        return pd.DataFrame(columns=ROAD_COLUMNS)
    h, w = ex.gray.shape[1:]
    deepest = list(ex.layers)[-1]
    sample = sample_rows(len(ex), samples, seed)
    cams = ex.maps(method, "predicted", sample, layers=[deepest])[deepest]
    baseline = random_maps(len(sample), (h, w), torch.Generator().manual_seed(seed))
    targets = np.array([ex.classes.index(p) for p in ex.frame["predicted"].iloc[sample]])
    folds = ex.frame["fold"].to_numpy()[sample]
    road_cam = np.empty((len(sample), len(percentiles)))
    road_rand = np.empty_like(road_cam)
    for k in np.unique(folds):
        sel = np.flatnonzero(folds == k)
        x = ex.inputs[sample[sel]]
        road_cam[sel] = road_by_percentile(ex.models[int(k)], x, cams[sel], targets[sel], percentiles, seed)
        road_rand[sel] = road_by_percentile(ex.models[int(k)], x, baseline[sel], targets[sel], percentiles, seed)
    rows = ex.frame.iloc[sample]
    parts = []
    for j, p in enumerate(percentiles):
        parts.append(pd.DataFrame({
            "fold": rows["fold"].to_numpy(), "path": rows["path"].to_numpy(), "sha256": rows["sha256"].to_numpy(),
            "true": rows["true"].to_numpy(), "predicted": rows["predicted"].to_numpy(),
            "correct": rows["correct"].to_numpy(dtype=bool), "layer": deepest, "percentile": int(p),
            "removed_share": 1 - p / 100, "road_cam": road_cam[:, j], "road_random": road_rand[:, j],
        }))
    return pd.concat(parts, ignore_index=True)[ROAD_COLUMNS]
