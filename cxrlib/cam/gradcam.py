"""Multi-layer Grad-CAM: one forward and one backward pass give every named layer's map for a whole batch."""

from __future__ import annotations

import numpy as np
import torch

from .base import CamMethod, CamResult, scale_maps
from .targets import resolve_targets


class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al.) on several layers at once.

    Forward hooks keep each layer's output; the gradients of the summed target logits with respect to those
    outputs come from a single ``torch.autograd.grad`` call. No module backward hooks (they fail on in-place
    ReLU, which torchvision ResNets use), and the model's ``.grad`` fields are never touched, so weight
    gradients are not even computed. Gradients are enabled locally, so frozen models and callers under
    ``torch.no_grad()`` work.
    """

    name = "gradcam"

    def __init__(self, model, layers):
        super().__init__(model, layers)
        self._handles: list = []
        self._outputs: dict[str, list[torch.Tensor]] = {}

    def _attach(self) -> None:
        for label, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._keeper(label)))

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()

    def _keeper(self, label: str):
        def keep(module, inputs, output):
            self._outputs.setdefault(label, []).append(output)

        return keep

    def _compute_many(self, images, target_specs, true, classes) -> list[CamResult]:
        """One forward pass, then one gradient per target spec (the graph kept between them)."""
        self._outputs.clear()
        try:
            with torch.enable_grad():
                x = images.to(self._device()).detach().requires_grad_(True)
                logits = self.model(x)
                acts = [self._single_output(label) for label in self.layers]
                results = []
                for k, targets in enumerate(target_specs):
                    idx = resolve_targets(targets, logits, true, classes)
                    score = logits.gather(1, idx.to(logits.device)[:, None]).sum()
                    grads = torch.autograd.grad(score, acts, allow_unused=True,
                                                retain_graph=k < len(target_specs) - 1)
                    results.append(self._result(images, idx, logits, acts, grads))
            return results
        finally:
            self._outputs.clear()

    def _result(self, images, idx, logits, acts, grads) -> CamResult:
        maps = {}
        size = tuple(images.shape[-2:])
        for label, act, grad in zip(self.layers, acts, grads):
            if grad is None:
                raise ValueError(f"layer {label!r} does not influence the model output")
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * act.detach()).sum(dim=1))
            maps[label] = scale_maps(cam, size).cpu().numpy().astype(np.float32, copy=False)
        return CamResult(maps, idx.numpy(), logits.detach().cpu().numpy(), self.name, list(self.layers))

    def _single_output(self, label: str) -> torch.Tensor:
        outs = self._outputs.get(label, [])
        if len(outs) != 1:
            raise ValueError(
                f"layer {label!r} ran {len(outs)} times in one forward pass; choose a module that runs exactly once"
            )
        out = outs[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ValueError(f"layer {label!r} must output a (N, C, h, w) tensor")
        return out
