"""Evaluation figures: confusion matrices, ROC / precision-recall curves, reliability.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state), so they work under any backend, Agg
included, and never pile up open windows. Each function returns the Figure and, given ``path``, also saves
it as PNG atomically.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

from ..evaluate import DISPLAY_NAMES, expected_calibration_error, reliability_bins, scored_rows, top_confidence
from . import save_figure


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _name(cls: str) -> str:
    return DISPLAY_NAMES.get(cls, cls)


def plot_confusion(
    cm, classes: Sequence[str], normalize: bool = False, path: str | os.PathLike | None = None, title: str | None = None
) -> Figure:
    """Confusion matrix (rows true, columns predicted) as counts, or as row-normalised percentages (Figs 3, 4)."""
    cm = np.asarray(cm, dtype=float)
    names = [_name(c) for c in classes]
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        values = np.divide(100 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
        fmt, label = ".1f", "% of true class"
    else:
        values, fmt, label = cm, ".0f", "images"
    fig = Figure(figsize=(1.6 * len(classes) + 2.5, 1.4 * len(classes) + 1.5))
    ax = fig.subplots()
    sns.heatmap(values, annot=True, fmt=fmt, cmap="Blues", xticklabels=names, yticklabels=names, ax=ax,
                cbar_kws={"label": label}, vmin=0, vmax=100 if normalize else None, square=True)
    if normalize:
        for text in ax.texts:
            text.set_text(text.get_text() + "%")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("Confusion matrix (row %)" if normalize else "Confusion matrix (counts)"))
    return _finish(fig, path)


def _scores(pred_frame: pd.DataFrame, classes: Sequence[str]):
    frame = scored_rows(pred_frame)
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    return frame["true"].astype(str).to_numpy(), probs


def plot_roc(pred_frame: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike | None = None) -> Figure:
    """One-vs-rest ROC curve per class (test rows), AUC in the legend."""
    y, probs = _scores(pred_frame, classes)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for i, cls in enumerate(classes):
        if 0 < (y == cls).sum() < len(y):
            RocCurveDisplay.from_predictions(y == cls, probs[:, i], name=_name(cls), ax=ax)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_title("ROC, one class vs the rest")
    return _finish(fig, path)


def plot_precision_recall(
    pred_frame: pd.DataFrame, classes: Sequence[str], path: str | os.PathLike | None = None
) -> Figure:
    """One-vs-rest precision-recall curve per class (test rows), average precision in the legend."""
    y, probs = _scores(pred_frame, classes)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for i, cls in enumerate(classes):
        if 0 < (y == cls).sum():
            PrecisionRecallDisplay.from_predictions(y == cls, probs[:, i], name=_name(cls), ax=ax)
    ax.set_title("Precision-recall, one class vs the rest")
    return _finish(fig, path)


def plot_reliability(
    pred_frame: pd.DataFrame, classes: Sequence[str], n_bins: int = 10, path: str | os.PathLike | None = None
) -> Figure:
    """Reliability diagram of the top-class confidence: accuracy per confidence bin, with the ECE."""
    frame = scored_rows(pred_frame)
    index = {c: i for i, c in enumerate(classes)}
    pred = frame["predicted"].map(index).to_numpy(dtype=np.int64)
    correct = frame["true"].map(index).to_numpy(dtype=np.int64) == pred
    conf = top_confidence(frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=float), pred)
    bins = reliability_bins(conf, correct, n_bins)
    ece = expected_calibration_error(conf, correct, n_bins)
    fig = Figure(figsize=(5.5, 6))
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    filled = bins["count"] > 0
    ax.bar(bins["low"][filled], bins["accuracy"][filled], width=width, align="edge", edgecolor="black",
           color="tab:blue", label="accuracy")
    ax.bar(bins["low"][filled], (bins["confidence"] - bins["accuracy"])[filled], bottom=bins["accuracy"][filled],
           width=width, align="edge", fill=False, edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE = {ece:.3f}, {n_bins} bins)")
    ax.legend(loc="upper left", fontsize="small")
    ax_count.bar(bins["low"], bins["count"], width=width, align="edge", color="grey", edgecolor="black")
    ax_count.set_xlim(0, 1)
    ax_count.set_xlabel("confidence of the predicted class")
    ax_count.set_ylabel("images")
    return _finish(fig, path)
