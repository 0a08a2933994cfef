"""Notebook 06's view of one image: probability bars and the CAM across the five layers, and an upload widget."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CxrError
from .ensemble import FoldEnsemble
from .inputs import load_image
from .scoring import ensemble_cams, predict_images, prob_columns

ACCEPT = ".png,.jpg,.jpeg,.dcm"


def show_prediction(ens: FoldEnsemble, path: str | os.PathLike, method: str = "gradcam", name: str | None = None):
    """Display (as PNG outputs) the probabilities of ``path`` and its map at every layer for the predicted class
    (the mean of the fold models' maps, one pass per model); warnings are printed. Returns the prediction row."""
    from ..evaluate.external import model_column
    from ..plots import show_figure
    from ..plots.predict import figure_layers, figure_probs

    image = load_image(path, ens.resize, **ens.image_options)
    row = predict_images(ens, [image]).iloc[0]
    probs = row[prob_columns(ens.classes)].to_numpy(dtype=float)
    fold_probs = np.array([[row[model_column(k, c)] for c in ens.classes] for k in ens.folds])
    title = f"{name or Path(path).name}: {row['predicted']} (folds {ens.folds}, disagreement {row['disagreement']:.3f})"
    if row["warning"]:
        print(f"warning: {row['warning']}")
    show_figure(figure_probs(ens.classes, probs, fold_probs, title))
    crops, maps = ensemble_cams(ens, image.resized[None], [int(probs.argmax())], None, method)
    show_figure(figure_layers(crops[0], {k: m[0] for k, m in maps.items()}, ens.classes, probs,
                              f"{method} for {row['predicted']}, mean of the fold models' maps"))
    return row


class PredictUpload:
    """A FileUpload (PNG/JPEG/DICOM) whose uploads are shown by ``show_prediction`` in an Output area."""

    def __init__(self, ens: FoldEnsemble, method: str = "gradcam"):
        import ipywidgets as w

        self.ens, self.method = ens, method
        self.upload = w.FileUpload(accept=ACCEPT, multiple=False, description="X-ray")
        self.output = w.Output()
        self.upload.observe(self._on_upload, names="value")
        self.widget = w.VBox([self.upload, self.output])

    def _on_upload(self, change) -> None:
        for item in change["new"] or ():
            self.show_bytes(item["name"], bytes(item["content"]))

    def show_bytes(self, name: str, content: bytes) -> None:
        """Show one uploaded file (written to a temporary file so the data layer decodes it like any other)."""
        self.output.clear_output()
        with self.output, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            path.write_bytes(content)
            try:
                show_prediction(self.ens, path, self.method, name=name)
            except CxrError as exc:
                print(f"error: {exc}")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
