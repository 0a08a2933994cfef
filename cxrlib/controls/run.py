"""Train and score one shortcut control on the study's rounds, with the study's training code.

Each control is a masked copy of a round's FoldData (``masks``) or, for the source probe, the images of one
class relabelled by source; ``cxrlib.train.train_fold`` trains it like a study fold (same folds, network, recipe,
``controls.epochs``) into ``controls/models/<control>/fold<k>/`` (``TaskLayout.control_fold``), skipping a finished
one. ``full`` retrains nothing: it reads the study's own fold predictions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import io
from ..config import StudyConfig
from ..data.images import image_options
from ..device import resolve_device
from ..errors import CxrError, DataError
from ..evaluate.artifacts import read_predictions
from ..evaluate.external import evaluable_external, predict_external
from ..evaluate.intervals import wilson
from ..layout import RunLayout
from ..train import FoldData, load_fold_data, train_fold
from ..train.derive import derive_fold
from .masks import apply_mask, fill_value, has_mask, hidden_region, lung_masks

ROLES = ("train", "val", "test")


def control_config(cfg: StudyConfig) -> StudyConfig:
    """The study's config with ``controls.epochs`` (when set) as the training length."""
    epochs = cfg.controls.epochs or cfg.train.epochs
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs))


def subset(data: FoldData, keep: np.ndarray, images: np.ndarray | None = None, targets: np.ndarray | None = None,
           classes: list[str] | None = None) -> FoldData | str:
    """The rows ``keep`` of ``data`` (optionally new images/targets/classes); a reason string when a role or a
    training class would be empty."""
    frame = data.frame.loc[keep].reset_index(drop=True)
    split = data.split[keep]
    targets = data.targets[keep] if targets is None else targets
    classes = data.classes if classes is None else classes
    empty = [r for r in ROLES if not (split == r).any()]
    if empty:
        return f"no {'/'.join(empty)} images in this round"
    untrained = [classes[i] for i in range(len(classes)) if not (targets[split == "train"] == i).any()]
    if untrained:
        return f"no training images of {', '.join(untrained)} in this round"
    images = data.images[keep] if images is None else images
    if data.fine_targets is None or classes is not data.classes:  # relabelled (source probe): no fine labels
        return FoldData(frame, images, targets, split, classes)
    return FoldData(frame, images, targets, split, classes, data.fine_targets[keep], data.fine_classes,
                    data.head_groups)


def masked_data(data: FoldData, control: str, cfg: StudyConfig) -> FoldData | str:
    """``data`` with the control's region replaced by the fill constant, or the reason it cannot run."""
    value = fill_value(data.part("train")[0], cfg.controls.fill)
    if control in ("border_only", "centre_only"):
        hidden = hidden_region(control, data.images.shape[-1], cfg.train.image_size, cfg.controls.border)
        return dataclasses.replace(data, images=apply_mask(data.images, hidden, value))
    if control == "lungs_masked":
        keep = has_mask(data.frame)
        if not keep.any():
            return "no source has lung masks"
        masks = lung_masks(data.frame.loc[keep, "mask_path"].tolist(), data.images.shape[-1],
                           image_options(cfg.data)["crop_border"])
        return subset(data, keep, images=apply_mask(data.images[keep], masks, value))
    raise ValueError(f"unknown masking control {control!r}")


def probe_data(data: FoldData, cls: str) -> FoldData | str:
    """The images of class ``cls`` labelled by their source (sources with training images only)."""
    in_class = data.targets == data.classes.index(cls)
    trained = sorted(set(data.sources[in_class & (data.split == "train")]))
    if len(trained) < 2:
        return f"{cls}: fewer than two sources among its training images"
    keep = in_class & np.isin(data.sources, trained)
    targets = np.array([trained.index(s) for s in data.sources[keep]], dtype=np.int64)
    return subset(data, keep, targets=targets, classes=trained)


def probe_classes(splits: pd.DataFrame) -> list[str]:
    """The task classes whose images come from two or more sources."""
    n = splits.groupby("target")["source"].nunique()
    return sorted(str(c) for c, k in n.items() if k >= 2)


