"""Learning curves of one fold (loss and accuracy per epoch, best epoch marked)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def plot_history(history: pd.DataFrame, best_epoch: int | None = None, title: str | None = None):
    """Two panels (loss, accuracy) of train and validation curves from a history.csv frame; returns the Figure."""
    missing = {"epoch", "train_loss", "val_loss", "train_acc", "val_acc"} - set(history.columns)
    if missing:
        raise ValueError(f"history lacks columns {sorted(missing)}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, metric, label in zip(axes, ("loss", "acc"), ("cross-entropy loss", "accuracy")):
        for part, style in (("train", "-o"), ("val", "-s")):
            ax.plot(history["epoch"], history[f"{part}_{metric}"], style, ms=3, label=part)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig
