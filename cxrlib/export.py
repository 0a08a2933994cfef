"""The fold ensemble as one portable model file (TorchScript or ONNX) plus a ``model_card.json``.

The exported model takes a (N, 1, resize, resize) batch already resized like the training cache (square,
bilinear, 8-bit grayscale): uint8 0..255, or float 0..1 (the ONNX file takes float32 0..1 only). Inside it
centre-crops to ``image_size``, replicates gray to RGB, normalises with ImageNet mean/std, runs every fold model
(its logits divided by its calibration temperature) and returns the mean softmax probability (N, C) in the card's
class order: what ``python -m cxrlib predict`` reports as ``prob_<class>``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import io
from .data.describe import class_source_counts
from .data.splits import read_splits
from .errors import ArtifactError, ConfigError
from .evaluate.summary import read_summary
from .layout import RunLayout
from .predict.ensemble import FoldEnsemble, load_ensemble
from .transforms import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("torchscript", "onnx")
INTENDED_USE = ("Research only: not for clinical use, diagnosis or triage. Trained on public chest X-ray "
                "collections whose classes come from different sources; accuracy partly measures the source "
                "(see confounds). Not validated prospectively or on any hospital's own data.")


class EnsembleModule(nn.Module):
    """Crop + normalise + every fold model + mean softmax, for (N, 1, resize, resize) uint8 or float 0..1 input."""

    def __init__(self, models: Sequence[nn.Module], resize: int, image_size: int, tta_flip: bool = False,
                 temperatures: Sequence[float] | None = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        temperatures = [1.0] * len(self.models) if temperatures is None else [float(t) for t in temperatures]
        if len(temperatures) != len(self.models) or min(temperatures, default=1.0) <= 0:
            raise ValueError(f"EnsembleModule: needs one temperature > 0 per model, got {temperatures}")
        self.image_size = int(image_size)
        self.tta_flip = bool(tta_flip)  # each image averaged with its mirror, as the study predicted
        # torchvision's centre-crop anchor for a resize x resize input
        self.top = int(round((resize - image_size) / 2.0))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("temperature", torch.tensor(temperatures, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
        else:
            x = x.to(torch.float32)
        s, t = self.image_size, self.top
        x = x[:, :, t:t + s, t:t + s].expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        total = torch.zeros(0)
        for i, model in enumerate(self.models):
            t = self.temperature[i]
            p = torch.softmax(model(x) / t, dim=1)
            if self.tta_flip:
                p = (p + torch.softmax(model(torch.flip(x, dims=[3])) / t, dim=1)) / 2
            total = p if i == 0 else total + p
        return total / len(self.models)


def ensemble_module(ens: FoldEnsemble) -> EnsembleModule:
    """The wrapper of an ensemble's fold models (on CPU, eval mode)."""
    return EnsembleModule([ens.models[k].to("cpu") for k in ens.folds], ens.resize, ens.image_size,
                          ens.tta_flip, [ens.temperature(k) for k in ens.folds]).eval()


def _write_model(module: EnsembleModule, fmt: str, path: Path, resize: int) -> None:
    example = torch.zeros(2, 1, resize, resize, dtype=torch.float32)
    with io.atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy (TorchScript-based) ONNX exporter's
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(module), str(tmp))
        else:
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, input_names=["image"],
                              output_names=["probabilities"],
                              dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}})


def _counts(frame, column: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame[column].value_counts().sort_index().items()}


def training_data(splits) -> dict[str, Any]:
    """Images per class and per source, and the class x source table with the classes from one source only."""
    table = class_source_counts(splits, column="target").drop(index="total", columns="total")
    by_class_source = {str(c): {str(s): int(n) for s, n in row.items() if n} for c, row in table.iterrows()}
    single = {c: next(iter(s)) for c, s in by_class_source.items() if len(s) == 1}
    return {
        "images": int(len(splits)),
        "by_class": _counts(splits, "target"),
        "by_source": _counts(splits, "source"),
        "confounds": {
            "class_by_source": by_class_source,
            "single_source_classes": single,
            "note": ("a class drawn from a single source can be recognised by source traits (age, scanner, "
                     "markers) instead of disease") if single else "every class comes from more than one source",
        },
    }


