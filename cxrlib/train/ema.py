"""An exponential moving average of the weights (``train.ema_decay``), through torch's ``AveragedModel``.

Validation, early stopping, ``model.pt`` and the predictions all use the average; the optimiser keeps stepping
the raw weights. Buffers (BatchNorm statistics) are averaged too, so the average is a model in its own right.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..models import unwrap


class WeightAverage:
    """``decay`` per optimiser step: the average's horizon is about ``1 / (1 - decay)`` steps."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged network (same class and state-dict keys as the trained one)."""
        return self.averaged.module

    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights in (the first call copies them)."""
        self.averaged.update_parameters(unwrap(model))

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


def weight_average(model: nn.Module, decay: float) -> Optional[WeightAverage]:
    """A WeightAverage of ``model``, or None when ``decay`` is 0 (off)."""
    return WeightAverage(model, decay) if decay else None
