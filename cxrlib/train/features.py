"""Frozen-backbone fast path: backbone features computed once (each image and its mirror), head trained on them.

With ``model.freeze=backbone`` the backbone is a fixed function in eval mode, so its pooled features for the
centre crop and the flipped centre crop are all the augmentation a head can see. Training the head on those
cached features gives the same losses and weights as running the backbone every step on the same batches
and flips (random crop, rotation and jitter cannot be cached and are not applied on this path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from ..models import split_backbone
from ..transforms import eval_batch


@dataclass
class FeatureCache:
    """Pooled backbone features, row-aligned with the images they came from."""

    plain: torch.Tensor  # (N, D) centre crop
    flipped: torch.Tensor | None  # (N, D) horizontally flipped centre crop, or None

    def select(self, idx: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
        """Features of rows ``idx``; the flipped version where ``flip`` is True."""
        x = self.plain[idx]
        if flip is None or self.flipped is None:
            return x
        return torch.where(flip.to(x.device)[:, None], self.flipped[idx], x)


@torch.inference_mode()
def backbone_features(backbone: nn.Module, images_uint8, image_size: int, batch_size: int = 64,
                      device: str | torch.device = "cpu", flip: bool = True, amp: bool = False) -> FeatureCache:
    """Run ``backbone`` (eval mode, head = identity) over centre-cropped images, and their mirrors if ``flip``."""
    device = torch.device(device)
    backbone.eval()
    plain, flipped = [], []
    for start in range(0, len(images_uint8), batch_size):
        x = eval_batch(images_uint8[start:start + batch_size], image_size).to(device)
        views = [x, F.horizontal_flip(x)] if flip else [x]
        for view, out in zip(views, (plain, flipped)):
            if device.type == "cuda":
                view = view.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp):
                out.append(backbone(view).float())
    return FeatureCache(torch.cat(plain), torch.cat(flipped) if flip else None)


def build_feature_cache(model: nn.Module, images_uint8, image_size: int, batch_size: int = 64,
                        device: str | torch.device = "cpu", flip: bool = True, amp: bool = False) -> FeatureCache:
    """Features of ``model``'s frozen backbone for ``images_uint8`` (the model itself is left unchanged)."""
    backbone, _ = split_backbone(model)
    return backbone_features(backbone.to(device), images_uint8, image_size, batch_size, device, flip, amp)
