"""Tiny synthetic runs for the training tests: a learnable bright band per class, 40 px PNGs, splits.csv."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlib.config import load_config
from cxrlib.data.phash import HEX_LEN
from support import images
from cxrlib.data.splits import SPLIT_COLUMNS, write_splits

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"
CLASSES = ("normal", "viral_pneumonia", "covid19")


def make_run(root: Path, per_class: int = 8, size: int = 40, n_folds: int = 5, task: str = "multiclass",
             seed: int = 0, paint=None, source=None) -> Path:
    """Write per_class images per class and ``<root>/run/<task>/splits.csv``; returns the run dir. For
    ``task="binary"`` the targets are the default binary task's classes (other, covid19).

    ``paint(rng, size, class_index, i)``: the image (default ``images.band``); ``source(class_index, i)``: its
    source name (default ``synth``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for ci, cls in enumerate(CLASSES):
        for i in range(per_class):
            pixels = images.band(rng, size, ci) if paint is None else paint(rng, size, ci, i)
            path = images.write(root / "img" / f"{cls}_{i}.png", pixels)
            rows.append({"path": str(path), "label": cls, "source": "synth" if source is None else source(ci, i), "patient_id": f"{cls}{i}",
                         "group": f"{cls}{i}", "fold": i % n_folds,
                         "target": cls if task != "binary" or cls == "covid19" else "other",
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "phash": "0" * HEX_LEN,
                         "width": size, "height": size, "mask_path": ""})
    write_splits(root / "run" / task / "splits.csv", pd.DataFrame(rows, columns=list(SPLIT_COLUMNS)))
    return root / "run"


def smoke_config(tmp_path: Path, *overrides: str):
    return load_config(SMOKE, [f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu", *overrides])
