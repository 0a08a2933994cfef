"""An ipywidgets browser over CAM examples for readers: filters (true class, correct / misclassified, source),
an example slider, layer, method and target class, overlay opacity and colormap, and the predicted probabilities.

All layers of one example are computed in one pass and cached (``ExampleSet.maps``), so moving between layers
costs nothing. ``render_example`` draws the same view as a static figure (widgets do not survive papermill).
The browser also runs as a standalone page: ``notebooks/browser.ipynb`` served by Voila (``make app``).
"""

from __future__ import annotations

import contextlib
import io as _text_io
from typing import Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure

from ..cam import METHODS
from ..cam.examples import ExampleSet
from . import show_figure
from .cam import show

#: Methods that take seconds per example on a CPU: the browser says so while it computes.
SLOW_METHODS = ("scorecam",)
COLORMAPS = ("jet", "inferno", "viridis", "magma", "gray")
ALL = "all"


def probabilities(ex: ExampleSet, index: int) -> dict[str, float]:
    """The fold model's predicted probability per class for example ``index`` (empty when not recorded)."""
    row = ex.frame.iloc[index]
    return {c: float(row[f"prob_{c}"]) for c in ex.classes if f"prob_{c}" in row.index}


def render_example(ex: ExampleSet, index: int, layer: str, method: str = "gradcam", target: str = "predicted",
                   show_overlay: bool = True, alpha: float = 0.4, colormap: str = "jet") -> Figure:
    """The image beside its ``layer`` map (``method``, ``target``), titled with the truth, the prediction and
    the predicted probabilities. All layers of the example are computed (and cached) together."""
    row = ex.frame.iloc[index]
    cam = ex.maps(method, target, [index])[layer][0]
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    show(left, ex.gray[index], None, str(row["path"]).rsplit("/", 1)[-1][-40:])
    title = f"{method} at {layer}, target {target}"
    if show_overlay:
        show(right, ex.gray[index], cam, title, colormap, alpha)
    else:
        right.imshow(cam, cmap=colormap, vmin=0, vmax=1)
        right.set_title(title, fontsize=8)
        right.set_axis_off()
    mark = "correct" if row["correct"] else "misclassified"
    probs = "  ".join(f"P({c}) = {p:.2f}" for c, p in probabilities(ex, index).items())
    fig.suptitle(f"fold {row['fold']}: true {row['true']}, predicted {row['predicted']} ({mark})\n{probs}",
                 fontsize=9)
    return fig


class CamBrowser:
    """Interactive view of an ExampleSet; ``.widget`` is the ipywidgets box to display."""

    def __init__(self, ex: ExampleSet, methods: Sequence[str] = METHODS, method: str = "gradcam"):
        self.ex = ex
        sources = sorted(ex.frame["source"].astype(str).unique()) if "source" in ex.frame else []
        self.class_filter = widgets.Dropdown(options=[ALL, *ex.classes], value=ALL, description="true class")
        self.outcome_filter = widgets.Dropdown(options=[ALL, "correct", "misclassified"], value=ALL,
                                               description="outcome")
        self.source_filter = widgets.Dropdown(options=[ALL, *sources], value=ALL, description="source")
        self.layer = widgets.Dropdown(options=list(ex.layers), value=list(ex.layers)[-1], description="layer")
        self.method = widgets.Dropdown(options=list(methods), value=method, description="method")
        self.target = widgets.Dropdown(options=["predicted", "true", *ex.classes], value="predicted",
                                       description="target class")
        self.overlay = widgets.ToggleButton(value=True, description="overlay")
        self.opacity = widgets.FloatSlider(value=0.4, min=0.0, max=1.0, step=0.05, description="opacity",
                                           continuous_update=False)
        self.colormap = widgets.Dropdown(options=list(COLORMAPS), value="jet", description="colormap")
        self.slider = widgets.IntSlider(min=0, max=max(0, len(ex) - 1), value=0, description="example",
                                        continuous_update=False)
        self.status = widgets.HTML(value="")
        self.output = widgets.Output()
        self.figure: Figure | None = None
        for w in (self.class_filter, self.outcome_filter, self.source_filter):
            w.observe(self._refilter, names="value")
        for w in (self.layer, self.method, self.target, self.overlay, self.opacity, self.colormap, self.slider):
            w.observe(lambda _change: self.redraw(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.class_filter, self.outcome_filter, self.source_filter]),
            widgets.HBox([self.slider, self.layer, self.method]),
            widgets.HBox([self.target, self.opacity, self.colormap, self.overlay]),
            self.status,
            self.output,
        ])
        self.redraw()

    def indices(self) -> list[int]:
        """Example indices passing the filters (the slider walks over these)."""
        frame = self.ex.frame
        keep = []
        for i in range(len(frame)):
            row = frame.iloc[i]
            if self.class_filter.value != ALL and row["true"] != self.class_filter.value:
                continue
            if self.outcome_filter.value != ALL and bool(row["correct"]) != (self.outcome_filter.value == "correct"):
                continue
            if self.source_filter.value != ALL and str(row.get("source")) != self.source_filter.value:
                continue
            keep.append(i)
        return keep

    def current(self) -> int | None:
        idx = self.indices()
        return idx[min(self.slider.value, len(idx) - 1)] if idx else None

    def _refilter(self, _change) -> None:
        with self.slider.hold_trait_notifications():
            self.slider.max = max(0, len(self.indices()) - 1)
            self.slider.value = 0
        self.redraw()

    def _compute(self, i: int) -> None:
        """Every layer's map of example ``i`` in one pass (cached); slow methods say so, library progress
        bars go nowhere (they would leak into the page)."""
        method = self.method.value
        if method in SLOW_METHODS:
            self.status.value = (f"<i>computing {method} for every layer of this example; this takes a while "
                                 "on a CPU…</i>")
        with contextlib.redirect_stderr(_text_io.StringIO()):
            self.ex.maps(method, self.target.value, [i])
        self.status.value = ""

    def redraw(self) -> None:
        """Recompute (cached) and redraw the current example into the output area."""
        i = self.current()
        if i is not None:
            self._compute(i)
        self.output.clear_output(wait=True)
        with self.output:
            if i is None:
                print("no example matches the filters")
                self.figure = None
                return
            self.figure = render_example(self.ex, i, self.layer.value, self.method.value, self.target.value,
                                         self.overlay.value, self.opacity.value, self.colormap.value)
            show_figure(self.figure)
