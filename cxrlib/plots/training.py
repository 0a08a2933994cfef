"""Training figures: learning curves of one fold, and the loss of every fold on one axes (Figure 2)."""

from __future__ import annotations

import os
from typing import Mapping

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from . import save_figure


def plot_history(history: pd.DataFrame, best_epoch: int | None = None, title: str | None = None) -> Figure:
    """Two panels (loss, accuracy) of train and validation curves from a history.csv frame; returns the Figure."""
    missing = {"epoch", "train_loss", "val_loss", "train_acc", "val_acc"} - set(history.columns)
    if missing:
        raise ValueError(f"history lacks columns {sorted(missing)}")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, label in zip(axes, ("loss", "acc"), ("cross-entropy loss", "accuracy")):
        for part, style in (("train", "-o"), ("val", "-s")):
            ax.plot(history["epoch"], history[f"{part}_{metric}"], style, ms=3, label=part)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    sizes = history["image_size"].dropna().astype(int) if "image_size" in history.columns else pd.Series([], dtype=int)
    if sizes.nunique() > 1:  # progressive resizing: say so, the early validation (full size) lags because of it
        note = (f"training crops {sizes.iloc[0]} \u2192 {sizes.iloc[-1]} px "
                "(progressive resizing; validation at full size)")
        title = f"{title}: {note}" if title else note
    if title:
        fig.suptitle(title)
    return fig


def plot_loss_curves(histories: Mapping[int, pd.DataFrame], path: str | os.PathLike | None = None) -> Figure:
    """Training (solid) and validation (dashed) loss per epoch, one colour per fold, on one axes (Figure 2)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colours = sns.color_palette("tab10", max(len(histories), 1))
    for colour, (fold, hist) in zip(colours, sorted(histories.items())):
        ax.plot(hist["epoch"], hist["train_loss"], color=colour, label=f"fold {fold} train")
        ax.plot(hist["epoch"], hist["val_loss"], color=colour, linestyle="--", label=f"fold {fold} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("Training and validation loss per fold")
    ax.legend(fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    if path is not None:
        save_figure(fig, path)
    return fig
