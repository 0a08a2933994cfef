"""A task's evaluation written to disk: each fold's ``metrics.json`` and the task's ``summary.json``."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from .. import io
from ..labels import COVID
from ..layout import RunLayout
from .artifacts import attach_groups, load_fold_predictions
from .metrics import across_folds, score_predictions
from .pooled import pooled_metrics
from .tables import PUBLISHED, errors_by_source


def write_fold_metrics(run_dir: str | os.PathLike, task: str, fold: int, predictions: pd.DataFrame,
                       classes: list[str]) -> dict[str, Any]:
    """Score one fold's test predictions and write its ``metrics.json`` (the only writer of that file)."""
    metrics = {"fold": fold, **score_predictions(predictions, classes)}
    io.write_json(RunLayout(run_dir).fold(task, fold).metrics, io.json_safe(metrics))
    return metrics


def summarize_task(run_dir: str | os.PathLike, task: str, cfg, external: dict | None = None) -> dict[str, Any]:
    """Evaluate every fold of ``task``: writes each fold's ``metrics.json`` and the task's ``summary.json``.

    The summary holds per-fold metrics, ``across_folds`` (mean / SD / values), ``pooled`` (with intervals),
    COVID-19 sensitivity and specificity, the class x source error table, the published numbers and, when the
    caller passes an external validation report (``cxrlib.evaluate.external``), that report under ``external``.
    """
    classes = cfg.task_classes(task)
    n_folds = cfg.split.n_folds
    frame = attach_groups(load_fold_predictions(run_dir, task, n_folds, classes), run_dir, task)
    per_fold = [write_fold_metrics(run_dir, task, k, frame[frame["fold"] == k], classes) for k in range(n_folds)]
    ev = cfg.evaluate
    pooled = pooled_metrics(frame, classes, ev.ci_level, ev.bootstrap, ev.seed)
    folds = across_folds(per_fold)
    summary: dict[str, Any] = {
        "task": task,
        "classes": classes,
        "n_folds": n_folds,
        "ci_level": ev.ci_level,
        "folds": per_fold,
        "across_folds": folds,
        "pooled": pooled,
        "errors_by_source": errors_by_source(frame, classes=classes).reset_index().to_dict(orient="records"),
        "published": PUBLISHED.get(task),
        "calibration": fold_calibration(run_dir, task, n_folds),
    }
    if COVID in classes:
        summary[COVID] = {
            name: {**pooled[COVID][name], "mean": folds[COVID][name]["mean"], "sd": folds[COVID][name]["sd"]}
            for name in ("sensitivity", "specificity")
        }
    if external is not None:
        summary["external"] = external
    summary = io.json_safe(summary)
    io.write_json(RunLayout(run_dir).task(task).summary, summary)
    return summary


def fold_calibration(run_dir: str | os.PathLike, task: str, n_folds: int) -> dict[str, Any]:
    """``evaluate.calibration`` as the folds were trained: ``{"method", "temperature": [T per fold]}`` (from each
    fold's train.json; a fold trained before calibration existed counts as ``none``, T = 1)."""
    per_fold = []
    for k in range(n_folds):
        path = RunLayout(run_dir).fold(task, k).train_info
        per_fold.append((io.read_json(path) if path.exists() else {}).get("calibration")
                        or {"method": "none", "temperature": 1.0})
    methods = sorted({c["method"] for c in per_fold})
    return {"method": methods[0] if len(methods) == 1 else "mixed: " + ", ".join(methods),
            "temperature": [float(c["temperature"]) for c in per_fold]}


def read_summary(run_dir: str | os.PathLike, task: str) -> dict | None:
    """The task's summary.json, or None when the evaluation has not written one."""
    path = RunLayout(run_dir).task(task).summary
    return io.read_json(path) if path.exists() else None
