"""One (task, fold) end to end: load the round's images, build the model, fit, predict val/test, write train.json.

``train.json`` is written last and marks the fold finished; a finished fold is not trained again unless forced.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from .. import __version__, io
from ..config import StudyConfig
from ..cores import usable_cores
from ..device import resolve_device
from ..errors import ArtifactError
from ..evaluate.calibration import fit_temperature, nll
from ..inference import predict_logits, probs_from_logits
from ..layout import FoldLayout, RunLayout
from ..models import build_model, set_checkpoint_meta, unwrap
from .checkpoint import HISTORY_COLUMNS, Checkpointer
from .derive import derive_fold
from .distributed import Dist
from .fold_data import FoldData, load_fold_data
from .loop import fit
from .seeding import derive_seed, set_deterministic


@dataclass
class FoldResult:
    fold_dir: Path
    history: pd.DataFrame
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    skipped: bool  # True when the fold was already finished and nothing was recomputed
    info: dict = field(default_factory=dict)  # train.json


def live_jupyter() -> bool:
    """True in an interactive Jupyter kernel; CXR_PROGRESS=0/1 overrides (set 0 under papermill)."""
    env = os.environ.get("CXR_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def train_fold(cfg: StudyConfig, run_dir: str | os.PathLike, task: str, fold: int, force: bool = False,
               progress: Optional[bool] = None, callback: Optional[Callable[[dict], None]] = None,
               data: Optional[Callable[[], FoldData]] = None, layout: Optional[FoldLayout] = None) -> FoldResult:
    """Train round ``fold`` of ``task``; skips a finished fold (train.json present) unless ``force``.

    ``data``/``layout``: the shortcut controls train the same way on other images (a function returning the
    round's FoldData, called only when training is needed) into other folders (default: the study's round).

    ``progress``: a tqdm bar (None: only in live Jupyter); one log line per epoch is always printed.
    """
    d = Dist.from_env()
    own_group = d.world > 1 and not dist.is_initialized()
    device = resolve_device(cfg.train.device, d.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    deterministic = set_deterministic(cfg.train.deterministic, device)
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train_fold(cfg, run_dir, task, fold, force, progress, callback, d, device, deterministic,
                           data, layout)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train_fold(cfg, run_dir, task, fold, force, progress, callback, d: Dist, device,
                deterministic: dict, load_data=None, layout: Optional[FoldLayout] = None) -> FoldResult:
    layout = layout or RunLayout(run_dir).fold(task, fold)
    out, done = layout.dir, layout.train_info
    echo = functools.partial(print, flush=True) if d.is_main else (lambda msg: None)
    if done.exists() and not force:
        echo(f"{task} fold {fold}: already trained ({done}); pass force=True to retrain")
        return _finished(layout)
    d.barrier()
    if force and d.is_main and out.exists():
        for path in (layout.train_info, layout.last_checkpoint, *layout.artifacts):
            path.unlink(missing_ok=True)
    d.barrier()
    source = cfg.source_task(task)
    if source is not None and load_data is None:  # a derived task's round: the source round's model, regrouped
        if d.is_main:
            echo(f"{task} fold {fold}: derived from {source} fold {fold} (derived_tasks.{task}); no training")
            derive_fold(cfg, RunLayout(run_dir).fold(source, fold), layout, load_fold_data(cfg, run_dir, task, fold),
                        cfg.class_map(task), device, {"task": task, "fold": fold})
        d.barrier()
        res = _finished(layout)
        res.skipped = False
        return res
    t0 = time.perf_counter()
    data = load_data() if load_data is not None else load_fold_data(cfg, run_dir, task, fold)
    load_s = time.perf_counter() - t0
    n = {role: int((data.split == role).sum()) for role in ("train", "val", "test")}
    echo(f"{task} fold {fold}: {n['train']} train / {n['val']} val / {n['test']} test images, "
         f"{cfg.model.arch} weights={cfg.model.weights} freeze={cfg.model.freeze}, device {device}"
         + (f" x{d.world}" if d.world > 1 else "")
         + (f", trained on labels {data.fine_classes}" if data.fine_classes else ""))
    # Weight initialisation and dropout draw from torch's global RNG: seeded once, here.
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    model = build_model(cfg.model.arch, len(data.classes), cfg.model.weights, cfg.model.freeze, data.head_groups)
    meta = {"arch": cfg.model.arch, "classes": data.classes, "resize": cfg.data.resize,
            "image_size": cfg.train.image_size, "tta_flip": cfg.evaluate.tta_flip, "params": cfg.to_dict(),
            "task": task, "fold": fold, **_fine(data)}
    out.mkdir(parents=True, exist_ok=True)
    result = fit(model, data, cfg.train, layout, meta, device, d, live_jupyter() if progress is None else progress,
                 callback, echo)
    t1 = time.perf_counter()
    if d.is_main:
        logits = held_out_logits(model, data, cfg.train.image_size, device, cfg.evaluate.tta_flip)
        calibration = calibrate(logits, data, cfg.evaluate.calibration)
        if calibration["temperature"] != 1.0:  # before predictions.csv and train.json: a resume refits it
            set_checkpoint_meta(layout.model, temperature=calibration["temperature"])
        preds = predictions_frame(logits, data, calibration["temperature"])
        io.write_csv(layout.predictions, preds)
        acc = {s: float((g["true"] == g["predicted"]).mean()) for s, g in preds.groupby("split")}
        info = {
            "task": task, "fold": fold, "classes": data.classes, **_fine(data), "seed": cfg.train.seed,
            "device": str(device),
            "world_size": d.world, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
            "epochs_run": len(result.history), "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch, "feature_cache": result.feature_cache,
            "feature_cache_ignored": result.feature_cache_ignored, "deterministic": deterministic,
            "n_images": n, "val_accuracy": acc.get("val"), "test_accuracy": acc.get("test"),
            "calibration": calibration,
            "timings": {"load_images_s": load_s, "fit_s": result.seconds,
                        "feature_cache_s": result.feature_cache_seconds,
                        "predict_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0,
                        "threads": torch.get_num_threads(), "cores": usable_cores()},
            "versions": versions(), "params": cfg.to_dict(),
        }
        io.write_json(done, info)  # last: marks the fold finished
        Checkpointer(layout, meta).discard_last()
        echo(f"{task} fold {fold}: best epoch {result.best_epoch}, val acc {acc.get('val', float('nan')):.3f}, "
             f"test acc {acc.get('test', float('nan')):.3f} -> {out}")
    d.barrier()
    if not d.is_main:
        return FoldResult(out, pd.DataFrame(result.history, columns=HISTORY_COLUMNS), result.best_epoch,
                          math.nan, math.nan, False, {})
    res = _finished(layout)
    res.skipped = False
    return res


def round_sentence(result: FoldResult) -> str:
    """One Markdown sentence on what a round did: trained, already trained, or derived from another task's."""
    info = result.info
    derived = info.get("derived_from")
    if derived:
        return (f"Derived from `{derived['task']}` round {derived['fold']} (`derived_tasks`): that round's network "
                f"with its classes summed into `{info['task']}`'s ({', '.join(info['classes'])}), temperature "
                f"refitted, nothing trained here; saved to `{result.fold_dir}`. The curves below are that round's "
                f"training: {info['epochs_run']} epochs, best epoch {result.best_epoch}.")
    return (f"{'Already trained: loaded from' if result.skipped else 'Trained and saved to'} `{result.fold_dir}` — "
            f"{info['epochs_run']} epochs on {info['device']}, best epoch {result.best_epoch}"
            f"{' (stopped early)' if info['stopped_early'] else ''}, {info['timings']['total_s']:.0f} s.")


