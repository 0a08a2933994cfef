"""Which class each image's map explains: ``"predicted"``, ``"true"``, a class (index or name), or one per image."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

TargetSpec = Union[str, int, Sequence[Union[int, str]], np.ndarray, torch.Tensor]


def resolve_targets(
    spec: TargetSpec,
    logits: torch.Tensor,
    true: Sequence[Union[int, str]] | np.ndarray | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
) -> torch.Tensor:
    """Class index per image (LongTensor (N,)) for ``spec`` given the model's ``logits`` (N, C).

    ``"predicted"`` takes the arg-max, ``"true"`` reads ``true``; an int or class name applies to every image;
    a sequence gives one target per image. Class names need ``classes``.
    """
    n, n_classes = logits.shape
    if isinstance(spec, str) and spec == "predicted":
        return logits.detach().argmax(dim=1).cpu()
    if isinstance(spec, str) and spec == "true":
        if true is None:
            raise ValueError("targets='true' needs the true classes (true=...)")
        return _indices(true, n, n_classes, classes, what="true")
    if isinstance(spec, (str, int, np.integer)):
        return _indices([spec] * n, n, n_classes, classes, what="targets")
    return _indices(spec, n, n_classes, classes, what="targets")


def _indices(values, n: int, n_classes: int, classes: Sequence[str] | None, what: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    values = list(np.asarray(values, dtype=object).ravel()) if not isinstance(values, list) else values
    if len(values) != n:
        raise ValueError(f"{what}: expected one class per image ({n}), got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, str):
            if classes is None or v not in classes:
                raise ValueError(f"{what}: unknown class {v!r} (known: {list(classes or [])})")
            v = list(classes).index(v)
        v = int(v)
        if not 0 <= v < n_classes:
            raise ValueError(f"{what}: class index {v} outside 0..{n_classes - 1}")
        out.append(v)
    return torch.as_tensor(out, dtype=torch.long)


class ClassLogit:
    """Target callable: the logit of one class (the shape pytorch-grad-cam's targets have)."""

    def __init__(self, index: int):
        self.index = int(index)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.index]


class ClassProbability(ClassLogit):
    """Target callable: the softmax probability of one class (ROAD measures confidence changes)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output, dim=-1)[..., self.index]
