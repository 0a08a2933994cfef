"""Grad-CAM galleries of a trained run: pick test examples, compute maps, draw figures, assemble cam_stats.csv."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from . import io
from .cam import make_cam
from .cam.base import feature_grid
from .cam.overlay import denormalise_gray, show
from .data.images import decode_gray, load_images
from .data.splits import read_splits
from .errors import ArtifactError, ConfigError
from .evaluate import read_predictions
from .inference import eval_tensor
from .labels import COVID
from .models import cam_layers, load_checkpoint
from .shortcuts import border_area, border_share, mask_in_input_frame, mass_share, random_maps, road_scores


# ------------------------------------------------------------------------------------------------ examples


def fold_ids(run_dir: str | os.PathLike, task: str, fold: int | str) -> list[int]:
    """``[fold]``, or for ``"all"`` every ``fold<k>`` of the task holding a model.pt (ArtifactError if none)."""
    task_dir = Path(run_dir) / task
    if fold == "all":
        found = sorted(int(p.parent.name[4:]) for p in task_dir.glob("fold*/model.pt") if p.parent.name[4:].isdigit())
        if not found:
            raise ArtifactError(f"{task_dir}: no fold<k>/model.pt found (train the folds first)")
        return found
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        raise ConfigError(f"fold must be an integer or 'all', got {fold!r}")
    return [int(fold)]


def resolve_layer_labels(arch: str, layers: Sequence[str] | None) -> dict[str, str]:
    """The architecture's CAM layers (all of them for None), or the named subset; unknown labels are errors."""
    known = cam_layers(arch)
    if layers is None:
        return known
    unknown = [l for l in layers if l not in known]
    if unknown or not layers:
        raise ConfigError(f"layers {list(layers)}: unknown {unknown} (known for {arch}: {list(known)})")
    return {l: known[l] for l in layers}


def select_examples(predictions: pd.DataFrame, classes: Sequence[str], n_examples: int) -> pd.DataFrame:
    """Test rows: per true class up to ``n_examples`` correct and up to ``n_examples`` misclassified.

    Rows are taken in sha256 order: deterministic, and unrelated to file names or sources.
    """
    test = predictions[predictions["split"] == "test"] if "split" in predictions else predictions
    test = test.assign(correct=test["true"] == test["predicted"]).sort_values("sha256", kind="stable")
    parts = [g.head(n_examples) for _, g in test.groupby(["true", "correct"], sort=False)]
    if not parts:
        return test.iloc[0:0]
    order = {c: i for i, c in enumerate(classes)}
    out = pd.concat(parts)
    out = out.assign(_c=out["true"].map(order)).sort_values(["_c", "correct", "sha256"], ascending=[True, False, True])
    return out.drop(columns="_c").reset_index(drop=True)


@dataclass
class ExampleSet:
    """Selected test images of one or more folds, as the model saw them, with each fold's model.

    ``frame`` has one row per image (fold, path, sha256, true, predicted, correct, ...); ``gray`` is uint8
    (N, H, W) in the input frame; ``masks`` bool (N, H, W) lung masks or None per image.
    """

    frame: pd.DataFrame
    gray: np.ndarray
    inputs: torch.Tensor
    masks: list
    models: dict
    classes: list[str]
    layers: dict[str, str]
    batch_size: int = 8
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    def maps(self, method: str = "gradcam", target: str = "predicted", indices: Sequence[int] | None = None,
             layers: Sequence[str] | None = None):
        """``{layer: (n, H, W)}`` for ``indices`` (all by default) and ``layers`` (all by default).

        ``target`` = predicted | true (the classes of predictions.csv) | a class name. Results are cached.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=int)
        wanted = {l: self.layers[l] for l in (layers or self.layers)}
        key = (method, target, tuple(idx.tolist()), tuple(wanted))
        if key not in self._cache:
            out = {l: np.zeros((len(idx),) + self.gray.shape[1:], np.float32) for l in wanted}
            folds = self.frame["fold"].to_numpy()[idx]
            for k in np.unique(folds):
                pos = np.flatnonzero(folds == k)
                with make_cam(method, self.models[int(k)], wanted, batch_size=self.batch_size) as cam:
                    for start in range(0, len(pos), self.batch_size):
                        chunk = pos[start:start + self.batch_size]
                        rows = idx[chunk]
                        result = cam(self.inputs[rows], targets=self._targets(target, rows), classes=self.classes)
                        for l in wanted:
                            out[l][chunk] = result.maps[l]
            self._cache[key] = out
        return self._cache[key]


    def _targets(self, target: str, rows: np.ndarray):
        # "predicted" is the class recorded in predictions.csv, so maps and cam_stats rows agree with it.
        if target in ("predicted", "true"):
            return list(self.frame[target].iloc[rows])
        return target


def build_examples(
    run_dir: str | os.PathLike,
    task: str,
    fold: int | str,
    n_examples: int,
    cache_dir: str | os.PathLike,
    layers: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> ExampleSet:
    """Load each fold's checkpoint and test predictions, select examples and their images (and lung masks)."""
    task_dir = Path(run_dir) / task
    splits = read_splits(task_dir / "splits.csv")
    mask_of = dict(zip(splits["path"], splits["mask_path"]))
    frames, grays, inputs, models = [], [], [], {}
    classes = arch = None
    for k in fold_ids(run_dir, task, fold):
        model, meta = load_checkpoint(task_dir / f"fold{k}" / "model.pt", device)
        if classes is not None and (list(meta["classes"]) != classes or meta["arch"] != arch):
            raise ArtifactError(f"{task_dir}/fold{k}/model.pt: classes/arch differ from the other folds")
        classes, arch = list(meta["classes"]), meta["arch"]
        preds = read_predictions(task_dir / f"fold{k}" / "predictions.csv", classes)
        chosen = select_examples(preds, classes, n_examples).assign(fold=k)
        if chosen.empty:
            continue
        images = load_images(list(chosen["path"]), list(chosen["sha256"]), int(meta["resize"]), cache_dir)
        x = eval_tensor(images, int(meta["image_size"]))
        chosen["mask_path"] = chosen["path"].map(mask_of).fillna("")
        chosen["resize"], chosen["image_size"] = int(meta["resize"]), int(meta["image_size"])
        frames.append(chosen)
        inputs.append(x)
        grays.append(denormalise_gray(x))
        models[k] = model
    if not frames:
        raise ArtifactError(f"{task_dir}: no test predictions to draw examples from")
    frame = pd.concat(frames, ignore_index=True)
    masks = [_mask(r) for r in frame.itertuples()]
    return ExampleSet(frame, np.concatenate(grays), torch.cat(inputs), masks, models, classes,
                      resolve_layer_labels(arch, layers), batch_size)


