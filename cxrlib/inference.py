"""Logits and softmax probabilities of a model on uint8 images, through the one evaluation transform."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .device import to_device, use_channels_last
from .transforms import eval_batch


def predict_probs(model: nn.Module, images_uint8, image_size: int, batch_size: int = 32,
                  device: str | torch.device = "cpu", tta_flip: bool = False, temperature: float = 1.0) -> np.ndarray:
    """Softmax probabilities (N, C) of ``model`` in eval mode on uint8 images (N,S,S), in batches.

    ``tta_flip``: the mean of the probabilities of each image and its horizontal mirror (``evaluate.tta_flip``);
    ``temperature``: each view's logits are divided by it before the softmax (``evaluate.calibration``)."""
    return probs_from_logits(predict_logits(model, images_uint8, image_size, batch_size, device, tta_flip),
                             temperature)


def predict_logits(model: nn.Module, images_uint8, image_size: int, batch_size: int = 32,
                   device: str | torch.device = "cpu", tta_flip: bool = False) -> np.ndarray:
    """Logits (N, V, C) of ``model`` in eval mode: V = 1 view, or 2 with ``tta_flip`` (the image, its mirror)."""
    device = torch.device(device)
    channels_last = use_channels_last(device, image_size)
    if channels_last:  # outside inference mode: its tensors could not take part in a later backward (Grad-CAM)
        with torch.no_grad():
            model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            out = _batches(model, images_uint8, image_size, batch_size, device, channels_last, tta_flip)
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("predict_logits: no images given")
    return torch.cat(out).numpy()


def probs_from_logits(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C): the mean over views of softmax(logits / temperature) of (N, V, C) logits."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = torch.as_tensor(logits, dtype=torch.float32) / float(temperature)
    return torch.softmax(z, dim=2).mean(dim=1).numpy()


def _batches(model, images_uint8, image_size, batch_size, device, channels_last, tta_flip) -> list[torch.Tensor]:
    out = []
    for start in range(0, len(images_uint8), batch_size):
        x = to_device(eval_batch(images_uint8[start:start + batch_size], image_size), device, channels_last)
        views = [model(x).float()]
        if tta_flip:
            views.append(model(torch.flip(x, dims=[3])).float())
        out.append(torch.stack(views, dim=1).cpu())
    return out
