"""Figures of a prediction on new images: the probability bar chart, the CAM overlay with the probabilities
in its caption, and one image across the CAM layers."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .cam import show


def caption(classes: Sequence[str], probs: Sequence[float]) -> str:
    """``covid19 0.91 · normal 0.06 · …``: classes by decreasing probability."""
    order = np.argsort(-np.asarray(probs))
    return " · ".join(f"{classes[i]} {float(probs[i]):.2f}" for i in order)


def figure_probs(classes: Sequence[str], probs: Sequence[float], fold_probs: np.ndarray | None = None,
                 title: str = "") -> Figure:
    """Horizontal bars of the ensemble's probabilities; fold models' probabilities as dots when given (K, C)."""
    fig = Figure(figsize=(5, 0.5 + 0.45 * len(classes)))
    ax = fig.subplots()
    y = np.arange(len(classes))
    ax.barh(y, probs, color="tab:blue", label="ensemble (mean)")
    if fold_probs is not None and len(fold_probs) > 1:
        for row in np.asarray(fold_probs):
            ax.plot(row, y, "k.", markersize=5)
        ax.plot([], [], "k.", label="fold models")
    ax.set_yticks(y, list(classes))
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure_overlay(gray: np.ndarray, cam: np.ndarray, classes: Sequence[str], probs: Sequence[float],
                   title: str = "") -> Figure:
    """One image with the map of its predicted class; the probabilities in the caption."""
    fig = Figure(figsize=(4, 4.4))
    ax = fig.subplots()
    show(ax, gray, cam, title)
    fig.text(0.5, 0.02, caption(classes, probs), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def figure_layers(gray: np.ndarray, maps: Mapping[str, np.ndarray], classes: Sequence[str], probs: Sequence[float],
                  title: str = "") -> Figure:
    """The image and its map at every layer (shallow -> deep); the probabilities in the caption."""
    fig = Figure(figsize=(2.2 * (len(maps) + 1), 2.9))
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    show(axes[0], gray, None, "image")
    for ax, (layer, m) in zip(axes[1:], maps.items()):
        show(ax, gray, m, layer)
    fig.suptitle(title, fontsize=9)
    fig.text(0.5, 0.02, caption(classes, probs), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
