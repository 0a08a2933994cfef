"""Grad-CAM figures: one image across layers (Fig. 5), a grid of final-layer maps (Fig. 6), correct vs
misclassified, and the overlay drawn on one axis."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..cam.examples import ExampleSet
from ..cam.overlay import blank_map, overlay


def show(ax, gray: np.ndarray, cam: np.ndarray | None, title: str = "", colormap: str = "jet", alpha: float = 0.4):
    """Draw ``overlay`` (or the plain image when ``cam`` is None) on a matplotlib axis; blank maps are labelled."""
    if cam is None:
        ax.imshow(gray, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(overlay(gray, cam, colormap, alpha))
        if blank_map(cam):
            ax.text(0.5, 0.5, "no map", transform=ax.transAxes, ha="center", va="center", color="white")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


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

