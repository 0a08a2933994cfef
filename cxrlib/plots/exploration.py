"""Figures of the data exploration: original sizes, sample images per class, intensity histograms."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.images import load_images


def size_figure(table: pd.DataFrame) -> Figure:
    """Scatter of original width x height per source."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for source, part in table.groupby("source", sort=True):
        ax.scatter(part["width"], part["height"], s=6, alpha=0.4, label=source)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Original image sizes")
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    return fig


def _sample(table: pd.DataFrame, by: list[str], n: int, seed: int) -> pd.DataFrame:
    shuffled = table.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(by, sort=True).head(n).sort_values(by, kind="stable")


def sample_grid(table: pd.DataFrame, cache_dir: str, resize: int, per_class: int = 6, seed: int = 0,
                column: str = "label") -> Figure:
    """A row of randomly drawn images per class, titled by source."""
    picked = _sample(table, [column], per_class, seed)
    classes = sorted(picked[column].unique())
    fig = Figure(figsize=(1.8 * per_class, 1.9 * len(classes)))
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, cls in enumerate(classes):
        part = picked[picked[column] == cls]
        imgs = load_images(part["path"].tolist(), part["sha256"].tolist(), resize, cache_dir)
        for c, (img, source) in enumerate(zip(imgs, part["source"])):
            axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=255)
            axes[r, c].set_title(source[:18], fontsize=7)
        axes[r, 0].text(-0.08, 0.5, cls, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center", fontsize=9)
    fig.suptitle("Random samples per class")
    fig.tight_layout()
    return fig


def intensity_histograms(table: pd.DataFrame, cache_dir: str, resize: int, per_group: int = 150, seed: int = 0,
                         column: str = "label") -> Figure:
    """Mean intensity histogram per class and source: a source whose exposure differs is easy to recognise."""
    picked = _sample(table, [column, "source"], per_group, seed)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    bins = np.arange(0, 257, 4)
    for (cls, source), part in picked.groupby([column, "source"], sort=True):
        imgs = load_images(part["path"].tolist(), part["sha256"].tolist(), resize, cache_dir)
        hist = np.mean([np.histogram(im, bins=bins, density=True)[0] for im in imgs], axis=0)
        ax.plot(bins[:-1] + 2, hist, label=f"{cls} / {source} (n={len(part)})")
    ax.set_xlabel("pixel intensity")
    ax.set_ylabel("density")
    ax.set_title("Intensity histograms per class and source")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

