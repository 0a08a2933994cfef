"""pytorch-grad-cam behind our call signature: one library object per layer, hooks released after each call."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ..errors import ConfigError
from .base import CamMethod, CamResult
from .targets import ClassLogit, resolve_targets

# cfg.cam.method -> pytorch-grad-cam class name (imported on first use: the library takes seconds to import)
LIBRARY_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
}


def library_class(method: str):
    """The pytorch-grad-cam class behind ``method``."""
    if method not in LIBRARY_METHODS:
        raise ConfigError(f"cam.method = {method!r} is not one of {list(LIBRARY_METHODS)}")
    return getattr(importlib.import_module("pytorch_grad_cam"), LIBRARY_METHODS[method])


class LibraryCAM(CamMethod):
    """Any of ``LIBRARY_METHODS`` run by pytorch-grad-cam, one layer at a time (the library averages layers).

    The library's own context manager is not used: its ``__exit__`` swallows IndexError. Its hooks are
    released in a ``finally`` instead. ``batch_size`` bounds ScoreCAM's masked forward passes.
    """

    def __init__(self, model, layers, method: str = "gradcam", batch_size: int = 16):
        self._cls = library_class(method)
        super().__init__(model, layers)
        self.name = method
        self.batch_size = batch_size

    def _compute(self, images, targets, true, classes) -> CamResult:
        x = images.to(self._device())
        with torch.no_grad():
            logits = self.model(x)
        idx = resolve_targets(targets, logits, true, classes)
        callables = [ClassLogit(i) for i in idx.tolist()]
        maps = {}
        for label, module in self.layers.items():
            cam = self._cls(model=self.model, target_layers=[module])
            cam.batch_size = self.batch_size
            try:
                with torch.enable_grad():
                    # A frozen model has no parameter needing a gradient; the input provides the graph.
                    maps[label] = np.asarray(cam(x.detach().clone().requires_grad_(True), callables), dtype=np.float32)
            finally:
                cam.activations_and_grads.release()
                cam.outputs = None
        return CamResult(maps, idx.numpy(), logits.cpu().numpy(), self.name, list(self.layers))
