"""``--sweep KEY=V1,V2``: the study once per parameter combination, as sub-runs under ``<run>/sweep/``.

Sub-runs share the image cache (``data.cache_dir``) and, when no swept key changes the data or the folds, the
splits: the first sub-run makes them and the others start from a copy (identical by construction, and the
comparison notebook checks the data fingerprints agree). Each sub-run is an ordinary run folder, resumable like
any; the comparison notebook (07) is rendered into the parent run folder afterwards.
"""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from ..layout import RunLayout

#: Keys whose value changes the images or the folds: sub-runs that sweep them cannot share splits.
DATA_KEYS = ("data.", "split.", "tasks")


def parse_sweeps(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["model.arch=resnet18,resnet50"]`` → ``[("model.arch", ["resnet18", "resnet50"])]``."""
    out = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not items:
            raise ConfigError(f"--sweep {spec!r}: expected KEY=VALUE1,VALUE2 (e.g. model.arch=resnet18,resnet50)")
        if any(k == key.strip() for k, _ in out):
            raise ConfigError(f"--sweep {key.strip()}: given twice")
        out.append((key.strip(), items))
    return out


def combinations(sweeps: Sequence[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination as a list of ``KEY=VALUE`` overrides, in a fixed order."""
    keys = [k for k, _ in sweeps]
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*(v for _, v in sweeps))]


def slug(overrides: Sequence[str]) -> str:
    """A folder name for one combination, e.g. ``model.arch-resnet18_train.image_size-128``."""
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", o.replace("=", "-")) for o in overrides)


def shares_splits(sweeps: Sequence[tuple[str, list[str]]]) -> bool:
    return not any(key.startswith(DATA_KEYS) for key, _ in sweeps)


def seed_splits(source: Path, target: Path, tasks: Sequence[str]) -> list[str]:
    """Copy each task's splits and quality table from one sub-run to another that has none yet."""
    copied = []
    for task in tasks:
        src, dst = RunLayout(source).task(task), RunLayout(target).task(task)
        if src.splits.exists() and not dst.splits.exists():
            dst.dir.mkdir(parents=True, exist_ok=True)
            if src.quality.exists():
                shutil.copy2(src.quality, dst.quality)
            shutil.copy2(src.splits, dst.splits)  # last: the splits mark the job complete
            copied.append(task)
    return copied
