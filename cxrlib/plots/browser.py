"""An ipywidgets browser over CAM examples: slider, class filter, layer, method, target class, overlay toggle.

``render_example`` draws the same view as a static matplotlib figure (widgets do not survive papermill).
"""

from __future__ import annotations

from typing import Sequence

import ipywidgets as widgets
from matplotlib.figure import Figure

from ..cam import METHODS
from .cam import show
from ..cam.examples import ExampleSet


def render_example(ex: ExampleSet, index: int, layer: str, method: str = "gradcam", target: str = "predicted",
                   show_overlay: bool = True, alpha: float = 0.4, colormap: str = "jet") -> Figure:
    """The image beside its ``layer`` map (``method``, ``target``) over it, or the raw map when not overlaid."""
    row = ex.frame.iloc[index]
    cam = ex.maps(method, target, [index], [layer])[layer][0]
    fig = Figure(figsize=(6.4, 3.4))
    left, right = fig.subplots(1, 2)
    show(left, ex.gray[index], None, f"{row['path']}".rsplit("/", 1)[-1][-40:])
    if show_overlay:
        show(right, ex.gray[index], cam, f"{method} {layer}, target {target}", colormap, alpha)
    else:
        right.imshow(cam, cmap=colormap, vmin=0, vmax=1)
        right.set_title(f"{method} {layer}, target {target}", fontsize=8)
        right.set_axis_off()
    mark = "correct" if row["correct"] else "misclassified"
    fig.suptitle(f"fold {row['fold']}: true {row['true']}, predicted {row['predicted']} ({mark})", fontsize=9)
    fig.tight_layout()
    return fig


class CamBrowser:
    """Interactive view of an ExampleSet; ``.widget`` is the ipywidgets box to display."""

    def __init__(self, ex: ExampleSet, methods: Sequence[str] = METHODS, method: str = "gradcam"):
        self.ex = ex
        self.class_filter = widgets.Dropdown(options=["all", *ex.classes], value="all", description="true class")
        self.layer = widgets.Dropdown(options=list(ex.layers), value=list(ex.layers)[-1], description="layer")
        self.method = widgets.Dropdown(options=list(methods), value=method, description="method")
        self.target = widgets.Dropdown(options=["predicted", "true", *ex.classes], value="predicted",
                                       description="target")
        self.overlay = widgets.ToggleButton(value=True, description="overlay")
        self.slider = widgets.IntSlider(min=0, max=max(0, len(ex) - 1), value=0, description="example")
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.class_filter.observe(self._refilter, names="value")
        for w in (self.layer, self.method, self.target, self.overlay, self.slider):
            w.observe(lambda _change: self.redraw(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.slider, self.class_filter]),
            widgets.HBox([self.layer, self.method, self.target, self.overlay]),
            self.output,
        ])
        self.redraw()

    def indices(self) -> list[int]:
        """Example indices passing the class filter (the slider walks over these)."""
        if self.class_filter.value == "all":
            return list(range(len(self.ex)))
        return [i for i, t in enumerate(self.ex.frame["true"]) if t == self.class_filter.value]

    def current(self) -> int | None:
        idx = self.indices()
        return idx[min(self.slider.value, len(idx) - 1)] if idx else None

    def _refilter(self, _change) -> None:
        self.slider.max = max(0, len(self.indices()) - 1)
        self.slider.value = 0
        self.redraw()

    def redraw(self) -> None:
        """Recompute (cached) and redraw the current example into the output area."""
        i = self.current()
        self.output.clear_output(wait=True)
        with self.output:
            if i is None:
                print(f"no examples of class {self.class_filter.value}")
                self.figure = None
                return
            self.figure = render_example(self.ex, i, self.layer.value, self.method.value, self.target.value,
                                         self.overlay.value)
            from IPython.display import display

            display(self.figure)