def accuracy_entry(correct: int, n: int, level: float) -> dict[str, Any]:
    low, high = wilson(int(correct), int(n), level)
    return {"value": correct / n if n else None, "low": low, "high": high, "method": "wilson"}


def majority_rate(true: pd.Series) -> float | None:
    """Accuracy of always answering the commonest label (the chance level the controls are held against)."""
    return float(true.value_counts().iloc[0] / len(true)) if len(true) else None


def score(test: pd.DataFrame, level: float, folds: list[int], chance: float | None = None) -> dict[str, Any]:
    correct = int((test["true"] == test["predicted"]).sum())
    return {"accuracy": accuracy_entry(correct, len(test), level), "n": int(len(test)), "folds": folds,
            "chance": majority_rate(test["true"]) if chance is None else chance, "external": None, "skipped": None}


def skipped(reason: str, folds: list[int]) -> dict[str, Any]:
    return {"accuracy": None, "chance": None, "n": 0, "folds": folds, "external": None, "skipped": reason}


class ControlRunner:
    """Runs the controls of one task on ``cfg.controls.folds``; each round's images are loaded once."""

    def __init__(self, cfg: StudyConfig, run_dir: str | os.PathLike, task: str, progress: bool = False):
        self.cfg, self.run_dir, self.task, self.progress = cfg, run_dir, task, progress
        self.layout = RunLayout(run_dir).task(task)
        self.folds = list(cfg.controls.folds)
        self.level = cfg.evaluate.ci_level
        self._data: dict[int, FoldData] = {}

    def data(self, k: int) -> FoldData:
        if k not in self._data:
            self._data = {k: load_fold_data(self.cfg, self.run_dir, self.task, k)}  # one round in memory
        return self._data[k]

    def full(self) -> dict[str, Any]:
        """The study's fold models on the same test folds (their predictions; nothing retrained)."""
        classes = self.cfg.task_classes(self.task)
        frames = []
        for k in self.folds:
            path = self.layout.fold(k).predictions
            if not path.is_file():
                return skipped(f"the study's round {k} has no predictions ({path.name} missing)", self.folds)
            frames.append(read_predictions(path, classes))
        test = pd.concat(frames, ignore_index=True)
        return score(test[test["split"] == "test"], self.level, self.folds)

    def train(self, name: str, make: Callable[[FoldData], FoldData | str]) -> tuple[pd.DataFrame | None, str | None]:
        """Train control ``name`` on every round (``make`` builds its data); its test predictions, or a reason."""
        frames = []
        for k in self.folds:
            fold = self.layout.control_fold(name, k)
            built = make(self.data(k))
            if isinstance(built, str):
                return None, f"round {k}: {built}"
            source = self.source_fold(name, k)
            if source is not None:
                if not fold.train_info.is_file():
                    derive_fold(self.cfg, source, fold, built, None if name.startswith(PROBE_PREFIX) else
                                self.cfg.class_map(self.task), resolve_device(self.cfg.train.device),
                                {"task": self.task, "fold": k, "control": name})
            else:
                train_fold(control_config(self.cfg), self.run_dir, self.task, k, progress=self.progress,
                           data=lambda built=built: built, layout=fold)
            preds = read_predictions(fold.predictions)  # no class check: a probe's classes are sources
            frames.append(preds[preds["split"] == "test"])
        return pd.concat(frames, ignore_index=True), None

    def source_fold(self, name: str, k: int):
        """For a derived task (``derived_tasks``): the source task's finished model of control ``name`` on round
        ``k``, which this task's control reuses (a source probe of a class both tasks have; a masked control),
        else None (trained here)."""
        source = self.cfg.source_task(self.task)
        if source is None:
            return None
        if name.startswith(PROBE_PREFIX):  # reused only for a class of the same labels (the same images)
            cls = name[len(PROBE_PREFIX):]
            if self.cfg.tasks[self.task].get(cls) != self.cfg.tasks[source].get(cls):
                return None
        fold = RunLayout(self.run_dir).task(source).control_fold(name, k)
        return fold if fold.train_info.is_file() else None

    def masked(self, control: str) -> dict[str, Any]:
        if control == "lungs_masked" and not has_mask(self.data(self.folds[0]).frame).any():
            return skipped("no source has lung masks", self.folds)
        test, reason = self.train(control, lambda d: masked_data(d, control, self.cfg))
        return skipped(reason, self.folds) if test is None else score(test, self.level, self.folds)

    def source_probe(self) -> dict[str, Any]:
        """One source classifier per class with two or more sources, pooled; per class under ``by_class``."""
        splits = self.data(self.folds[0]).frame
        classes = probe_classes(splits)
        if not classes:
            return skipped("no class has images from two or more sources", self.folds)
        by_class, tests = {}, []
        for cls in classes:
            test, reason = self.train(probe_name(cls), lambda d, cls=cls: probe_data(d, cls))
            by_class[cls] = skipped(reason, self.folds) if test is None else score(test, self.level, self.folds)
            if test is not None:
                tests.append(test)
        if not tests:
            return {**skipped("; ".join(e["skipped"] for e in by_class.values()), self.folds), "by_class": by_class}
        pooled = pd.concat(tests, ignore_index=True)
        majority = sum(t["true"].value_counts().iloc[0] for t in tests) / len(pooled)
        return {**score(pooled, self.level, self.folds, chance=float(majority)), "by_class": by_class}

    def external(self, report: dict[str, dict]) -> None:
        """Score every trained control's models on ``evaluate.external`` (masked like their training images)."""
        root = self.cfg.evaluate.external
        if root is None:
            return
        try:
            frame, counts, _, _ = evaluable_external(self.run_dir, self.task, self.cfg, root, self.progress)
        except (DataError, CxrError) as exc:
            for entry in report.values():
                entry["external"] = {"data_root": str(root), "error": str(exc)}
            return
        frame = frame[frame["analysis"] == "narrow"].reset_index(drop=True)
        for name in ("full", "border_only", "centre_only", "lungs_masked"):
            if report[name]["skipped"] is None:
                report[name]["external"] = self._external_one(name, frame, str(root))

    def _external_one(self, name: str, frame: pd.DataFrame, root: str) -> dict[str, Any]:
        if name == "lungs_masked":
            frame = frame[has_mask(frame)].reset_index(drop=True)
            if frame.empty:
                return {"data_root": root, "error": "no external image has a lung mask"}
        classes = self.cfg.task_classes(self.task)
        device = resolve_device(self.cfg.train.device)
        probs = []
        for k in self.folds:
            fold = self.layout.fold(k) if name == "full" else self.layout.control_fold(name, k)
            transform = None if name == "full" else self._transform(name, k)
            preds = predict_external(frame, [fold.model], classes, self.cfg, device, transform=transform)
            probs.append(preds[[f"prob_{c}" for c in classes]].to_numpy())
        mean = np.mean(probs, axis=0)
        out = preds.drop(columns=[c for c in preds.columns if "prob_" in c])
        out["predicted"] = [classes[i] for i in mean.argmax(1)]
        for i, c in enumerate(classes):
            out[f"prob_{c}"] = mean[:, i]
        io.write_csv(self.layout.control_external_predictions(name), out)
        entry = score(out, self.level, self.folds)
        return {"data_root": root, "accuracy": entry["accuracy"], "chance": entry["chance"], "n": entry["n"]}

    def _transform(self, name: str, k: int):
        value = fill_value(self.data(k).part("train")[0], self.cfg.controls.fill)
        size, crop = self.cfg.data.resize, image_options(self.cfg.data)["crop_border"]
        if name == "lungs_masked":
            return lambda images, rows: apply_mask(images, lung_masks(rows["mask_path"].tolist(), size, crop), value)
        hidden = hidden_region(name, size, self.cfg.train.image_size, self.cfg.controls.border)
        return lambda images, rows: apply_mask(images, hidden, value)

    def run(self) -> dict[str, dict]:
        """Every control's entry (``full`` first), external scores included when configured."""
        report = {"full": self.full()}
        for control in ("border_only", "centre_only", "lungs_masked"):
            report[control] = self.masked(control)
        report["source_probe"] = self.source_probe()
        self.external(report)
        return report


def probe_name(cls: str) -> str:
    """The control name of the source probe within class ``cls`` (models under ``controls/models/<name>/``)."""
    return f"{PROBE_PREFIX}{cls}"


PROBE_PREFIX = "source_probe_"

