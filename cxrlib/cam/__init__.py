"""Class activation maps: our multi-layer Grad-CAM plus pytorch-grad-cam's methods behind one signature.

>>> with make_cam("gradcam", model, cam_layers("resnet50")) as cam:
...     result = cam(images, targets="predicted")   # result.maps["layer4"]: (N, H, W) in [0, 1]
"""

from __future__ import annotations

from .base import CamMethod, CamResult, resolve_layers, scale_maps
from .gradcam import GradCAM
from .library import LIBRARY_METHODS, LibraryCAM
from .overlay import blank_map, denormalise_gray, overlay
from .targets import ClassLogit, ClassProbability, resolve_targets

METHODS = tuple(LIBRARY_METHODS)


def make_cam(method: str, model, layers, batch_size: int = 16) -> CamMethod:
    """Our one-pass GradCAM for ``"gradcam"``, the pytorch-grad-cam adapter for every other method."""
    if method == "gradcam":
        return GradCAM(model, layers)
    return LibraryCAM(model, layers, method=method, batch_size=batch_size)


__all__ = [
    "CamMethod", "CamResult", "GradCAM", "LibraryCAM", "LIBRARY_METHODS", "METHODS", "make_cam", "resolve_layers",
    "scale_maps", "resolve_targets", "ClassLogit", "ClassProbability", "overlay", "blank_map", "denormalise_gray",
]
