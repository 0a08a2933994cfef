"""The images of one cross-validation round in memory, with their roles (train / val / test)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from ..config import StudyConfig
from ..data.images import image_options, load_images
from ..data.splits import read_splits, split_of
from ..errors import CxrError
from ..layout import RunLayout

@dataclass
class FoldData:
    """The images of one round in memory: uint8 (N,S,S), integer targets and roles train/val/test.

    With ``train.fine_labels``, ``fine_targets`` index ``fine_classes`` (the canonical labels inside the task
    classes) and ``head_groups[j]`` is the class of fine label j; the network is trained on those."""

    frame: pd.DataFrame
    images: np.ndarray
    targets: np.ndarray
    split: np.ndarray
    classes: list[str]
    fine_targets: Optional[np.ndarray] = None
    fine_classes: Optional[list[str]] = None
    head_groups: Optional[list[int]] = None

    @property
    def training_targets(self) -> np.ndarray:
        """What the loss is taken on: ``fine_targets`` when set, else ``targets``."""
        return self.targets if self.fine_targets is None else self.fine_targets

    @property
    def sources(self) -> np.ndarray:
        """The source of every image (for ``train.sampler``: ``source_balanced``, ``balanced_by_source``)."""
        return self.frame["source"].astype(str).to_numpy()

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == name
        return self.images[mask], self.targets[mask]


def load_fold_data(cfg: StudyConfig, run_dir: str | os.PathLike, task: str, fold: int) -> FoldData:
    """Read ``<run_dir>/<task>/splits.csv`` and load the images of round ``fold`` (decoded once, cached)."""
    classes = cfg.task_classes(task)
    path = RunLayout(run_dir).task(task).splits
    frame = read_splits(path)
    n_folds = int(frame["fold"].max()) + 1
    if n_folds != cfg.split.n_folds:
        raise CxrError(f"{path}: has {n_folds} folds but split.n_folds={cfg.split.n_folds}")
    unknown = sorted(set(frame["target"]) - set(classes))
    if unknown:
        raise CxrError(f"{path}: targets {unknown} are not classes of task {task} ({classes})")
    split = split_of(frame, fold, n_folds).to_numpy()
    for role in ("train", "val", "test"):
        if not (split == role).any():
            raise CxrError(f"{path}: round {fold} has no {role} images")
    targets = frame["target"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    missing = sorted(set(range(len(classes))) - set(targets[split == "train"]))
    if missing:
        raise CxrError(f"{path}: round {fold} trains on no images of class(es) {[classes[i] for i in missing]}")
    fine = fine_labels(frame, cfg.tasks[task]) if cfg.train.fine_labels else None
    if fine is not None:
        _check_labels_inside_targets(frame, cfg.tasks[task], path)
    images = load_images(frame["path"].tolist(), frame["sha256"].tolist(), resize=cfg.data.resize,
                         cache_dir=cfg.data.cache_dir, **image_options(cfg.data))
    if fine is None:
        return FoldData(frame, images, targets, split, classes)
    class_of = {lab: i for i, labels in enumerate(cfg.tasks[task].values()) for lab in labels}
    fine_targets = frame["label"].map({lab: j for j, lab in enumerate(fine)}).to_numpy(np.int64)
    return FoldData(frame, images, targets, split, classes, fine_targets, fine, [class_of[lab] for lab in fine])


def _check_labels_inside_targets(frame: pd.DataFrame, classes: dict[str, list[str]], path) -> None:
    """CxrError naming ``path`` and the first row whose label is not one of its target class's labels."""
    owner = {lab: cls for cls, labels in classes.items() for lab in labels}
    wrong = np.flatnonzero((frame["label"].map(owner) != frame["target"]).to_numpy())
    if len(wrong):
        row = frame.iloc[wrong[0]]
        raise CxrError(f"{path}: row {wrong[0] + 2} has label {row['label']!r}, which is not one of class "
                       f"{row['target']!r}'s labels {classes[row['target']]} (train.fine_labels trains on the "
                       f"labels inside each class; {len(wrong)} such rows)")


def fine_labels(frame: pd.DataFrame, classes: dict[str, list[str]]) -> Optional[list[str]]:
    """The canonical labels of ``frame`` in task order (class by class), or None when every class holds one."""
    present = set(frame["label"])
    fine = [lab for labels in classes.values() for lab in labels if lab in present]
    return fine if len(fine) > len(classes) else None

