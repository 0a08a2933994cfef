"""Which images a training epoch sees, in which batches, and their augmentation (all seeded per epoch/batch)."""

from __future__ import annotations

import numpy as np
import torch

from ..transforms import Augment
from .seeding import generator

def sampling_weights(targets: np.ndarray, sampler: str, sources: np.ndarray | None = None) -> np.ndarray:
    """Each image's draw weight: 1/count(class) (``weighted``) or 1/count(class, source) (``source_balanced``:
    every (class, source) cell equally likely, so no source dominates a class)."""
    if sampler == "source_balanced":
        if sources is None:
            raise ValueError("train.sampler source_balanced needs the images' sources")
        keys = [f"{t}\x00{s}" for t, s in zip(np.asarray(targets).tolist(), np.asarray(sources).tolist())]
        _, cell = np.unique(keys, return_inverse=True)
        return 1.0 / np.bincount(cell)[cell]
    return 1.0 / np.bincount(targets)[targets]


def balanced_order(targets: np.ndarray, g: torch.Generator, strata: np.ndarray | None = None) -> torch.Tensor:
    """``len(targets)`` draws, each class equally often (the remainder to random classes), each class's images
    without replacement: a random subset of a large class, a small class's images cycled in fresh shuffles.

    ``strata`` (one key per image, e.g. its source): a class's draws are shared equally among its strata the same
    way, each stratum's images without replacement."""
    targets = np.asarray(targets)
    classes = np.unique(targets)
    drawn = []
    for c, q in zip(classes, _quotas(len(targets), len(classes), g).tolist()):
        members = np.flatnonzero(targets == c)
        if strata is None:
            drawn.append(_without_replacement(members, q, g))
            continue
        keys = np.asarray(strata)[members]
        cells = np.unique(keys)
        for cell, cq in zip(cells, _quotas(q, len(cells), g).tolist()):
            drawn.append(_without_replacement(members[keys == cell], cq, g))
    order = torch.cat(drawn)
    return order[torch.randperm(len(order), generator=g)]


def _quotas(total: int, parts: int, g: torch.Generator) -> np.ndarray:
    """``total`` split into ``parts`` equal shares, the remainder one each to random parts."""
    quota = np.full(parts, total // parts)
    quota[torch.randperm(parts, generator=g)[:total % parts].numpy()] += 1
    return quota


def _without_replacement(members: np.ndarray, q: int, g: torch.Generator) -> torch.Tensor:
    """``q`` of ``members``: fresh shuffles of all of them, concatenated and cut at ``q``."""
    members = torch.as_tensor(members, dtype=torch.int64)
    if q == 0:  # more strata than draws in a class: some strata wait for a later epoch
        return members[:0]
    cycles = -(-q // len(members))
    return torch.cat([members[torch.randperm(len(members), generator=g)] for _ in range(cycles)])[:q]


def epoch_indices(targets: np.ndarray, seed: int, epoch: int, sampler: str = "weighted",
                  rank: int = 0, world: int = 1, sources: np.ndarray | None = None) -> torch.Tensor:
    """Training order of one epoch; this rank's slice of it.

    ``weighted``: len(targets) draws with replacement, each class equally likely (weights 1/class count);
    ``source_balanced``: the same with weights 1/count(class, source) (``sources`` given, one per target);
    ``balanced``: each class equally often without replacement within a class (``balanced_order``; every image
    of a balanced set each epoch, where ``weighted`` leaves out about a third); ``balanced_by_source``: the same,
    and within a class each source equally often (``sources`` given); ``none``: a permutation.
    Every rank draws the same order (shared seed) and takes every world-th index, after wrapping the order to a
    multiple of ``world`` so ranks run the same number of steps.
    """
    n = len(targets)
    g = generator(seed, "sampler", epoch)
    if sampler in ("weighted", "source_balanced"):
        weights = torch.as_tensor(sampling_weights(targets, sampler, sources), dtype=torch.float64)
        order = torch.multinomial(weights, n, replacement=True, generator=g)
    elif sampler == "balanced":
        order = balanced_order(targets, g)
    elif sampler == "balanced_by_source":
        if sources is None:
            raise ValueError("train.sampler balanced_by_source needs the images' sources")
        order = balanced_order(targets, g, sources)
    else:
        order = torch.randperm(n, generator=g)
    if world > 1:
        pad = (-n) % world
        order = torch.cat([order, order[:pad]])[rank::world]
    return order


def split_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches; a trailing batch of one joins the previous (BatchNorm needs two samples)."""
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        tail = batches.pop()
        batches[-1] = torch.cat([batches[-1], tail])
    return batches


class AugmentedBatches(torch.utils.data.Dataset):
    """Item b = augmented batch b of one epoch; its augmentation generator is seeded from (seed, epoch, rank, b)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batches: list[torch.Tensor],
                 augment: Augment, seed: int, epoch: int, rank: int):
        self.images, self.targets, self.batches = images, targets, batches
        self.augment, self.seed, self.epoch, self.rank = augment, seed, epoch, rank

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batches[b]
        g = generator(self.seed, "augment", self.epoch, self.rank, b)
        return self.augment(self.images[idx], g), self.targets[idx]


def worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only augment; the main process owns the cores for the model

