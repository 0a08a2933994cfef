"""Typed study configuration: ``params/*.yaml`` validated once, with ``--set key=value`` overrides.

Every error names the offending key (``train.lr``) and the file it came from.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .errors import ConfigError
from .labels import CANONICAL_LABELS


@dataclass(frozen=True)
class DataConfig:
    root: str = "data"  # a data root holding one or more sources in their native layouts
    cache_dir: str = "~/.cache/cxr-study"  # decoded, resized images keyed by content hash (shared by runs)
    resize: int = 256  # images are resized to resize x resize (the paper: 256)
    max_per_class: Optional[int] = None  # cap per task class, drawn deterministically (CPU profiles)
    near_duplicate_threshold: float = 0.996  # fingerprint similarity (cxrlib.data.phash) at or above = one group;
    # tuned with bench/dedup_recall.py on the dev data (edited copies vs distinct patients)
    workers: int = 2  # processes used to scan/decode images
    # Shortcut mitigations (cxrlib.data.images.preprocess), applied wherever images are loaded for a model:
    crop_border: float = 0.0  # fraction cut from each side before the square resize's centre is used (0: none)
    equalize: bool = False  # contrast-limited histogram equalisation of each 8-bit image (numpy)


@dataclass(frozen=True)
class SplitConfig:
    n_folds: int = 5
    seed: int = 0


#: ``model.weights`` names of torchvision's ImageNet weights: the newest (DEFAULT, may postdate a published
#: study) or the original release IMAGENET1K_V1 (what a 2020 study could have used; pin it to reproduce one).
IMAGENET_WEIGHTS = {"imagenet": "DEFAULT", "imagenet_v1": "IMAGENET1K_V1"}


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet50"
    weights: str = "imagenet"  # imagenet (newest) | imagenet_v1 (original, pinned) | none | path to a state dict
    freeze: str = "none"  # none | backbone | name of the last frozen layer (e.g. layer3)


@dataclass(frozen=True)
class TrainConfig:
    image_size: int = 224  # crop size fed to the network
    random_crop: bool = True
    hflip: bool = True
    rotation: float = 0.0  # degrees of random rotation (augmentation strength)
    brightness: float = 0.0  # random brightness/contrast jitter
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine", "step", "plateau"] = "none"
    batch_size: int = 8
    epochs: int = 50
    patience: int = 5  # early stopping on validation loss (full-size epochs count); the best weights are restored
    # weighted: with replacement, 1/count(class); source_balanced: 1/count(class, source); balanced: each class
    # equally often, without replacement within a class (train.sampling.balanced_order); balanced_by_source: the
    # same, and within a class each source equally often; none: a permutation
    sampler: Literal["weighted", "balanced", "balanced_by_source", "source_balanced", "none"] = "weighted"
    feature_cache: bool = True  # frozen backbone: compute features once, train the head on them
    # auto: channels_last on CUDA, and on CPU from 96 px crops (faster there; slower on tiny crops)
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: bf16 on CUDA that has it, else fp16; fp32 on CPU
    compile: bool = False  # torch.compile the model (falls back to eager, with a log line, where it fails)
    augment_on: Literal["auto", "device", "host"] = "auto"  # auto: on CUDA the uint8 images live on the GPU
    label_smoothing: float = 0.0
    # train on the canonical labels inside each task class (binary's "other": normal, viral pneumonia) with one
    # head output per label; the model predicts a class as the sum of its labels' probabilities (models.
    # GroupedLinear). The sampler still balances task classes; history's train_acc is then on the labels
    fine_labels: bool = False
    # exponential moving average of the weights, per optimiser step (0: off); validation, early stopping, model.pt
    # and the predictions use the average. Its horizon is ~1/(1 - decay) steps: keep it under an epoch or two
    ema_decay: float = 0.0
    # progressive resizing: the first epoch trains on crops downscaled to this size, growing linearly to
    # image_size by the last epoch (0: off); validation and test always see image_size
    progressive_from: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    num_workers: int = 0
    # keep freed memory for reuse (glibc malloc; process-wide): ~12 % faster CPU steps, resident memory stays at its peak
    retain_memory: bool = True
    # the resume checkpoint (and model.pt behind it) is written once this many seconds of training have passed
    # since the last one, and at the end if model.pt lags the best epoch; 0: after every epoch but the last.
    # A kill loses at most this much training
    checkpoint_every_s: float = 60.0
    seed: int = 0
    deterministic: bool = False  # GPU: deterministic cuDNN/algorithms (slower); recorded in train.json


@dataclass(frozen=True)
class EvaluateConfig:
    bootstrap: int = 1000
    ci_level: float = 0.95
    external: Optional[str] = None  # a data root in any supported layout
    tta_flip: bool = False  # predictions average the image and its mirror (training's validation stays plain)
    # temperature: each fold model's logits are divided by a T fitted on its validation images (minimum NLL) for
    # every prediction it makes (test, external, predict, export); T is kept in model.pt. none: T = 1
    calibration: Literal["none", "temperature"] = "none"
    seed: int = 0


@dataclass(frozen=True)
class CamConfig:
    method: Literal["gradcam", "gradcam++", "hirescam", "layercam", "eigencam", "scorecam"] = "gradcam"
    n_examples: int = 16
    layers: Optional[list[str]] = None  # layer labels to map (e.g. [layer3, layer4]); None: all five
    border: float = 0.12  # width of the outer band (fraction of width/height) where markers sit
    road_samples: int = 50  # random test images for ROAD (enough for a t interval of the mean)
    batch_size: int = 8


@dataclass(frozen=True)
class ControlsConfig:
    """Shortcut controls (cxrlib.controls): the study's network retrained on masked images / to predict the source."""

    enabled: bool = True
    folds: list[int] = field(default_factory=lambda: [0])  # rounds to run each control on (a subset: CPU time)
    epochs: Optional[int] = None  # None: train.epochs
    border: float = 0.12  # the outer band, as a fraction of the network's input crop per side
    fill: Literal["mean", "zero"] = "mean"  # constant put in the removed region: training images' mean, or 0


