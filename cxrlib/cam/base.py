"""The shape every CAM method shares: named layers in, one normalised map per layer and image out.

A method is a context manager: hooks live only inside ``with``. Calling it outside a ``with`` opens and closes
its hooks around that call. ``__exit__`` always releases and never swallows the exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .targets import TargetSpec

EPS = 1e-7  # the same epsilon pytorch-grad-cam's scale_cam_image uses, so maps agree with it


@dataclass
class CamResult:
    """Maps of one batch: ``maps[layer]`` is float32 (N, H, W) in [0, 1]; ``targets`` the explained class per image."""

    maps: dict[str, np.ndarray]
    targets: np.ndarray
    logits: np.ndarray
    method: str
    layers: list[str] = field(default_factory=list)

    @property
    def probs(self) -> np.ndarray:
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def feature_grid(model: torch.nn.Module, layers: Mapping[str, str] | Sequence[str], x: torch.Tensor) -> dict[str, tuple[int, int]]:
    """``{label: (h, w)}``: the spatial size of each layer's output for input ``x`` (one forward, no gradients)."""
    sizes: dict[str, tuple[int, int]] = {}

    def record(label: str):
        def hook(_module, _inputs, out) -> None:  # returning a value would replace the layer's output
            sizes.setdefault(label, tuple(out.shape[-2:]))
        return hook

    handles = [module.register_forward_hook(record(label)) for label, module in resolve_layers(model, layers).items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def resolve_layers(model: torch.nn.Module, layers: Mapping[str, str] | Sequence[str] | str) -> dict[str, torch.nn.Module]:
    """``{label: module}`` for a mapping label -> dotted module name, or a list of dotted names (label = name)."""
    if isinstance(layers, str):
        layers = [layers]
    pairs = list(layers.items()) if isinstance(layers, Mapping) else [(name, name) for name in layers]
    if not pairs:
        raise ConfigError("cam layers: need at least one layer")
    out: dict[str, torch.nn.Module] = {}
    for label, name in pairs:
        try:
            out[label] = model.get_submodule(name)
        except AttributeError as exc:
            known = [n for n, _ in model.named_children()]
            raise ConfigError(f"cam layers: model has no module {name!r} (top-level modules: {known})") from exc
    return out


def scale_maps(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-max normalise each (h, w) map, upsample bilinearly to ``size`` and normalise again.

    The batched torch equivalent of pytorch-grad-cam's per-image ``scale_cam_image`` (cv2 bilinear) followed by
    its single-layer aggregation step, so maps compare with the library's to float precision.
    """
    cams = _minmax(cams)
    if tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(cams.clamp_min(0))


def _minmax(cams: torch.Tensor) -> torch.Tensor:
    flat = cams.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    cams = cams - lo
    hi = cams.flatten(1).max(dim=1).values[:, None, None]
    return cams / (EPS + hi)


class CamMethod:
    """Base class: ``with Method(model, layers) as cam: result = cam(images, targets="predicted")``.

    ``model`` must be in eval mode (batch-norm statistics would otherwise mix the images of a batch);
    parameters may be frozen. ``layers`` maps display labels to dotted module names (see ``resolve_layers``).
    """

    name = "base"

    def __init__(self, model: torch.nn.Module, layers: Mapping[str, str] | Sequence[str] | str):
        self.model = model
        self.layers = resolve_layers(model, layers)
        self._open = False

    def __enter__(self) -> "CamMethod":
        if self._open:
            raise RuntimeError(f"{type(self).__name__} is already open")
        self._attach()
        self._open = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._open = False
        self._detach()
        return None

    def __call__(
        self,
        images: torch.Tensor,
        targets: TargetSpec = "predicted",
        true=None,
        classes: Sequence[str] | None = None,
    ) -> CamResult:
        """Maps for a normalised batch (N, 3, H, W), one target class per image (see ``resolve_targets``)."""
        return self.many(images, [targets], true, classes)[0]

    def many(self, images: torch.Tensor, targets: Sequence[TargetSpec], true=None,
             classes: Sequence[str] | None = None) -> list[CamResult]:
        """One result per entry of ``targets`` for the same batch (e.g. every class), the same maps as separate
        calls; a method that can (GradCAM) shares the forward pass between them."""
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if self.model.training:
            raise ValueError("model is in training mode; call model.eval() before computing CAMs")
        if self._open:
            return self._compute_many(images, list(targets), true, classes)
        with self:
            return self._compute_many(images, list(targets), true, classes)

    def _attach(self) -> None:
        """Register hooks (subclasses that need them)."""

    def _detach(self) -> None:
        """Remove every hook registered by ``_attach``."""

    def _compute_many(self, images, targets, true, classes) -> list[CamResult]:
        return [self._compute(images, t, true, classes) for t in targets]

    def _compute(self, images, targets, true, classes) -> CamResult:
        raise NotImplementedError

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")
