"""Grad-CAM examples of a trained run: which test images to show, loaded as each fold's model saw them.

``build_examples`` reads each fold's checkpoint and test predictions (paths from ``cxrlib.layout``), selects
correct and misclassified images per class and returns an ``ExampleSet`` whose ``maps`` computes (and
caches) the maps of every layer in one pass per fold model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..data.images import decode_gray, image_options, load_images
from ..data.splits import read_splits
from ..errors import ArtifactError, ConfigError
from ..evaluate.artifacts import read_predictions
from ..labels import COVID
from ..layout import RunLayout
from ..models import cam_layers, load_checkpoint
from ..transforms import eval_batch
from . import make_cam
from .overlay import denormalise_gray
from .shortcuts import mask_in_input_frame


def fold_ids(run_dir: str | os.PathLike, task: str, fold: int | str) -> list[int]:
    """``[fold]``, or for ``"all"`` every fold of the task holding a trained model (ArtifactError if none)."""
    task_layout = RunLayout(run_dir).task(task)
    if fold == "all":
        found = task_layout.trained_folds()
        if not found:
            raise ArtifactError(f"{task_layout.dir}: no trained fold model found (train the folds first)")
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


def select_random(predictions: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A seeded uniform random sample of ``n`` test rows (all when fewer), in sha256 order, with ``correct``."""
    test = predictions[predictions["split"] == "test"] if "split" in predictions else predictions
    test = test.assign(correct=test["true"] == test["predicted"]).sort_values("sha256", kind="stable")
    pick = np.sort(np.random.default_rng(seed).permutation(len(test))[:n])
    return test.iloc[pick].reset_index(drop=True)


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

        ``target`` = predicted | true (the classes of the fold's predictions) | a class name. Results are cached.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=int)
        wanted = {l: self.layers[l] for l in (layers or self.layers)}
        key = (method, target, tuple(idx.tolist()), tuple(wanted))
        if key not in self._cache:
            self._cache[key] = self._computed(method, idx, wanted, [target])[0]
        return self._cache[key]

    def maps_by_class(self, method: str = "gradcam", indices: Sequence[int] | None = None,
                      layers: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
        """``{class: {layer: (n, H, W)}}``: every class's maps, one forward pass per batch for all of them
        (``CamMethod.many``); cached as ``maps(method, class, ...)`` is, with the same values."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=int)
        wanted = {l: self.layers[l] for l in (layers or self.layers)}
        keys = {c: (method, c, tuple(idx.tolist()), tuple(wanted)) for c in self.classes}
        todo = [c for c in self.classes if keys[c] not in self._cache]
        if todo:
            for c, maps in zip(todo, self._computed(method, idx, wanted, todo)):
                self._cache[keys[c]] = maps
        return {c: self._cache[keys[c]] for c in self.classes}

    def _computed(self, method: str, idx: np.ndarray, wanted: dict[str, str],
                  targets: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Maps of each of ``targets`` for rows ``idx``, batch by batch with each row's fold model."""
        out = [{l: np.zeros((len(idx),) + self.gray.shape[1:], np.float32) for l in wanted} for _ in targets]
        folds = self.frame["fold"].to_numpy()[idx]
        for k in np.unique(folds):
            pos = np.flatnonzero(folds == k)
            with make_cam(method, self.models[int(k)], wanted, batch_size=self.batch_size) as cam:
                for start in range(0, len(pos), self.batch_size):
                    chunk = pos[start:start + self.batch_size]
                    rows = idx[chunk]
                    specs = [self._targets(t, rows) for t in targets]
                    for maps, result in zip(out, cam.many(self.inputs[rows], specs, classes=self.classes)):
                        for l in wanted:
                            maps[l][chunk] = result.maps[l]
        return out

    def _targets(self, target: str, rows: np.ndarray):
        # "predicted" is the class recorded in the fold's predictions, so maps and cam_stats rows agree with it.
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
    selection: str = "quota",
    seed: int = 0,
) -> ExampleSet:
    """Load each fold's checkpoint and test predictions, select examples and their images (and lung masks).

    ``selection``: ``"quota"`` takes up to ``n_examples`` correct and misclassified images per class and fold
    (:func:`select_examples`, for galleries); ``"random"`` a seeded uniform sample of ``n_examples`` test images
    per fold (:func:`select_random`, for estimates such as ROAD that should stand for the test set).
    """
    if selection not in ("quota", "random"):
        raise ValueError(f"selection must be 'quota' or 'random', got {selection!r}")
    task_layout = RunLayout(run_dir).task(task)
    splits = read_splits(task_layout.splits)
    mask_of = dict(zip(splits["path"], splits["mask_path"]))
    frames, grays, inputs, models = [], [], [], {}
    classes = arch = None
    for k in fold_ids(run_dir, task, fold):
        fold_layout = task_layout.fold(k)
        model, meta = load_checkpoint(fold_layout.model, device)
        if classes is not None and (list(meta["classes"]) != classes or meta["arch"] != arch):
            raise ArtifactError(f"{fold_layout.model}: classes/arch differ from the other folds")
        classes, arch = list(meta["classes"]), meta["arch"]
        preds = read_predictions(fold_layout.predictions, classes)
        chosen = (select_examples(preds, classes, n_examples) if selection == "quota"
                  else select_random(preds, n_examples, seed + k)).assign(fold=k)
        if chosen.empty:
            continue
        images = load_images(list(chosen["path"]), list(chosen["sha256"]), int(meta["resize"]), cache_dir,
                             **image_options(meta.get("params", {}).get("data", {})))
        x = eval_batch(images, int(meta["image_size"]))
        chosen["mask_path"] = chosen["path"].map(mask_of).fillna("")
        chosen["resize"], chosen["image_size"] = int(meta["resize"]), int(meta["image_size"])
        chosen["crop_border"] = image_options(meta.get("params", {}).get("data", {}))["crop_border"]
        frames.append(chosen)
        inputs.append(x)
        grays.append(denormalise_gray(x))
        models[k] = model
    if not frames:
        raise ArtifactError(f"{task_layout.dir}: no test predictions to draw examples from")
    frame = pd.concat(frames, ignore_index=True)
    masks = [_mask(r) for r in frame.itertuples()]
    return ExampleSet(frame, np.concatenate(grays), torch.cat(inputs), masks, models, classes,
                      resolve_layer_labels(arch, layers), batch_size)


def _mask(row) -> np.ndarray | None:
    if not row.mask_path:
        return None
    return mask_in_input_frame(decode_gray(row.mask_path), row.resize, row.image_size, row.crop_border)


def featured_indices(ex: ExampleSet) -> list[int]:
    """Correctly classified examples of the positive class (COVID-19), the subject of Figures 5 and 6."""
    pos = positive_class(ex.classes)
    return [i for i, (t, ok) in enumerate(zip(ex.frame["true"], ex.frame["correct"])) if t == pos and ok]


def positive_class(classes: Sequence[str]) -> str:
    """COVID-19 when the task has it, else the last class."""
    return COVID if COVID in classes else classes[-1]