def _default_tasks() -> dict[str, dict[str, list[str]]]:
    return {
        "multiclass": {"normal": ["normal"], "viral_pneumonia": ["viral_pneumonia"], "covid19": ["covid19"]},
        "binary": {"other": ["normal", "viral_pneumonia"], "covid19": ["covid19"]},
    }


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    #: task -> ordered {class name: [canonical labels]}; labels outside a task are dropped.
    tasks: dict[str, dict[str, list[str]]] = field(default_factory=_default_tasks)
    #: task -> the task whose images, folds and fold models it reuses instead of training its own (e.g. binary:
    #: multiclass, "other" predicted as P(normal) + P(viral pneumonia)); each of the source's classes must lie
    #: inside one class of the task, and the two tasks must cover the same labels (cxrlib.train.derive)
    derived_tasks: dict[str, str] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)

    def task_classes(self, task: str) -> list[str]:
        """Ordered class names of ``task``."""
        if task not in self.tasks:
            raise ConfigError(f"tasks: unknown task {task!r} (known: {sorted(self.tasks)})")
        return list(self.tasks[task])

    def source_task(self, task: str) -> Optional[str]:
        """The task whose fold models ``task`` reuses (``derived_tasks``), or None when it trains its own."""
        return self.derived_tasks.get(task)

    def class_map(self, task: str) -> list[int]:
        """For a derived ``task``: the index of the task class holding each class of its source task."""
        source = self.derived_tasks[task]
        owner = {lab: i for i, labels in enumerate(self.tasks[task].values()) for lab in labels}
        return [owner[labels[0]] for labels in self.tasks[source].values()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Load a params YAML (or the defaults when ``path`` is None), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read params file ({exc.strerror})") from exc
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: top level must be a mapping of sections")
    raw = apply_overrides(raw, overrides)
    if overrides:
        where += " with --set " + " ".join(overrides)
    return config_from_dict(raw, where=where)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` set (value parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {text!r} is not valid YAML") from exc
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # a missing or empty section (``evaluate:`` with nothing under it)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[parts[-1]] = value
    return raw


def config_from_dict(raw: dict[str, Any], where: str = "params") -> StudyConfig:
    """Validate a nested mapping into a StudyConfig; errors name ``where`` and the dotted key."""
    cfg = _build(StudyConfig, raw, prefix="", where=where)
    _check_values(cfg, where)
    return cfg


def _build(cls, raw: Any, prefix: str, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix}{unknown[0]} (known in this section: {sorted(fields)})")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}", where)
    return cls(**kwargs)


def _coerce(tp, value: Any, key: str, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{key}.", where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} = {value!r} is not one of {list(args)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: {key}: unsupported type {tp}")  # pragma: no cover - a bug in the schema


def _check_values(cfg: StudyConfig, where: str) -> None:
    def need(cond: bool, key: str, what: str) -> None:
        if not cond:
            raise ConfigError(f"{where}: {key} {what}")

    if not cfg.tasks:
        raise ConfigError(f"{where}: tasks must define at least one task")
    for task, classes in cfg.tasks.items():
        need(len(classes) >= 2, f"tasks.{task}", "needs at least two classes")
        seen: set[str] = set()
        for cls, labels in classes.items():
            need(bool(labels), f"tasks.{task}.{cls}", "must list at least one canonical label")
            for lab in labels:
                need(lab in CANONICAL_LABELS, f"tasks.{task}.{cls}", f"has unknown label {lab!r} (known: {list(CANONICAL_LABELS)})")
                need(lab not in seen, f"tasks.{task}.{cls}", f"repeats label {lab!r} already used by another class")
                seen.add(lab)
    for task, source in cfg.derived_tasks.items():
        _check_derived(cfg, task, source, where)
    d, s, t, e, c = cfg.data, cfg.split, cfg.train, cfg.evaluate, cfg.cam
    need(d.resize >= 16, "data.resize", f"must be >= 16, got {d.resize}")
    need(d.max_per_class is None or d.max_per_class >= 1, "data.max_per_class", "must be >= 1 or null")
    need(0 < d.near_duplicate_threshold <= 1, "data.near_duplicate_threshold",
         f"must be a correlation in (0, 1], got {d.near_duplicate_threshold}")
    need(d.workers >= 1, "data.workers", "must be >= 1")
    for key, seed in (("split.seed", s.seed), ("train.seed", t.seed), ("evaluate.seed", e.seed)):
        need(seed >= 0, key, f"must be >= 0, got {seed}")
    need(s.n_folds >= 3, "split.n_folds", f"must be >= 3 (test, validation and training folds), got {s.n_folds}")
    need(cfg.model.freeze, "model.freeze", "must be none, backbone or a layer name")
    w = cfg.model.weights
    need(w in IMAGENET_WEIGHTS or not (w.lower().startswith("imagenet") and not Path(w).suffix), "model.weights",
         f"= {w!r} is not one of {sorted(IMAGENET_WEIGHTS)} (or none, or a path to a state dict)")
    need(16 <= t.image_size <= d.resize, "train.image_size", f"must be between 16 and data.resize ({d.resize}), got {t.image_size}")
    need(t.lr > 0, "train.lr", "must be > 0")
    need(0 <= t.momentum < 1, "train.momentum", "must be in [0, 1)")
    need(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(t.epochs >= 1, "train.epochs", "must be >= 1")
    need(t.patience >= 1, "train.patience", "must be >= 1")
    need(t.checkpoint_every_s >= 0, "train.checkpoint_every_s", "must be >= 0 (0: after every epoch but the last)")
    need(0 <= t.label_smoothing < 1, "train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    need(0 <= t.ema_decay < 1, "train.ema_decay", f"must be in [0, 1) (0: off), got {t.ema_decay}")
    need(t.rotation >= 0 and t.brightness >= 0, "train.rotation/brightness", "must be >= 0")
    need(t.num_workers >= 0, "train.num_workers", "must be >= 0")
    need(t.progressive_from == 0 or 16 <= t.progressive_from <= t.image_size, "train.progressive_from",
         f"must be 0 (off) or between 16 and train.image_size ({t.image_size}), got {t.progressive_from}")
    need(e.bootstrap >= 0, "evaluate.bootstrap", "must be >= 0")
    need(0 < e.ci_level < 1, "evaluate.ci_level", "must be in (0, 1)")
    need(0 < c.border < 0.5, "cam.border", "must be in (0, 0.5)")
    need(0 <= d.crop_border < 0.5, "data.crop_border", f"must be in [0, 0.5), got {d.crop_border}")
    k = cfg.controls
    need(bool(k.folds) and all(0 <= f < s.n_folds for f in k.folds) and len(set(k.folds)) == len(k.folds),
         "controls.folds", f"must list distinct folds in 0..{s.n_folds - 1}, got {k.folds}")
    need(k.epochs is None or k.epochs >= 1, "controls.epochs", "must be >= 1 or null")
    need(0 < k.border < 0.5, "controls.border", f"must be in (0, 0.5), got {k.border}")
    need(c.n_examples >= 1 and c.road_samples >= 0 and c.batch_size >= 1, "cam", "counts must be positive")


def _check_derived(cfg: StudyConfig, task: str, source: str, where: str) -> None:
    key = f"derived_tasks.{task}"
    if task not in cfg.tasks:
        raise ConfigError(f"{where}: {key}: unknown task {task!r} (known: {sorted(cfg.tasks)})")
    if source not in cfg.tasks or source == task:
        raise ConfigError(f"{where}: {key} = {source!r} must name another task (known: {sorted(cfg.tasks)})")
    if source in cfg.derived_tasks:
        raise ConfigError(f"{where}: {key} = {source!r} is itself derived (derived_tasks.{source}); name a task "
                          "that trains its own models")
    owner = {lab: cls for cls, labels in cfg.tasks[task].items() for lab in labels}
    mine = {lab for labels in cfg.tasks[source].values() for lab in labels}
    for cls, labels in cfg.tasks[source].items():
        outside = [lab for lab in labels if lab not in owner]
        if outside:
            raise ConfigError(f"{where}: {key}: label {outside[0]!r} of tasks.{source}.{cls} is in no class of "
                              f"task {task}, so {task} could not use {source}'s images")
        split = sorted({owner[lab] for lab in labels})
        if len(split) > 1:
            raise ConfigError(f"{where}: {key}: tasks.{source}.{cls} ({labels}) is split across {task}'s classes "
                              f"{split}; each of {source}'s classes must lie inside one class of {task}")
    missing = sorted(set(owner) - mine)
    if missing:
        raise ConfigError(f"{where}: {key}: label {missing[0]!r} of task {task} is not in task {source}, whose "
                          f"images and models {task} would reuse (add it there or drop it from {task})")
