"""Saving and resuming a fold's training: ``model.pt`` (best epoch), ``history.csv`` and the last checkpoint.

``history.csv`` is written after every epoch. The last checkpoint (weights, optimizer, scheduler, AMP scaler,
RNG and early-stopping state) is written once ``train.checkpoint_every_s`` seconds have passed since the
previous one (0: every epoch but the last), and ``model.pt`` only right after it, from the best weights kept in
memory. A checkpoint whose best epoch is not its own and not yet in ``model.pt`` carries those weights, so a
kill between the two writes is repaired on resume and ``model.pt`` is never newer than its record. At the end, a
fit whose ``model.pt`` lags the best epoch writes both once more. With a moving average of the weights
(``train.ema_decay``), the checkpoint also holds the average, and the average is what is validated and kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import torch
from torch import nn

from .. import io
from ..errors import ArtifactError, CxrError
from ..layout import FoldLayout
from ..models import save_checkpoint, unwrap
from .ema import WeightAverage

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
                   "image_size"]


@dataclass
class Progress:
    """Early-stopping state after an epoch."""

    history: list[dict]
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    scaler_state: Optional[dict] = None  # the AMP scaler's, restored once the epoch runner exists

    @property
    def next_epoch(self) -> int:
        return self.history[-1]["epoch"] + 1 if self.history else 1


def checkpoint_epoch(path: Path) -> Optional[int]:
    """The epoch recorded in a saved checkpoint (None when the file is absent)."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True).get("epoch")


class Checkpointer:
    """Writes and reads one fold's training files; with ``fold=None`` (benchmarks, tests) it writes nothing."""

    def __init__(self, fold: Optional[FoldLayout], meta: dict[str, Any], writes: bool = True, every_s: float = 0.0):
        self.fold, self.meta, self.writes = fold, meta, writes and fold is not None
        self.every_s = every_s
        self._written_at = time.monotonic()
        self._model_epoch: Optional[int] = None  # the epoch model.pt holds, as far as this process knows

    def resume(self, model: nn.Module, opt, sched, ema: Optional[WeightAverage] = None) -> Optional[Progress]:
        """Load the last checkpoint into the objects, if there is one; returns its progress."""
        if self.fold is None or not self.fold.last_checkpoint.exists():
            return None
        last = self.fold.last_checkpoint
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state.get("params") != self.meta.get("params"):
            raise CxrError(f"{last}: an interrupted run with other params; pass force=True (--force) to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        if ema is not None:
            if state.get("ema") is None:
                raise ArtifactError(f"{last}: has no moving average of the weights although train.ema_decay is set; "
                                    "retrain the fold with force=True (--force)")
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"])
        progress = Progress(state["history"], state["best_val_loss"], state["best_epoch"], state["bad_epochs"],
                            state.get("scaler"))
        best = progress.best_epoch
        if self.writes and best and checkpoint_epoch(self.fold.model) != best:  # killed before model.pt
            weights = _evaluated(state) if best == state["epoch"] else state.get("best")
            if weights is None:
                raise ArtifactError(f"{last}: best epoch {best} is neither in {self.fold.model} nor in the "
                                    "checkpoint; retrain the fold with force=True (--force)")
            save_checkpoint(self.fold.model, weights, {**self.meta, "epoch": best})
        self._model_epoch = best
        self._written_at = time.monotonic()
        return progress

    def save(self, model: nn.Module, opt, sched, scaler, progress: Progress, best_state: Optional[dict],
             final: bool = False, ema: Optional[WeightAverage] = None) -> bool:
        """After an epoch: history.csv; then, when due, the last checkpoint and model.pt (the best weights:
        ``best_state``, or the evaluated ones (``ema``'s average, else the model's own) when this epoch is the
        best). Due when ``every_s`` seconds have passed since the last write, or on the ``final`` epoch when
        model.pt lags the best epoch. Returns whether it wrote the checkpoint."""
        if not self.writes:
            return False
        epoch, best = progress.history[-1]["epoch"], progress.best_epoch
        io.write_csv(self.fold.history, pd.DataFrame(progress.history, columns=HISTORY_COLUMNS))
        lags = best != self._model_epoch and best > 0
        due = (lags and final) or (not final and time.monotonic() - self._written_at >= self.every_s)
        if not due:
            return False
        if best == epoch:
            best_state = None  # the evaluated weights of this epoch
        elif lags and best_state is None:
            raise CxrError(f"{self.fold.dir}: best weights of epoch {best} were not kept")  # a bug, not bad input
        with io.atomic_path(self.fold.last_checkpoint) as tmp:
            torch.save({"model": {k: v.cpu() for k, v in unwrap(model).state_dict().items()},
                        "best": {k: v.cpu() for k, v in best_state.items()} if lags and best_state else None,
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict() if sched is not None else None,
                        "ema": {k: v.cpu() for k, v in ema.state_dict().items()} if ema is not None else None,
                        "scaler": scaler.state_dict(), "epoch": epoch, "history": progress.history,
                        "best_val_loss": progress.best_val_loss, "best_epoch": best,
                        "bad_epochs": progress.bad_epochs, "rng": torch.get_rng_state(),
                        "params": self.meta.get("params")}, tmp)
        if lags:
            own = ema.module if ema is not None else model
            save_checkpoint(self.fold.model, best_state if best_state is not None else own,
                            {**self.meta, "epoch": best})
            self._model_epoch = best
        self._written_at = time.monotonic()
        return True

    def restore_best(self, model: nn.Module, best_state: Optional[dict], best_epoch: int) -> None:
        """Load the best epoch's weights: from memory, else from model.pt (a resumed fold)."""
        if best_state is None and self.fold is not None and self.fold.model.exists():
            saved = torch.load(self.fold.model, map_location="cpu", weights_only=True)
            if saved.get("epoch") != best_epoch:
                raise ArtifactError(f"{self.fold.model}: holds epoch {saved.get('epoch')}, but the best epoch is "
                                    f"{best_epoch}; retrain the fold with force=True (--force)")
            best_state = saved["state_dict"]
        if best_state is not None:
            unwrap(model).load_state_dict(best_state)
        elif best_epoch:
            where = self.fold.dir if self.fold is not None else "fit"
            raise ArtifactError(f"{where}: best weights of epoch {best_epoch} are missing (no saved best model)")

    def discard_last(self) -> None:
        """Remove the last checkpoint once the fold is finished."""
        if self.writes:
            self.fold.last_checkpoint.unlink(missing_ok=True)


def _evaluated(state: dict) -> dict:
    """The weights a checkpoint's own epoch was validated with: the moving average's when it has one."""
    if state.get("ema") is None:
        return state["model"]
    prefix = "module."
    return {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}
