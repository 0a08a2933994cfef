"""Softmax probabilities of a model on uint8 images, through the one evaluation transform."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .device import to_device, use_channels_last
from .transforms import eval_batch


def predict_probs(model: nn.Module, images_uint8, image_size: int, batch_size: int = 32,
                  device: str | torch.device = "cpu", tta_flip: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C) of ``model`` in eval mode on uint8 images (N,S,S), in batches.

    ``tta_flip``: the mean of the probabilities of each image and its horizontal mirror (``evaluate.tta_flip``)."""
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
        raise ValueError("predict_probs: no images given")
    return torch.cat(out).numpy()


def _batches(model, images_uint8, image_size, batch_size, device, channels_last, tta_flip) -> list[torch.Tensor]:
    out = []
    for start in range(0, len(images_uint8), batch_size):
        x = to_device(eval_batch(images_uint8[start:start + batch_size], image_size), device, channels_last)
        probs = torch.softmax(model(x).float(), dim=1)
        if tta_flip:
            probs = (probs + torch.softmax(model(torch.flip(x, dims=[3])).float(), dim=1)) / 2
        out.append(probs.cpu())
    return out
