"""The fold models of one (run, task) as one ensemble: mean softmax probability over the fold models.

Every fold model must share classes and preprocessing (``resize``, ``image_size`` from its checkpoint meta,
never from the current params); a run whose models disagree is refused. Architectures may differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data.images import image_options
from ..device import resolve_device
from ..errors import ArtifactError
from ..inference import predict_probs
from ..layout import RunLayout
from ..models import load_checkpoint

SHARED_META = ("classes", "resize", "image_size", "tta_flip", "image_options")


@dataclass
class FoldEnsemble:
    """Fold models (``models[k]``) with the preprocessing they were trained with."""

    models: dict[int, nn.Module]
    archs: dict[int, str]
    classes: list[str]
    resize: int
    image_size: int
    device: torch.device
    sources: dict[int, Path]
    tta_flip: bool = False  # the study's predictions averaged each image with its mirror (evaluate.tta_flip)
    image_options: dict = field(default_factory=dict)  # data.crop_border / data.equalize of the training cache
    temperatures: dict[int, float] = field(default_factory=dict)  # per fold model (evaluate.calibration); absent: 1

    @property
    def folds(self) -> list[int]:
        return sorted(self.models)

    def fold_probs(self, images_uint8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(K, N, C): each fold model's softmax probabilities on (N, resize, resize) uint8 images."""
        return np.stack([predict_probs(self.models[k], images_uint8, self.image_size, batch_size, self.device,
                                       self.tta_flip, self.temperature(k)) for k in self.folds])

    def temperature(self, k: int) -> float:
        """Fold model k's calibration temperature (1.0: uncalibrated)."""
        return float(self.temperatures.get(k, 1.0))

    def probs(self, images_uint8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N, C): the ensemble's mean probability."""
        return self.fold_probs(images_uint8, batch_size).mean(axis=0)


def _selected(layout, task: str, folds: Sequence[int] | str | None) -> list[int]:
    task_dir = layout.task(task).dir
    if not layout.root.is_dir():
        raise ArtifactError(f"{layout.root}: run folder not found")
    if not task_dir.is_dir():
        known = sorted(p.name for p in layout.root.iterdir() if p.is_dir() and layout.task(p.name).trained_folds())
        raise ArtifactError(f"{task_dir}: run has no task {task!r} (tasks with trained folds: {known or 'none'})")
    trained = layout.task(task).trained_folds()
    if not trained:
        raise ArtifactError(f"{task_dir}: no trained fold model (no {layout.fold(task, 0).model.name} in any fold)")
    if folds is None or folds == "all" or list(folds) == ["all"]:
        return trained
    wanted = sorted({int(k) for k in folds})
    missing = [k for k in wanted if k not in trained]
    if missing:
        raise ArtifactError(f"{task_dir}: fold(s) {missing} have no trained model (trained: {trained})")
    return wanted


def load_ensemble(run_dir: str | os.PathLike, task: str, folds: Sequence[int] | str | None = "all",
                  device: str | torch.device = "auto") -> FoldEnsemble:
    """Load the fold models of ``task`` (``folds``: "all" or fold numbers) in eval mode on ``device``."""
    layout = RunLayout(run_dir)
    device = resolve_device(device) if isinstance(device, str) else device
    models, archs, sources, temperatures, first = {}, {}, {}, {}, None
    for k in _selected(layout, task, folds):
        path = layout.fold(task, k).model
        model, meta = load_checkpoint(path, device)
        meta.setdefault("tta_flip", False)  # checkpoints from before evaluate.tta_flip
        meta["image_options"] = image_options(meta.get("params", {}).get("data", {}))
        if first is None:
            first = (path, meta)
        else:
            for key in SHARED_META:
                if list(np.atleast_1d(meta[key])) != list(np.atleast_1d(first[1][key])):
                    raise ArtifactError(
                        f"{path}: {key} = {meta[key]!r} differs from {first[0]} ({key} = {first[1][key]!r}); "
                        "the fold models of one ensemble must share classes and preprocessing")
        models[k], archs[k], sources[k] = model, meta["arch"], path
        temperatures[k] = float(meta.get("temperature", 1.0))
    meta = first[1]
    return FoldEnsemble(models, archs, list(meta["classes"]), int(meta["resize"]), int(meta["image_size"]),
                        torch.device(device), sources, bool(meta["tta_flip"]), meta["image_options"], temperatures)
