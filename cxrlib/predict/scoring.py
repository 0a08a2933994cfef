"""Predictions and CAM maps of a fold ensemble on decoded images.

Columns of a prediction frame: ``path, predicted, prob_<class>...`` (the ensemble's mean probability, named as
in the study's own predictions.csv), ``fold<k>_prob_<class>...`` per fold model, ``disagreement`` and ``warning``.

``disagreement`` is how far the fold models are apart: the largest, over classes, standard deviation
(population, ddof=0) of the fold models' probabilities; 0 when they agree exactly or only one fold is used,
0.5 at most (two models, certain and opposite).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..cam import make_cam
from ..device import to_device
from ..errors import ConfigError, DataError
from ..evaluate.external import model_column
from ..models import cam_layers
from ..transforms import eval_batch, eval_crop
from .ensemble import FoldEnsemble
from .inputs import LoadedImage, load_image

CHUNK = 64  # images decoded and predicted at a time


@dataclass
class PredictResult:
    """The scored images' predictions and the files that could not be read (path, reason)."""

    frame: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)


def prob_columns(classes: Sequence[str]) -> list[str]:
    return [f"prob_{c}" for c in classes]


def predict_images(ens: FoldEnsemble, images: Sequence[LoadedImage], batch_size: int = 32) -> pd.DataFrame:
    """One row per image (see the module docstring)."""
    per_fold = ens.fold_probs(np.stack([im.resized for im in images]), batch_size)  # (K, N, C)
    mean = per_fold.mean(axis=0)
    frame = pd.DataFrame({"path": [im.path for im in images],
                          "predicted": [ens.classes[i] for i in mean.argmax(axis=1)]})
    for j, col in enumerate(prob_columns(ens.classes)):
        frame[col] = mean[:, j]
    for i, k in enumerate(ens.folds):
        for j, cls in enumerate(ens.classes):
            frame[model_column(k, cls)] = per_fold[i, :, j]
    frame["disagreement"] = per_fold.std(axis=0).max(axis=1)
    frame["warning"] = ["; ".join(im.warnings) for im in images]
    return frame


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict_paths(ens: FoldEnsemble, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                  progress: bool = False,
                  on_chunk: Callable[[list[LoadedImage], pd.DataFrame], None] | None = None) -> PredictResult:
    """Decode, resize and score ``paths`` in chunks; unreadable files are skipped and listed.

    ``progress``: a tqdm bar over images on stderr. ``on_chunk(images, frame)`` sees each scored chunk
    (the CLI draws its CAM overlays there, so decoded images never pile up)."""
    from tqdm.auto import tqdm

    frames, skipped = [], []
    bar = tqdm(total=len(paths), desc="images", unit="img", disable=not progress, leave=False)
    try:
        for chunk in _chunks(list(paths), CHUNK):
            images = []
            for p in chunk:
                try:
                    images.append(load_image(p, ens.resize, **ens.image_options))
                except DataError as exc:
                    skipped.append((str(p), str(exc)))
                bar.update(1)
            if images:
                frame = predict_images(ens, images, batch_size)
                if on_chunk is not None:
                    on_chunk(images, frame)
                frames.append(frame)
    finally:
        bar.close()
    columns = None if frames else ["path", "predicted", *prob_columns(ens.classes), "disagreement", "warning"]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return PredictResult(frame, skipped)


def layer_names(ens: FoldEnsemble, layers: Sequence[str] | None) -> dict[int, dict[str, str]]:
    out = {}
    for k, arch in ens.archs.items():
        known = cam_layers(arch)
        wanted = list(known) if layers is None else list(layers)
        unknown = [lab for lab in wanted if lab not in known]
        if unknown:
            raise ConfigError(f"cam layer(s) {unknown} unknown for fold {k} ({arch}; layers: {list(known)})")
        out[k] = {lab: known[lab] for lab in wanted}
    return out


def ensemble_cams(ens: FoldEnsemble, resized: np.ndarray, targets: Sequence[int], layers: Sequence[str] | None = None,
                  method: str = "gradcam") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(crops, maps): the (N, image_size, image_size) uint8 centre crops the models saw, and per layer label the
    mean over the fold models of each model's map (each in [0, 1]) for class ``targets`` (the ensemble's
    prediction, so every model explains the same class). ``layers``: labels of ``cam_layers``; None: all five.
    Our ``gradcam`` computes every layer in one pass per model."""
    names = layer_names(ens, layers)
    x = to_device(eval_batch(resized, ens.image_size), ens.device)
    targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    total: dict[str, np.ndarray] = {}
    for k in ens.folds:
        with make_cam(method, ens.models[k], names[k]) as cam:
            result = cam(x, targets=targets)
        for label, m in result.maps.items():
            total[label] = total.get(label, 0) + m
    maps = {label: (m / len(ens.folds)).astype(np.float32) for label, m in total.items()}
    return eval_crop(resized, ens.image_size)[:, 0].numpy(), maps
