"""Softmax probabilities of a model on uint8 images, through the one evaluation transform."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .device import to_device
from .transforms import eval_batch


@torch.inference_mode()
def predict_probs(model: nn.Module, images_uint8, image_size: int, batch_size: int = 32,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Softmax probabilities (N, C) of ``model`` in eval mode on uint8 images (N,S,S), in batches."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images_uint8), batch_size):
            x = to_device(eval_batch(images_uint8[start:start + batch_size], image_size), device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise ValueError("predict_probs: no images given")
    return torch.cat(out).numpy()
