"""Every figure of the study, by pipeline stage: ``exploration``, ``training``, ``evaluation``, ``cam`` and the
ipywidgets ``browser``. Figures are ``matplotlib.figure.Figure`` objects; :func:`save_figure` writes one as
PNG atomically and :func:`show_figure` displays one as a PNG output in a notebook."""

from __future__ import annotations

import io as _bytes_io
import os
from pathlib import Path

from matplotlib.figure import Figure

from .. import io

DPI = 120


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)


def figure_png(fig: Figure) -> bytes:
    """``fig`` rendered as PNG bytes."""
    buffer = _bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def show_figure(fig: Figure, path: str | os.PathLike | None = None) -> Figure:
    """Display ``fig`` as a PNG output (notebooks, their HTML export, widget Output areas); save it too with
    ``path``. pyplot figures are closed afterwards so they are not drawn twice."""
    from IPython.display import Image, display

    if path is not None:
        save_figure(fig, path)
    display(Image(data=figure_png(fig), format="png"))
    import matplotlib.pyplot as plt

    if fig in map(plt.figure, plt.get_fignums()):
        plt.close(fig)
    return fig
