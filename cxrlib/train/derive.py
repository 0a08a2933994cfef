"""A round of a derived task (``derived_tasks``): the source task's fold model, its classes grouped, no training.

Binary (COVID-19 vs other) from multiclass: the multiclass network with a ``GroupedLinear`` head predicts
"other" as P(normal) + P(viral pneumonia), exactly what a binary network trained with ``train.fine_labels``
predicts, and it learnt from every image of both tasks at no extra training cost. The derived round keeps
the source's weights and training history, refits the temperature on its own classes, predicts its val and test
images and writes the artifacts of a trained round, so evaluation, Grad-CAM, controls, predict and export read
it like any other. ``train.json`` names the source round (``derived_from``) and counts no training seconds.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .. import io
from ..errors import ArtifactError
from ..layout import FoldLayout
from ..models import model_from_checkpoint
from .fold_data import FoldData

#: train.json entries copied from the source round (what its history and model.pt come from)
SOURCE_FIELDS = ("best_epoch", "best_val_loss", "epochs_run", "stopped_early", "resumed_from_epoch", "seed",
                 "world_size", "feature_cache", "deterministic")


def grouped_head(meta: dict[str, Any], classes: Sequence[str], class_map: Optional[Sequence[int]]) -> dict[str, Any]:
    """Checkpoint meta entries (classes, head_groups, fine_classes) of the source model ``meta`` predicting
    ``classes``: source class i goes to class ``class_map[i]``; ``class_map`` None keeps the source's classes
    (they must equal ``classes``: a source probe, whose classes are sources)."""
    source_classes = list(meta["classes"])
    if class_map is None:
        if source_classes != list(classes):
            raise ValueError(f"derived model: classes {list(classes)} differ from the source's {source_classes} "
                             "and no class map was given")
        return {k: meta[k] for k in ("head_groups", "fine_classes") if k in meta} | {"classes": list(classes)}
    class_map = [int(c) for c in class_map]
    if len(class_map) != len(source_classes) or sorted(set(class_map)) != list(range(len(classes))):
        raise ValueError(f"class map {class_map} must send each of {source_classes} to one of {list(classes)}, "
                         "using every one")
    if meta.get("head_groups") is not None:
        groups = [class_map[g] for g in meta["head_groups"]]
        fine = list(meta["fine_classes"])
    else:
        groups, fine = class_map, source_classes
    return {"classes": list(classes), "head_groups": groups, "fine_classes": fine}


def derive_fold(cfg, source: FoldLayout, layout: FoldLayout, data: FoldData, class_map: Optional[Sequence[int]],
                device: torch.device, about: dict[str, Any]) -> None:
    """Write ``layout``'s model.pt, history.csv, predictions.csv and train.json (last) from the finished round
    ``source`` on the images of ``data``. ``about``: train.json entries naming the round (task, fold)."""
    from .fold import calibrate, held_out_logits, predictions_frame, versions

    missing = [p.name for p in source.artifacts if not p.is_file()]
    if missing:
        raise ArtifactError(f"{source.dir}: the round this one is derived from is not finished (lacks {missing})")
    t0 = time.perf_counter()
    obj = torch.load(source.model, map_location="cpu", weights_only=True)
    src_info = io.read_json(source.train_info)
    head = grouped_head(obj, data.classes, class_map)
    kept = {k: v for k, v in obj.items() if k not in ("head_groups", "fine_classes", "temperature")}
    layout.dir.mkdir(parents=True, exist_ok=True)
    for path in reversed(layout.artifacts):
        path.unlink(missing_ok=True)  # a half-written earlier attempt; train.json (the finished mark) first
    derived_from = {"task": src_info.get("task"), "fold": src_info.get("fold"), "dir": str(source.dir)}
    checkpoint = {**kept, **head, **about, "derived_from": derived_from}
    model = model_from_checkpoint(checkpoint, device)
    logits = held_out_logits(model, data, cfg.train.image_size, device, cfg.evaluate.tta_flip)
    calibration = calibrate(logits, data, cfg.evaluate.calibration)
    if calibration["temperature"] != 1.0:  # as a trained round: model.pt keeps T only when it is not 1
        checkpoint["temperature"] = calibration["temperature"]
    with io.atomic_path(layout.model) as tmp:
        torch.save(checkpoint, tmp)
    preds = predictions_frame(logits, data, calibration["temperature"])
    with io.atomic_path(layout.history) as tmp:
        shutil.copyfile(source.history, tmp)
    io.write_csv(layout.predictions, preds)
    acc = {s: float((g["true"] == g["predicted"]).mean()) for s, g in preds.groupby("split")}
    n = {role: int((data.split == role).sum()) for role in ("train", "val", "test")}
    seconds = time.perf_counter() - t0
    info = {
        **about, "classes": list(data.classes), **{k: head[k] for k in ("head_groups", "fine_classes") if k in head},
        "derived_from": derived_from, **{k: src_info[k] for k in SOURCE_FIELDS if k in src_info},
        "device": str(device), "n_images": n, "val_accuracy": acc.get("val"), "test_accuracy": acc.get("test"),
        "calibration": calibration,
        # no training here: the source round's train.json has its seconds
        "timings": {"fit_s": 0.0, "predict_s": seconds, "total_s": seconds, "threads": torch.get_num_threads()},
        "versions": versions(), "params": cfg.to_dict(),
    }
    io.write_json(layout.train_info, info)


def is_derived(info_path: str | Path) -> bool:
    """True when the round whose ``train.json`` is at ``info_path`` was derived (trained nothing itself)."""
    path = Path(info_path)
    return path.is_file() and "derived_from" in io.read_json(path)
