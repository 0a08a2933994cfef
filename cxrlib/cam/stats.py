"""Where the maps put their mass, per example: border band, centre and lungs, plus ROAD faithfulness
(``cam_stats.csv``), and the per-class shortcut summary read by the report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import io
from ..layout import RunLayout
from .base import feature_grid
from .examples import ExampleSet
from .shortcuts import border_area, border_share, mass_share, random_maps, road_scores

STATS_COLUMNS = [
    "fold", "path", "sha256", "true", "predicted", "correct", "target", "is_predicted", "is_true", "method", "layer",
    "grid_cells", "border_share", "center_share", "border_area", "lung_share", "lung_area", "road_cam", "road_random",
]

#: A layer whose maps have fewer cells per side cannot tell border from centre: a bilinearly upsampled 2x2 map
#: has odd terms only, so its mass in any centred band equals the band's area whatever its values.
MIN_GRID_CELLS = 4


def cam_stats(ex: ExampleSet, method: str = "gradcam", border: float = 0.12, road_samples: int = 16,
              seed: int = 0, road_percentiles: Sequence[int] = (20, 40, 60, 80)) -> pd.DataFrame:
    """One row per image x target class x layer: border/central and lung shares of CAM mass.

    ROAD (``road_cam``) and its random-map baseline (``road_random``) are filled for the deepest layer with the
    predicted class as target, on ``road_samples`` images drawn with a seeded generator; NaN elsewhere.
    """
    h, w = ex.gray.shape[1:]
    area = border_area(h, w, border)
    first_model = ex.models[int(ex.frame["fold"].iloc[0])] if len(ex) else next(iter(ex.models.values()))
    grids = feature_grid(first_model, ex.layers, ex.inputs[:1]) if len(ex) else {}
    has_mask = np.array([m is not None for m in ex.masks])
    masks = np.stack([m if m is not None else np.zeros((h, w), bool) for m in ex.masks])
    rows = []
    for target in ex.classes:
        maps = ex.maps(method, target)
        for layer, m in maps.items():
            bshare = border_share(m, border)
            lshare = np.where(has_mask, mass_share(m, masks), np.nan)
            for i, r in enumerate(ex.frame.itertuples()):
                rows.append({
                    "fold": r.fold, "path": r.path, "sha256": r.sha256, "true": r.true, "predicted": r.predicted,
                    "correct": bool(r.correct), "target": target, "is_predicted": target == r.predicted,
                    "is_true": target == r.true, "method": method, "layer": layer,
                    "grid_cells": min(grids[layer]), "border_share": bshare[i],
                    "center_share": 1.0 - bshare[i], "border_area": area, "lung_share": lshare[i],
                    "lung_area": masks[i].mean() if has_mask[i] else np.nan,
                })
    stats = pd.DataFrame(rows, columns=STATS_COLUMNS)
    if road_samples > 0 and len(ex):
        deepest = list(ex.layers)[-1]
        gen = torch.Generator().manual_seed(seed)
        sample = np.sort(torch.randperm(len(ex), generator=gen)[:road_samples].numpy())
        cams = ex.maps(method, "predicted", sample)[deepest]
        baseline = random_maps(len(sample), (h, w), gen)
        targets = [ex.classes.index(p) for p in ex.frame["predicted"].iloc[sample]]
        road_cam, road_rand = np.empty(len(sample)), np.empty(len(sample))
        folds = ex.frame["fold"].to_numpy()[sample]
        for k in np.unique(folds):
            sel = np.flatnonzero(folds == k)
            x = ex.inputs[sample[sel]]
            tk = [targets[j] for j in sel]
            road_cam[sel] = road_scores(ex.models[int(k)], x, cams[sel], tk, road_percentiles, seed)
            road_rand[sel] = road_scores(ex.models[int(k)], x, baseline[sel], tk, road_percentiles, seed)
        paths = ex.frame["path"].to_numpy()[sample]
        fold_of = ex.frame["fold"].to_numpy()[sample]
        for j in range(len(sample)):
            hit = ((stats["path"] == paths[j]) & (stats["fold"] == fold_of[j]) & (stats["layer"] == deepest)
                   & stats["is_predicted"])
            stats.loc[hit, "road_cam"] = road_cam[j]
            stats.loc[hit, "road_random"] = road_rand[j]
    return stats


def shortcut_layer(stats: pd.DataFrame) -> str:
    """The deepest layer whose maps have at least MIN_GRID_CELLS cells per side (else the deepest layer)."""
    order = list(dict.fromkeys(stats["layer"]))
    if "grid_cells" not in stats.columns:  # cam_stats.csv written before grid sizes were recorded
        return order[-1]
    cells = stats.groupby("layer")["grid_cells"].min()
    usable = [layer for layer in order if cells[layer] >= MIN_GRID_CELLS]
    return usable[-1] if usable else order[-1]


def shortcut_summary(stats: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
    """Per true class, maps of the predicted class at ``layer`` (default: shortcut_layer): mean shares and ROAD.

    ROAD columns always come from the deepest layer (see cam_stats).
    """
    if stats.empty:
        return pd.DataFrame()
    layer = layer or shortcut_layer(stats)
    deepest = list(dict.fromkeys(stats["layer"]))[-1]
    pred = stats[stats["is_predicted"]]
    sel = pred[pred["layer"] == layer]
    road = pred[pred["layer"] == deepest].groupby("true", sort=False)
    out = sel.groupby("true", sort=False).agg(
        layer=("layer", "first"),
        n=("path", "size"),
        correct_shown=("correct", "mean"),  # share correct among the shown examples (a selection quota)
        border_share=("border_share", "mean"),
        border_area=("border_area", "first"),
        lung_share=("lung_share", "mean"),
        lung_area=("lung_area", "mean"),
    )
    return out.join(road[["road_cam", "road_random"]].mean()).join(road["road_cam"].count().rename("road_n"))


def write_cam_stats(run_dir: str | os.PathLike, task: str, stats: pd.DataFrame) -> Path:
    """Write the task's ``cam_stats.csv`` atomically."""
    return io.write_csv(RunLayout(run_dir).task(task).cam_stats, stats[STATS_COLUMNS])


def read_cam_stats(run_dir: str | os.PathLike, task: str) -> pd.DataFrame | None:
    """The task's ``cam_stats.csv``, or None when the Grad-CAM job has not written one."""
    path = RunLayout(run_dir).task(task).cam_stats
    return pd.read_csv(path) if path.exists() else None