def _mask(row) -> np.ndarray | None:
    if not row.mask_path:
        return None
    return mask_in_input_frame(decode_gray(row.mask_path), row.resize, row.image_size)


def featured_indices(ex: ExampleSet) -> list[int]:
    """Correctly classified examples of the positive class (COVID-19), the subject of Figures 5 and 6."""
    pos = positive_class(ex.classes)
    return [i for i, (t, ok) in enumerate(zip(ex.frame["true"], ex.frame["correct"])) if t == pos and ok]


def positive_class(classes: Sequence[str]) -> str:
    """COVID-19 when the task has it, else the last class."""
    return COVID if COVID in classes else classes[-1]


# ------------------------------------------------------------------------------------------------- figures


def _label(row) -> str:
    mark = "" if row["correct"] else " ✗"
    return f"fold {row['fold']}: {row['true']} → {row['predicted']}{mark}"


def figure_layers(ex: ExampleSet, index: int, method: str = "gradcam", target: str = "predicted") -> Figure:
    """Figure 5: one image and its map at every layer (shallow -> deep)."""
    maps = ex.maps(method, target, [index])
    fig = Figure(figsize=(2.2 * (len(maps) + 1), 2.6))
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    show(axes[0], ex.gray[index], None, _label(ex.frame.iloc[index]))
    for ax, (layer, m) in zip(axes[1:], maps.items()):
        show(ax, ex.gray[index], m[0], layer)
    fig.suptitle(f"{method}, target = {target}", fontsize=9)
    fig.tight_layout()
    return fig


def figure_grid(ex: ExampleSet, indices: Sequence[int], layer: str, method: str = "gradcam",
                target: str = "predicted", ncols: int = 4, title: str = "") -> Figure:
    """Figure 6: ``layer`` maps of ``indices`` in a grid (an empty grid says so)."""
    indices = list(indices)
    nrows = max(1, -(-len(indices) // ncols))
    fig = Figure(figsize=(2.2 * ncols, 2.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    maps = ex.maps(method, target, indices)[layer] if indices else None
    for ax in axes:
        ax.set_axis_off()
    for j, i in enumerate(indices):
        show(axes[j], ex.gray[i], maps[j], _label(ex.frame.iloc[i]))
    if not indices:
        axes[0].text(0.5, 0.5, "no examples", ha="center", va="center")
    fig.suptitle(title or f"{method} at {layer}", fontsize=10)
    fig.tight_layout()
    return fig


def figure_correct_vs_wrong(ex: ExampleSet, layer: str, method: str = "gradcam", per_class: int = 3) -> Figure:
    """One row per true class: up to ``per_class`` correct, then up to ``per_class`` misclassified examples."""
    ncols = 2 * per_class
    fig = Figure(figsize=(2.0 * ncols, 2.3 * len(ex.classes)))
    axes = fig.subplots(len(ex.classes), ncols, squeeze=False)
    for r, cls in enumerate(ex.classes):
        for c in range(ncols):
            axes[r, c].set_axis_off()
        rows = ex.frame[ex.frame["true"] == cls]
        for start, ok in ((0, True), (per_class, False)):
            picks = list(rows.index[rows["correct"] == ok][:per_class])
            if not picks:
                axes[r, start].text(0.5, 0.5, f"no {'correct' if ok else 'misclassified'}\n{cls}", ha="center",
                                    va="center", fontsize=8)
                continue
            maps = ex.maps(method, "predicted", picks)[layer]
            for j, i in enumerate(picks):
                show(axes[r, start + j], ex.gray[i], maps[j], _label(ex.frame.iloc[i]))
    fig.suptitle(f"correct (left) vs misclassified (right), {method} at {layer}, target = predicted", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- cam stats

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


def summarise_cam_stats(stats: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
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
    """Write ``<run_dir>/<task>/cam_stats.csv`` atomically."""
    return io.write_csv(Path(run_dir) / task / "cam_stats.csv", stats[STATS_COLUMNS])
