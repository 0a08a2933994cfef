"""Per-fold training: one (task, fold) of the cross-validation, resumable, deterministic, single or multi-GPU.

``train_fold`` reads ``<run_dir>/<task>/splits.csv``, loads the fold's images once into memory, trains with
early stopping on validation loss and writes ``fold<k>/{model.pt, history.csv, predictions.csv, train.json}``.
``checkpoint_last.pt`` (optimizer, scheduler, RNG and early-stopping state) is written every epoch so an
interrupted fold resumes at its next epoch; ``train.json`` is written last and marks the fold finished.

Randomness: the sampler and the augmentation of every batch draw from their own ``torch.Generator``
seeded from (train.seed, epoch, batch), so results do not depend on DataLoader workers and a resumed fold
continues exactly. Torch's global RNG is seeded once at the start of ``train_fold`` (weight initialisation,
dropout) and its state is saved with the last checkpoint.

Several GPUs: ``torchrun --nproc-per-node N -m cxrlib.train --run-dir R --task T --fold K`` runs the same
training under DistributedDataParallel; train.batch_size is per process, every rank draws the same
class-balanced epoch order from a shared generator and takes its slice; rank 0 writes all artifacts.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as nnf
from torch import nn

from . import __version__, io
from .config import StudyConfig, TrainConfig
from .data.images import load_images
from .data.splits import read_splits, split_of
from .errors import ArtifactError, CxrError
from .features import FeatureCache, build_feature_cache
from .inference import eval_tensor, predict_probs
from .models import build_model, head_name, save_checkpoint, set_train_mode, unwrap
from .transforms import Augment, as_uint8_batch, check_batch_stats

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]
LAST = "checkpoint_last.pt"


# --------------------------------------------------------------------------- seeds, devices, distribution


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from (seed, purpose, epoch, ...) via numpy's SeedSequence (independent streams)."""
    words = [p if isinstance(p, int) else int.from_bytes(str(p).encode()[:8].ljust(8, b"\0"), "little")
             for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: cuda (this process's local rank) > mps > cpu; otherwise the named device."""
    if spec != "auto":
        try:
            return torch.device(spec)
        except RuntimeError as exc:
            raise CxrError(f"train.device = {spec!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from exc
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()


# --------------------------------------------------------------------------- batches


def epoch_indices(targets: np.ndarray, seed: int, epoch: int, sampler: str = "weighted",
                  rank: int = 0, world: int = 1) -> torch.Tensor:
    """Training order of one epoch; this rank's slice of it.

    ``weighted``: len(targets) draws with replacement, each class equally likely (weights 1/class count);
    ``none``: a permutation. Every rank draws the same order (shared seed) and takes every world-th index,
    after wrapping the order to a multiple of ``world`` so ranks run the same number of steps.
    """
    n = len(targets)
    g = generator(seed, "sampler", epoch)
    if sampler == "weighted":
        counts = np.bincount(targets)
        weights = torch.as_tensor(1.0 / counts[targets], dtype=torch.float64)
        order = torch.multinomial(weights, n, replacement=True, generator=g)
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


class _Batches(torch.utils.data.Dataset):
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


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only augment; the main process owns the cores for the model


# --------------------------------------------------------------------------- data of one fold


@dataclass
class FoldData:
    """The images of one round in memory: uint8 (N,S,S), integer targets and roles train/val/test."""

    frame: pd.DataFrame
    images: np.ndarray
    targets: np.ndarray
    split: np.ndarray
    classes: list[str]

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == name
        return self.images[mask], self.targets[mask]


def load_fold_data(cfg: StudyConfig, run_dir: str | os.PathLike, task: str, fold: int) -> FoldData:
    """Read ``<run_dir>/<task>/splits.csv`` and load the images of round ``fold`` (decoded once, cached)."""
    classes = cfg.task_classes(task)
    path = Path(run_dir) / task / "splits.csv"
    frame = read_splits(path)
    n_folds = int(frame["fold"].max()) + 1
    if n_folds != cfg.split.n_folds:
        raise CxrError(f"{path}: has {n_folds} folds but split.n_folds={cfg.split.n_folds}")
    unknown = sorted(set(frame["target"]) - set(classes))
    if unknown:
        raise CxrError(f"{path}: targets {unknown} are not classes of task {task} ({classes})")
    split = split_of(frame, fold, n_folds).to_numpy()
    for role in ("train", "val", "test"):
        if not (split == role).any():
            raise CxrError(f"{path}: round {fold} has no {role} images")
    targets = frame["target"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    missing = sorted(set(range(len(classes))) - set(targets[split == "train"]))
    if missing:
        raise CxrError(f"{path}: round {fold} trains on no images of class(es) {[classes[i] for i in missing]}")
    images = load_images(frame["path"].tolist(), frame["sha256"].tolist(), size=cfg.data.resize,
                         cache_dir=cfg.data.cache_dir)
    return FoldData(frame, images, targets, split, classes)


# --------------------------------------------------------------------------- optimisation


def make_optimizer(params, t: TrainConfig) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, t: TrainConfig):
    """Stepped once per epoch (``plateau`` with the validation loss)."""
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, t.epochs // 3), gamma=0.1)
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=max(1, t.patience // 2))
    return None


class _Steps:
    """One epoch of training and one validation pass: full model, or head on cached features."""

    def __init__(self, model: nn.Module, data: FoldData, t: TrainConfig, device: torch.device, d: Dist,
                 use_cache: bool, echo: Callable[[str], None]):
        self.model, self.t, self.device, self.d = model, t, device, d
        self.amp = device.type == "cuda"
        self.train_images, self.train_targets = data.part("train")
        self.val_images, self.val_targets = data.part("val")
        self.source_size = self.train_images.shape[-1]
        self.augment = Augment.from_config(t)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.checked_stats = False
        self.cache: Optional[FeatureCache] = None
        self.val_cache: Optional[FeatureCache] = None
        self.cache_seconds = 0.0
        if use_cache:
            start = time.perf_counter()
            if t.random_crop or t.rotation or t.brightness:
                echo("feature cache: centre crop + flip only (random crop, rotation, jitter are not cached)")
            bs = max(64, t.batch_size)
            self.cache = build_feature_cache(model, self.train_images, t.image_size, bs, device, t.hflip, self.amp)
            self.val_cache = build_feature_cache(model, self.val_images, t.image_size, bs, device, False, self.amp)
            self.head = unwrap(model).get_submodule(_head_of(model))
            self.cache_seconds = time.perf_counter() - start
            echo(f"feature cache: {len(self.train_images)} train (+ flips) and {len(self.val_images)} val "
                 f"images in {self.cache_seconds:.1f}s")
        self.train_x = as_uint8_batch(self.train_images)
        self.train_y = torch.as_tensor(self.train_targets)

    def _to(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _step(self, net: nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = net(x)
            loss = nnf.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        return float(loss.detach()) * len(y), int((logits.argmax(1) == y).sum())

    def train_epoch(self, net: nn.Module, opt, epoch: int) -> tuple[float, float, int]:
        """Returns (loss sum, correct, images) over this rank's batches."""
        t, d = self.t, self.d
        order = epoch_indices(self.train_targets, t.seed, epoch, t.sampler, d.rank, d.world)
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
        loader = torch.utils.data.DataLoader(
            _Batches(self.train_x, self.train_y, batches, self.augment, t.seed, epoch, d.rank),
            batch_size=None, shuffle=False, num_workers=t.num_workers, worker_init_fn=_worker_init,
            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            if not self.checked_stats:
                check_batch_stats(x)
                self.checked_stats = True
            ls, c = self._step(net, opt, self._to(x), self._to(y))
            loss_sum, correct, seen = loss_sum + ls, correct + c, seen + len(y)
        return loss_sum, correct, seen

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, int]:
        """(loss sum, correct, images) over this rank's share of the validation images."""
        d, model = self.d, unwrap(self.model)
        rows = np.arange(d.rank, len(self.val_targets), d.world)
        y_all = torch.as_tensor(self.val_targets)
        loss_sum, correct = 0.0, 0
        bs = max(32, self.t.batch_size)
        model.eval()
        for start in range(0, len(rows), bs):
            idx = torch.as_tensor(rows[start:start + bs])
            if self.val_cache is not None:
                x = self.val_cache.plain[idx]
                net = self.head
            else:
                x = eval_tensor(self.val_images[idx.numpy()], self.t.image_size)
                net = model
            y = self._to(y_all[idx])
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = net(self._to(x)).float()
            loss_sum += float(nnf.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return loss_sum, correct, len(rows)


def _head_of(model: nn.Module) -> str:
    return head_name(unwrap(model).cxr_arch)


# --------------------------------------------------------------------------- the loop


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


def fit(model: nn.Module, data: FoldData, t: TrainConfig, out_dir: Optional[Path], meta: dict[str, Any],
        device: torch.device, d: Dist = Dist(), progress: bool = False,
        callback: Optional[Callable[[dict], None]] = None, echo: Callable[[str], None] = functools.partial(print, flush=True)) -> FitResult:
    """Train ``model`` on ``data`` (train part), early-stopping on the val part; restores the best weights.

    With ``out_dir``, writes model.pt (best), history.csv and checkpoint_last.pt every epoch (rank 0) and
    resumes from an existing checkpoint_last.pt. ``callback(row)`` runs after each epoch's artifacts.
    """
    start_time = time.perf_counter()
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    frozen_all = getattr(model, "cxr_frozen", []) and all(
        not p.requires_grad for n, p in model.named_parameters() if not n.startswith(_head_of(model) + "."))
    use_cache = bool(t.feature_cache and frozen_all and t.epochs > 0)
    if use_cache and d.world > 1:
        echo("feature cache is single-process: training the frozen backbone's head through DDP instead")
        use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CxrError("model.freeze leaves no trainable parameters")
    opt = make_optimizer(params, t)
    sched = make_scheduler(opt, t)
    history: list[dict] = []
    best_loss, best_epoch, bad, first_epoch = math.inf, 0, 0, 1
    best_state = None
    last = out_dir / LAST if out_dir is not None else None
    steps_ready = None
    if last is not None and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state.get("params") != meta.get("params"):
            raise CxrError(f"{last}: an interrupted run with other params; pass force=True (--force) to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        history = state["history"]
        best_loss, best_epoch, bad = state["best_val_loss"], state["best_epoch"], state["bad_epochs"]
        first_epoch = state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        steps_ready = state.get("scaler")
        if d.main and best_epoch == state["epoch"] and _checkpoint_epoch(out_dir / "model.pt") != best_epoch:
            save_checkpoint(out_dir / "model.pt", model, {**meta, "epoch": best_epoch})  # killed before model.pt
        echo(f"resuming at epoch {first_epoch} (best so far: epoch {best_epoch}, val_loss {best_loss:.4f})")
    steps = _Steps(model, data, t, device, d, use_cache, echo)
    if steps_ready:
        steps.scaler.load_state_dict(steps_ready)
    net: nn.Module = model
    if d.world > 1 and not use_cache:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    stopped = bad >= t.patience
    epochs = range(first_epoch, t.epochs + 1) if not stopped else range(0)
    bar = None
    if progress and d.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=t.epochs, initial=first_epoch - 1, desc="epochs", leave=False)
    for epoch in epochs:
        tick = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        loss_sum, correct, seen = d.sum(list(steps.train_epoch(net, opt, epoch)), device)
        train_seconds = time.perf_counter() - tick
        v_loss, v_correct, v_seen = d.sum(list(steps.validate()), device)
        val_loss, val_acc = v_loss / max(v_seen, 1), v_correct / max(v_seen, 1)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss)
        elif sched is not None:
            sched.step()
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - tick,
               "images_per_s": seen / max(train_seconds, 1e-9)}
        history.append(row)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch, bad = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
        else:
            bad += 1
        if out_dir is not None and d.main:
            io.write_csv(out_dir / "history.csv", pd.DataFrame(history, columns=HISTORY_COLUMNS))
            # checkpoint_last before model.pt: a kill between the two leaves a last checkpoint whose own weights
            # are the best ones, from which resume rewrites model.pt (never a model.pt newer than its record)
            with io.atomic_path(last) as tmp:
                torch.save({"model": {k: v.cpu() for k, v in unwrap(model).state_dict().items()},
                            "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict() if sched is not None else None,
                            "scaler": steps.scaler.state_dict(), "epoch": epoch, "history": history,
                            "best_val_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad,
                            "rng": torch.get_rng_state(), "params": meta.get("params")}, tmp)
            if improved:
                save_checkpoint(out_dir / "model.pt", model, {**meta, "epoch": epoch})
        echo(f"epoch {epoch}/{t.epochs} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:.3f} "
             f"val_loss={val_loss:.4f} val_acc={val_acc:.3f} lr={lr:.2e} {row['seconds']:.1f}s "
             f"{row['images_per_s']:.0f} img/s" + (" *" if improved else ""))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
        if callback is not None:
            callback(row)
        if bad >= t.patience:
            echo(f"early stop: no val_loss improvement for {t.patience} epochs; best epoch {best_epoch}")
            stopped = True
            break
    if bar is not None:
        bar.close()
    _restore_best(model, best_state, out_dir, best_epoch)
    return FitResult(history, best_epoch, best_loss, stopped, use_cache, first_epoch - 1,
                     time.perf_counter() - start_time, steps.cache_seconds)


def _checkpoint_epoch(path: Path) -> Optional[int]:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True).get("epoch")


def _restore_best(model: nn.Module, best_state, out_dir: Optional[Path], best_epoch: int) -> None:
    if best_state is None and out_dir is not None and (out_dir / "model.pt").exists():
        saved = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)
        if saved.get("epoch") != best_epoch:
            raise ArtifactError(f"{out_dir / 'model.pt'}: holds epoch {saved.get('epoch')}, but the best epoch is "
                                f"{best_epoch}; retrain the fold with force=True (--force)")
        best_state = saved["state_dict"]
    if best_state is not None:
        unwrap(model).load_state_dict(best_state)
    elif best_epoch:
        raise ArtifactError(f"{out_dir}: best weights of epoch {best_epoch} are missing (model.pt)")


# --------------------------------------------------------------------------- one fold, end to end


@dataclass
class FoldResult:
    fold_dir: Path
    history: pd.DataFrame
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    skipped: bool  # True when the fold was already finished and nothing was recomputed
    info: dict = field(default_factory=dict)  # train.json


def fold_dir(run_dir: str | os.PathLike, task: str, fold: int) -> Path:
    return Path(run_dir) / task / f"fold{fold}"


def live_jupyter() -> bool:
    """True in an interactive Jupyter kernel; CXR_PROGRESS=0/1 overrides (set 0 under papermill)."""
    env = os.environ.get("CXR_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def train_fold(cfg: StudyConfig, run_dir: str | os.PathLike, task: str, fold: int, force: bool = False,
               progress: Optional[bool] = None, callback: Optional[Callable[[dict], None]] = None) -> FoldResult:
    """Train round ``fold`` of ``task``; skips a finished fold (train.json present) unless ``force``.

    ``progress``: a tqdm bar (None: only in live Jupyter); one log line per epoch is always printed.
    """
    d = Dist.from_env()
    own_group = d.world > 1 and not dist.is_initialized()
    device = resolve_device(cfg.train.device, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train_fold(cfg, run_dir, task, fold, force, progress, callback, d, device)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train_fold(cfg, run_dir, task, fold, force, progress, callback, d: Dist, device) -> FoldResult:
    out = fold_dir(run_dir, task, fold)
    done = out / "train.json"
    echo = functools.partial(print, flush=True) if d.main else (lambda msg: None)
    if done.exists() and not force:
        echo(f"{task} fold {fold}: already trained ({done}); pass force=True to retrain")
        return _finished(out)
    d.barrier()
    if force and d.main and out.exists():
        for name in ("train.json", LAST, "model.pt", "history.csv", "predictions.csv"):
            (out / name).unlink(missing_ok=True)
    d.barrier()
    t0 = time.perf_counter()
    data = load_fold_data(cfg, run_dir, task, fold)
    load_s = time.perf_counter() - t0
    n = {role: int((data.split == role).sum()) for role in ("train", "val", "test")}
    echo(f"{task} fold {fold}: {n['train']} train / {n['val']} val / {n['test']} test images, "
         f"{cfg.model.arch} weights={cfg.model.weights} freeze={cfg.model.freeze}, device {device}"
         + (f" x{d.world}" if d.world > 1 else ""))
    # Weight initialisation and dropout draw from torch's global RNG: seeded once, here.
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    model = build_model(cfg.model.arch, len(data.classes), cfg.model.weights, cfg.model.freeze)
    meta = {"arch": cfg.model.arch, "classes": data.classes, "resize": cfg.data.resize,
            "image_size": cfg.train.image_size, "params": cfg.to_dict(), "task": task, "fold": fold}
    out.mkdir(parents=True, exist_ok=True)
    result = fit(model, data, cfg.train, out, meta, device, d, live_jupyter() if progress is None else progress,
                 callback, echo)
    t1 = time.perf_counter()
    if d.main:
        preds = predictions_frame(model, data, cfg.train.image_size, device)
        io.write_csv(out / "predictions.csv", preds)
        acc = {s: float((g["true"] == g["predicted"]).mean()) for s, g in preds.groupby("split")}
        info = {
            "task": task, "fold": fold, "classes": data.classes, "seed": cfg.train.seed, "device": str(device),
            "world_size": d.world, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
            "epochs_run": len(result.history), "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch, "feature_cache": result.feature_cache,
            "n_images": n, "val_accuracy": acc.get("val"), "test_accuracy": acc.get("test"),
            "timings": {"load_images_s": load_s, "fit_s": result.seconds,
                        "feature_cache_s": result.feature_cache_seconds,
                        "predict_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0},
            "versions": versions(), "params": cfg.to_dict(),
        }
        io.write_json(done, info)  # last: marks the fold finished
        (out / LAST).unlink(missing_ok=True)
        echo(f"{task} fold {fold}: best epoch {result.best_epoch}, val acc {acc.get('val', float('nan')):.3f}, "
             f"test acc {acc.get('test', float('nan')):.3f} -> {out}")
    d.barrier()
    if not d.main:
        return FoldResult(out, pd.DataFrame(result.history, columns=HISTORY_COLUMNS), result.best_epoch,
                          math.nan, math.nan, False, {})
    res = _finished(out)
    res.skipped = False
    return res


def _finished(out: Path) -> FoldResult:
    missing = [n for n in ("train.json", "history.csv", "model.pt", "predictions.csv") if not (out / n).is_file()]
    if missing:
        raise ArtifactError(f"{out}: finished fold lacks {missing}; retrain it with force=True")
    info = io.read_json(out / "train.json")
    history = pd.read_csv(out / "history.csv")
    return FoldResult(out, history, int(info["best_epoch"]), info.get("val_accuracy"), info.get("test_accuracy"),
                      True, info)


def predictions_frame(model: nn.Module, data: FoldData, image_size: int, device: torch.device) -> pd.DataFrame:
    """Rows for the val and test images: path, split, true, predicted, prob_<class>..., source, patient_id, sha256."""
    mask = np.isin(data.split, ["val", "test"])
    probs = predict_probs(unwrap(model), data.images[mask], image_size, batch_size=64, device=device)
    frame = data.frame.loc[mask]
    classes = np.asarray(data.classes)
    out = pd.DataFrame({"path": frame["path"].to_numpy(), "split": data.split[mask],
                        "true": classes[data.targets[mask]], "predicted": classes[probs.argmax(1)]})
    for i, c in enumerate(data.classes):
        out[f"prob_{c}"] = probs[:, i]
    for col in ("source", "patient_id", "sha256"):
        out[col] = frame[col].to_numpy()
    return out


def versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "cxrlib": __version__}


# --------------------------------------------------------------------------- command line


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m cxrlib.train`` (or under ``torchrun --nproc-per-node N``)."""
    from .config import load_config

    parser = argparse.ArgumentParser(prog="python -m cxrlib.train", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--params", default=None, help="params YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="retrain a finished fold")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.params, args.overrides)
        train_fold(cfg, args.run_dir, args.task, args.fold, force=args.force, progress=False)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