def _fine(data: FoldData) -> dict:
    return {} if data.fine_classes is None else {"fine_classes": data.fine_classes, "head_groups": data.head_groups}


def _finished(layout: FoldLayout) -> FoldResult:
    missing = [p.name for p in layout.artifacts if not p.is_file()]
    if missing:
        raise ArtifactError(f"{layout.dir}: finished fold lacks {missing}; retrain it with force=True")
    info = io.read_json(layout.train_info)
    history = pd.read_csv(layout.history)
    return FoldResult(layout.dir, history, int(info["best_epoch"]), info.get("val_accuracy"), info.get("test_accuracy"),
                      True, info)


HELD_OUT = ("val", "test")


def held_out_logits(model: nn.Module, data: FoldData, image_size: int, device: torch.device,
                    tta_flip: bool = False) -> np.ndarray:
    """Logits (N, V, C) of the round's val and test images, in their order in ``data``."""
    mask = np.isin(data.split, HELD_OUT)
    return predict_logits(unwrap(model), data.images[mask], image_size, batch_size=64, device=device,
                          tta_flip=tta_flip)


def calibrate(logits: np.ndarray, data: FoldData, method: str) -> dict:
    """``evaluate.calibration`` on the val images of ``held_out_logits``: the temperature (1.0 for ``none``) and
    the validation NLL before and after it."""
    held = np.isin(data.split, HELD_OUT)
    val = data.split[held] == "val"
    targets = data.targets[held][val]
    if method == "none" or not val.any():
        return {"method": "none" if method == "none" else "none (no validation images)", "temperature": 1.0}
    t = fit_temperature(logits[val], targets)
    return {"method": method, "temperature": t, "fitted_on": int(val.sum()),
            "val_nll_before": nll(logits[val], targets), "val_nll_after": nll(logits[val], targets, t)}


def predictions_frame(logits: np.ndarray, data: FoldData, temperature: float = 1.0) -> pd.DataFrame:
    """Rows for the val and test images (``held_out_logits``): path, split, true, predicted, prob_<class>...,
    source, patient_id, sha256; the probabilities at ``temperature``."""
    mask = np.isin(data.split, HELD_OUT)
    probs = probs_from_logits(logits, temperature)
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