def results(summary: dict | None) -> dict[str, Any]:
    """Cross-validation (pooled with intervals, mean/SD over folds) and external results of ``summary.json``."""
    if summary is None:
        return {"cross_validation": None, "external": None, "note": "no evaluation summary: the task was not evaluated"}
    return {"cross_validation": {"pooled": summary.get("pooled"), "across_folds": summary.get("across_folds"),
                                 "ci_level": summary.get("ci_level")},
            "external": summary.get("external")}


def head_card(run_dir: str | os.PathLike, task: str, folds: list[int]) -> dict[str, Any]:
    """Card entries for fold models whose classes group finer outputs (``train.fine_labels``) or that are another
    task's models (``derived_tasks``), from each fold's ``train.json``; empty for plain heads."""
    infos = {k: io.read_json(p) for k in folds if (p := RunLayout(run_dir).fold(task, k).train_info).is_file()}
    out: dict[str, Any] = {}
    fine = {str(k): i["fine_classes"] for k, i in infos.items() if i.get("fine_classes")}
    if fine:
        out["fine_classes"] = {"by_fold": fine, "note": "the network has one output per label; each class's "
                               "probability is the sum of its labels' (inside the model)"}
    derived = {str(k): i["derived_from"] for k, i in infos.items() if i.get("derived_from")}
    if derived:
        out["derived_from"] = {str(k): f"{d['task']} fold {d['fold']}" for k, d in derived.items()}
    return out


def model_card(run_dir: str | os.PathLike, task: str, ens: FoldEnsemble, fmt: str, model_file: Path) -> dict[str, Any]:
    """The model card's content (see the module docstring and README: Portable model)."""
    splits_path = RunLayout(run_dir).task(task).splits
    if not splits_path.is_file():
        raise ArtifactError(f"{splits_path}: splits file is missing; the model card lists the training data from it")
    return io.json_safe({
        "task": task,
        "model_file": model_file.name,
        "format": fmt,
        "classes": ens.classes,
        "folds": ens.folds,
        "archs": {str(k): a for k, a in ens.archs.items()},
        "output": "mean over the fold models of the softmax probabilities, (N, C) in the order of classes",
        "calibration": {"temperature": {str(k): ens.temperature(k) for k in ens.folds},
                        "note": "each fold model's logits are divided by its temperature before the softmax "
                                "(inside the model; 1.0: not calibrated)"},
        "preprocessing": {
            "decode": "8-bit grayscale (DICOM: modality LUT, VOI LUT or window, MONOCHROME1 inverted)",
            "resize": ens.resize, "resize_method": "bilinear to resize x resize, aspect ratio not kept",
            "input": ("(N, 1, resize, resize) uint8 0..255 or float 0..1" if fmt == "torchscript"
                      else "(N, 1, resize, resize) float32 0..1"),
            "image_size": ens.image_size, "crop": "centre crop to image_size (inside the model)",
            "channels": "grayscale replicated to RGB (inside the model)",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "test_time_flip": ens.tta_flip,
            "before_the_model": {**ens.image_options, "note": "apply to the resized image before the model (as "
                                 "cxrlib.data.images.preprocess): crop_border cuts that fraction from each side "
                                 "and resizes back; equalize is the study's contrast-limited equalisation"},
        },
        **head_card(run_dir, task, ens.folds),
        "training_data": training_data(read_splits(splits_path)),
        **results(read_summary(run_dir, task)),
        "intended_use": INTENDED_USE,
    })


def export_ensemble(run_dir: str | os.PathLike, task: str, fmt: str = "torchscript", folds="all",
                    out_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the ensemble model and ``model_card.json`` (default under ``<run>/<task>/export``); returns both paths."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {FORMATS}")
    ens = load_ensemble(run_dir, task, folds, device="cpu")
    task_layout = RunLayout(run_dir).task(task)
    model_path, card_path = task_layout.exported_model(fmt, out_dir), task_layout.model_card(out_dir)
    card = model_card(run_dir, task, ens, fmt, model_path)
    _write_model(ensemble_module(ens), fmt, model_path, ens.resize)
    io.write_json(card_path, card)
    return model_path, card_path
