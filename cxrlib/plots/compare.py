"""Figure of a sweep: test accuracy (with its interval) against training seconds per image."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure


def plot_accuracy_vs_cost(table: pd.DataFrame, label: str = "run") -> Figure:
    """One panel per task: pooled accuracy with CI bars against training seconds per image, points labelled."""
    tasks = list(dict.fromkeys(table["task"])) or ["(none)"]
    fig = Figure(figsize=(5.5 * len(tasks), 4.2), constrained_layout=True)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        rows = table[table["task"] == task]
        for _, r in rows.iterrows():
            x = r["train_s_per_image"] if pd.notna(r["train_s_per_image"]) else 0.0
            ax.errorbar(x, r["accuracy"], yerr=[[r["accuracy"] - r["low"]], [r["high"] - r["accuracy"]]], fmt="o",
                        capsize=3)
            ax.annotate(str(r[label]), (x, r["accuracy"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("training seconds per image")
        ax.set_ylabel("test accuracy (pooled, 95% CI)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    return fig
