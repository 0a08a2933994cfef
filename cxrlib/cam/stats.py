"""Where the maps put their mass, per example: border band, centre and lungs, plus ROAD faithfulness
(``cam_stats.csv``), and the per-class shortcut summary read by the report."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist

from .. import io
from ..layout import RunLayout
from .base import feature_grid
from .examples import ExampleSet
from .road import ROAD_COLUMNS, road_table
from .shortcuts import border_area, border_share, mass_share

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

    ROAD (``road_cam``, mean over ``road_percentiles`` of :func:`cxrlib.cam.road.road_table`, ties broken) and
    its random-map baseline (``road_random``) are filled for the deepest layer with the predicted class as
    target, on ``road_samples`` images drawn with a seeded generator; NaN elsewhere. For ROAD per percentile
    on a random sample of the test set use :func:`cxrlib.cam.road.road_table` on a random ExampleSet.
    """
    h, w = ex.gray.shape[1:]
    area = border_area(h, w, border)
    first_model = ex.models[int(ex.frame["fold"].iloc[0])] if len(ex) else next(iter(ex.models.values()))
    grids = feature_grid(first_model, ex.layers, ex.inputs[:1]) if len(ex) else {}
    has_mask = np.array([m is not None for m in ex.masks])
    masks = np.stack([m if m is not None else np.zeros((h, w), bool) for m in ex.masks])
    rows = []
    by_class = ex.maps_by_class(method)
    for target in ex.classes:
        maps = by_class[target]
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
    road = road_table(ex, method, road_samples, seed, road_percentiles)
    if len(road):
        per_image = road.groupby(["fold", "path"], sort=False)[["road_cam", "road_random"]].mean()
        key = pd.MultiIndex.from_arrays([stats["fold"], stats["path"]])
        hit = ((stats["layer"] == road["layer"].iloc[0]) & stats["is_predicted"]).to_numpy() & key.isin(per_image.index)
        for col in ("road_cam", "road_random"):
            stats.loc[hit, col] = per_image[col].reindex(key[hit]).to_numpy()
    return stats


def shortcut_layer(stats: pd.DataFrame) -> str:
    """The deepest layer whose maps have at least MIN_GRID_CELLS cells per side (else the deepest layer)."""
    order = list(dict.fromkeys(stats["layer"]))
    if "grid_cells" not in stats.columns:  # cam_stats.csv written before grid sizes were recorded
        return order[-1]
    cells = stats.groupby("layer")["grid_cells"].min()
    usable = [layer for layer in order if cells[layer] >= MIN_GRID_CELLS]
    return usable[-1] if usable else order[-1]


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean of the finite values with a Student t interval: (mean, low, high, n); NaN bounds with n < 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan, int(v.size)
    half = float(t_dist.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half, int(v.size)


def _with_intervals(groups, columns: Sequence[str], level: float) -> pd.DataFrame:
    out = {}
    for name, rows in groups:
        entry = {}
        for col in columns:
            mean, lo, hi, n = mean_interval(rows[col], level)
            entry.update({col: mean, f"{col}_low": lo, f"{col}_high": hi, f"{col}_n": n})
        out[name] = entry
    return pd.DataFrame.from_dict(out, orient="index")


def shortcut_summary(stats: pd.DataFrame, layer: str | None = None, road: pd.DataFrame | None = None,
                     level: float = 0.95) -> pd.DataFrame:
    """Per true class, maps of the predicted class at ``layer`` (default: shortcut_layer): mean shares and ROAD,
    each with a t interval (``<col>_low``, ``<col>_high``, over ``<col>_n`` images).

    ROAD comes from ``road`` (a :func:`cxrlib.cam.road.road_table`, averaged over percentiles per image) when
    given, else from ``stats.attrs["road"]`` (set by :func:`read_cam_stats`), else from the deepest layer's rows
    of ``stats`` (see cam_stats); ``road_n`` counts its images.
    """
    road = road if road is not None else stats.attrs.get("road")
    if stats.empty:
        return pd.DataFrame()
    layer = layer or shortcut_layer(stats)
    deepest = list(dict.fromkeys(stats["layer"]))[-1]
    pred = stats[stats["is_predicted"]]
    sel = pred[pred["layer"] == layer]
    out = sel.groupby("true", sort=False).agg(
        layer=("layer", "first"),
        n=("path", "size"),
        correct_shown=("correct", "mean"),  # share correct among the shown examples (a selection quota)
        border_area=("border_area", "first"),
        lung_area=("lung_area", "mean"),
    )
    out = out.join(_with_intervals(sel.groupby("true", sort=False), ("border_share", "lung_share"), level))
    if road is not None and len(road):
        per_image = road.groupby(["fold", "path", "true"], sort=False)[["road_cam", "road_random"]].mean().reset_index()
    else:
        per_image = pred[pred["layer"] == deepest]
    road_stats = _with_intervals(per_image.groupby("true", sort=False), ("road_cam", "road_random"), level)
    out = out.join(road_stats)
    out["road_n"] = out["road_cam_n"].fillna(0).astype(int) if "road_cam_n" in out else 0
    return out


def road_per_percentile(road: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """ROAD of the maps and of the random baseline per percentile (all sampled images), with t intervals."""
    if road is None or road.empty:
        return pd.DataFrame()
    table = _with_intervals(road.groupby("percentile", sort=True), ("road_cam", "road_random"), level)
    table.insert(0, "removed_share", road.groupby("percentile", sort=True)["removed_share"].first())
    return table


def write_cam_stats(run_dir: str | os.PathLike, task: str, stats: pd.DataFrame) -> Path:
    """Write the task's ``cam_stats.csv`` atomically."""
    return io.write_csv(RunLayout(run_dir).task(task).cam_stats, stats[STATS_COLUMNS])


def write_road_table(run_dir: str | os.PathLike, task: str, road: pd.DataFrame) -> Path:
    """Write the task's ``cam_road.csv`` (ROAD per sampled image and percentile) atomically."""
    return io.write_csv(RunLayout(run_dir).task(task).cam_road, road[ROAD_COLUMNS])


def read_cam_stats(run_dir: str | os.PathLike, task: str) -> pd.DataFrame | None:
    """The task's ``cam_stats.csv``, or None when the Grad-CAM job has not written one. The task's
    ``cam_road.csv`` (ROAD on a random sample, when written) rides along in ``attrs["road"]``, where
    :func:`shortcut_summary` takes its ROAD columns from."""
    path = RunLayout(run_dir).task(task).cam_stats
    if not path.exists():
        return None
    stats = pd.read_csv(path)
    road_path = RunLayout(run_dir).task(task).cam_road
    if road_path.exists():
        stats.attrs["road"] = pd.read_csv(road_path)
    return stats
