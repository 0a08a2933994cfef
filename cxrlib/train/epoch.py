"""One training epoch and one validation pass: the full model, or the head on cached backbone features."""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..config import TrainConfig
from ..device import to_device, use_channels_last
from ..models import head_name, set_train_mode, unwrap
from ..transforms import Augment, as_uint8_batch, check_batch_stats, eval_batch
from .distributed import Dist
from .ema import WeightAverage
from .features import FeatureCache, build_feature_cache
from .fold_data import FoldData
from .sampling import AugmentedBatches, epoch_indices, split_batches, worker_init
from .speed import CompiledOrEager, augment_on_device, resolve_precision
from .seeding import generator


def cache_ignored_augmentations(t: TrainConfig) -> list[str]:
    """The configured augmentations the frozen-feature cache cannot replay (it stores centre-crop features of
    each image and its flip): random crops, rotation, brightness/contrast jitter, progressive resizing."""
    ignored = ["random_crop"] if t.random_crop else []
    ignored += [f"rotation={t.rotation:g}"] if t.rotation else []
    ignored += [f"brightness={t.brightness:g}"] if t.brightness else []
    ignored += [f"progressive_from={t.progressive_from}"] if t.progressive_from else []
    return ignored


def epoch_image_size(t: TrainConfig, epoch: int) -> int:
    """Training crop size of ``epoch`` (1-based): ``train.image_size``, or with ``train.progressive_from`` a
    linear ramp from that size at the first epoch to image_size at the last (multiples of 8 below the top)."""
    if not t.progressive_from or t.progressive_from >= t.image_size or t.epochs == 1:
        return t.image_size
    share = (min(epoch, t.epochs) - 1) / (t.epochs - 1)
    size = t.progressive_from + share * (t.image_size - t.progressive_from)
    return t.image_size if epoch >= t.epochs else max(t.progressive_from, int(size) // 8 * 8)


def downscaled(x: torch.Tensor, size: int) -> torch.Tensor:
    """A normalised batch resized to ``size`` x ``size`` (antialiased bilinear): the same field of view, fewer
    pixels."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return nnf.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class EpochRunner:
    """Trains one epoch and runs one validation pass of ``model`` on a fold's images (AMP on CUDA)."""

    def __init__(self, model: nn.Module, data: FoldData, t: TrainConfig, device: torch.device, d: Dist,
                 use_cache: bool, echo: Callable[[str], None], ema: Optional[WeightAverage] = None):
        self.model, self.t, self.device, self.d, self.ema = model, t, device, d, ema
        self.precision = resolve_precision(t.precision, device)
        self.amp = self.precision.dtype is not None
        self.channels_last = use_channels_last(device, t.image_size, t.memory_format)
        self.on_device = augment_on_device(t.augment_on, device)
        self.echo = echo
        self.train_images, self.train_targets = data.part("train")
        self.val_images, self.val_targets = data.part("val")
        by_source = t.sampler in ("source_balanced", "balanced_by_source")
        self.train_sources = data.sources[data.split == "train"] if by_source else None
        self.source_size = self.train_images.shape[-1]
        self.augment = Augment.from_config(t)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.scaled)
        self.checked_stats = False
        self.cache: Optional[FeatureCache] = None
        self.val_cache: Optional[FeatureCache] = None
        self.cache_seconds = 0.0
        self.cache_ignored: list[str] = []
        if use_cache:
            start = time.perf_counter()
            self.cache_ignored = cache_ignored_augmentations(t)
            if self.cache_ignored:
                echo(f"feature cache: centre crop + flip only; not replayed: {', '.join(self.cache_ignored)}")
            bs = max(64, t.batch_size)
            self.cache = build_feature_cache(model, self.train_images, t.image_size, bs, device, t.hflip, self.amp)
            self.val_cache = build_feature_cache(model, self.val_images, t.image_size, bs, device, False, self.amp)
            self.head = unwrap(model).get_submodule(head_of(model))
            self.cache_seconds = time.perf_counter() - start
            echo(f"feature cache: {len(self.train_images)} train (+ flips) and {len(self.val_images)} val "
                 f"images in {self.cache_seconds:.1f}s")
        self.train_x = as_uint8_batch(self.train_images)
        # the loss's targets (fine labels with train.fine_labels); the sampler balances self.train_targets
        self.train_y = torch.as_tensor(data.training_targets[data.split == "train"])
        if self.on_device and self.cache is None:  # the uint8 images stay resident; batches are cut there
            self.train_x, self.train_y = self.train_x.to(device), self.train_y.to(device)

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        return to_device(x, self.device, self.channels_last)

    def _step(self, net: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        try:
            return self._step_once(net, opt, x, y)
        except Exception:
            if not isinstance(net, CompiledOrEager) or net.failed or net.succeeded:
                raise
            net.failed = True  # compiling the backward pass failed at the first step
            self.echo("torch.compile failed at the first step; training eagerly")
            return self._step_once(net, opt, x, y)

    def _step_once(self, net: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        with torch.autocast(self.device.type, dtype=self.precision.dtype, enabled=self.amp):
            logits = net(x)
            loss = nnf.cross_entropy(logits.float(), y, label_smoothing=self.t.label_smoothing)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        if isinstance(net, CompiledOrEager):
            net.succeeded = True
        return float(loss.detach()) * len(y), int((logits.argmax(1) == y).sum())

    def train_epoch(self, net: nn.Module, opt, epoch: int) -> tuple[float, float, int]:
        """Returns (loss sum, correct, images) over this rank's batches."""
        t, d = self.t, self.d
        order = epoch_indices(self.train_targets, t.seed, epoch, t.sampler, d.rank, d.world, self.train_sources)
        batches = split_batches(order, t.batch_size)
        loss_sum, correct, seen = 0.0, 0, 0
        if self.cache is not None:
            self.head.train()
            for b, idx in enumerate(batches):
                flip = self.augment.draw(len(idx), self.source_size, generator(t.seed, "augment", epoch, d.rank, b)).flip
                x = self._to(self.cache.select(idx, flip))
                ls, c = self._step(self.head, opt, x, self._to(self.train_y[idx]))
                loss_sum, correct, seen = loss_sum + ls, correct + c, seen + len(idx)
            return loss_sum, correct, seen
        set_train_mode(unwrap(net))
        size = epoch_image_size(t, epoch)
        batched = AugmentedBatches(self.train_x, self.train_y, batches, self.augment, t.seed, epoch, d.rank)
        # on the device, batches are cut and augmented where the images live; else DataLoader workers do it
        loader = (batched[b] for b in range(len(batched))) if self.on_device else torch.utils.data.DataLoader(
            batched, batch_size=None, shuffle=False, num_workers=t.num_workers, worker_init_fn=worker_init,
            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            if not self.checked_stats:
                check_batch_stats(x)
                self.checked_stats = True
            ls, c = self._step(net, opt, self._to(downscaled(x, size)), self._to(y))
            loss_sum, correct, seen = loss_sum + ls, correct + c, seen + len(y)
        return loss_sum, correct, seen

    @torch.inference_mode()
    def validate(self, model: Optional[nn.Module] = None) -> tuple[float, float, int]:
        """(loss sum, correct, images) of ``model`` (default: the trained one) over this rank's share of the
        validation images."""
        d, model = self.d, unwrap(model if model is not None else self.model)
        rows = np.arange(d.rank, len(self.val_targets), d.world)
        y_all = torch.as_tensor(self.val_targets)
        loss_sum, correct = 0.0, 0
        bs = max(32, self.t.batch_size)
        model.eval()
        for start in range(0, len(rows), bs):
            idx = torch.as_tensor(rows[start:start + bs])
            if self.val_cache is not None:
                x = self.val_cache.plain[idx]
                net = model.get_submodule(head_of(model))
            else:
                x = eval_batch(self.val_images[idx.numpy()], self.t.image_size)
                net = model
            y = self._to(y_all[idx])
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = net(self._to(x)).float()
            loss_sum += float(nnf.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum, correct, len(rows)


def head_of(model: nn.Module) -> str:
    """Dotted name of the classification head of a (possibly DDP-wrapped) model."""
    return head_name(unwrap(model).cxr_arch)
