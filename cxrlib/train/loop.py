"""The training loop: epochs with early stopping on validation loss, resumable through a Checkpointer."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..allocator import retain_freed_memory
from ..config import TrainConfig
from ..device import use_channels_last
from ..errors import CxrError
from ..layout import FoldLayout
from ..models import unwrap
from .checkpoint import Checkpointer, Progress
from .distributed import Dist
from .ema import weight_average
from .epoch import EpochRunner, epoch_image_size, head_of
from .fold_data import FoldData
from .optim import make_optimizer, make_scheduler
from .speed import maybe_compile


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    feature_cache: bool
    resumed_from_epoch: int
    seconds: float
    feature_cache_seconds: float = 0.0
    feature_cache_ignored: list = field(default_factory=list)  # augmentations the cache could not replay


def _uses_feature_cache(model: nn.Module, t: TrainConfig, d: Dist, echo) -> bool:
    frozen_all = getattr(model, "cxr_frozen", []) and all(
        not p.requires_grad for n, p in model.named_parameters() if not n.startswith(head_of(model) + "."))
    use_cache = bool(t.feature_cache and frozen_all and t.epochs > 0)
    if use_cache and d.world > 1:
        echo("feature cache is single-process: training the frozen backbone's head through DDP instead")
        return False
    return use_cache


def fit(model: nn.Module, data: FoldData, t: TrainConfig, fold: Optional[FoldLayout], meta: dict[str, Any],
        device: torch.device, d: Dist = Dist(), progress: bool = False,
        callback: Optional[Callable[[dict], None]] = None,
        echo: Callable[[str], None] = functools.partial(print, flush=True)) -> FitResult:
    """Train ``model`` on ``data`` (train part), early-stopping on the val part; restores the best weights (with
    ``t.ema_decay``, the best epoch's average of the weights). Epochs of a progressive-resizing ramp (crops below
    ``t.image_size``, validated at full size) do not count against ``t.patience``.

    With ``fold``, writes history.csv every epoch, the last checkpoint and model.pt (best) every
    ``t.checkpoint_every_s`` seconds and at the end (rank 0), and resumes from an existing last checkpoint.
    ``callback(row)`` runs after each epoch's artifacts.
    """
    start_time = time.perf_counter()
    if t.retain_memory:
        retain_freed_memory()
    model.to(device)
    if use_channels_last(device, t.image_size, t.memory_format):
        model.to(memory_format=torch.channels_last)
    use_cache = _uses_feature_cache(model, t, d, echo)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CxrError("model.freeze leaves no trainable parameters")
    opt = make_optimizer(params, t)
    sched = make_scheduler(opt, t)
    ema = weight_average(model, t.ema_decay)
    saver = Checkpointer(fold, meta, writes=d.is_main, every_s=t.checkpoint_every_s)
    state = saver.resume(model, opt, sched, ema) or Progress([])
    first_epoch = state.next_epoch
    if state.history:
        echo(f"resuming at epoch {first_epoch} (best so far: epoch {state.best_epoch}, "
             f"val_loss {state.best_val_loss:.4f})")
    runner = EpochRunner(model, data, t, device, d, use_cache, echo, ema)
    evaluated = ema.module if ema is not None else unwrap(model)  # the weights validated and kept as the best
    if state.scaler_state:
        runner.scaler.load_state_dict(state.scaler_state)
    net: nn.Module = model
    if d.world > 1 and not use_cache:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if not use_cache:
        net = maybe_compile(net, t, echo)
    stopped = state.bad_epochs >= t.patience
    epochs = range(first_epoch, t.epochs + 1) if not stopped else range(0)
    best_state = None
    bar = None
    if progress and d.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.epochs, initial=first_epoch - 1, desc="epochs", leave=False)
    for epoch in epochs:
        tick = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        loss_sum, correct, seen = d.sum(list(runner.train_epoch(net, opt, epoch)), device)
        train_seconds = time.perf_counter() - tick
        v_loss, v_correct, v_seen = d.sum(list(runner.validate(evaluated)), device)
        val_loss, val_acc = v_loss / max(v_seen, 1), v_correct / max(v_seen, 1)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss)
        elif sched is not None:
            sched.step()
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - tick,
               "images_per_s": seen / max(train_seconds, 1e-9),
               "image_size": t.image_size if use_cache else epoch_image_size(t, epoch)}
        state.history.append(row)
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        elif row["image_size"] == t.image_size:  # a ramp's smaller crops are no sign of stagnation
            state.bad_epochs += 1
        final = epoch == t.epochs or state.bad_epochs >= t.patience
        saver.save(model, opt, sched, runner.scaler, state, best_state, final, ema)
        echo(f"epoch {epoch}/{t.epochs} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:.3f} "
             f"val_loss={val_loss:.4f} val_acc={val_acc:.3f} lr={lr:.2e} {row['seconds']:.1f}s "
             f"{row['images_per_s']:.0f} img/s" + (" *" if improved else ""))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if callback is not None:
            callback(row)
        if state.bad_epochs >= t.patience:
            echo(f"early stop: no val_loss improvement for {t.patience} epochs; best epoch {state.best_epoch}")
            stopped = True
            break
    if bar is not None:
        bar.close()
    saver.restore_best(model, best_state, state.best_epoch)
    return FitResult(state.history, state.best_epoch, state.best_val_loss, stopped, use_cache, first_epoch - 1,
                     time.perf_counter() - start_time, runner.cache_seconds, runner.cache_ignored)
