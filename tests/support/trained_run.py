"""A tiny really-trained run (smoke params, 3 folds of synthetic 40 px images, folds 0 and 1 trained for one
epoch, calibrated by temperature): for the prediction and export tests, which need real checkpoints and their own
predictions.csv."""

from __future__ import annotations

from pathlib import Path

from support.train_helpers import make_run, smoke_config

TASK = "multiclass"
TRAINED_FOLDS = (0, 1)


def make_trained_run(root: Path) -> Path:
    """Train folds 0 and 1 of a 3-fold synthetic run under ``root``; returns the run dir."""
    from cxrlib.train import train_fold

    run_dir = make_run(root, per_class=3, n_folds=3, task=TASK)
    cfg = smoke_config(root, "split.n_folds=3", "train.epochs=1", "evaluate.calibration=temperature")
    for k in TRAINED_FOLDS:
        train_fold(cfg, run_dir, TASK, k, progress=False)
    return run_dir
