"""Shortcut controls (issue #12): can the labels be learnt without anatomy, and do sources leave fingerprints?

``run_controls`` retrains the study's network, on the study's folds (``controls.folds``), on images whose centre
(``border_only``), border (``centre_only``) or lungs (``lungs_masked``, where masks exist) are replaced by a
constant (``masks``), and to predict the source within each class (``source_probe``); ``full`` is the study's
own fold models on the same test folds. With ``evaluate.external`` each control's models also score the
external images, masked the same way. ``report`` writes ``<task>/controls/controls.json`` with the class x source
contingency and Cramér's V, and makes the table and a sentence per control.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import StudyConfig
from ..data.splits import read_splits
from ..layout import RunLayout
from .masks import CONTROLS
from .report import build_report, control_sentences, controls_table, cramers_v, read_controls, write_controls
from .run import ControlRunner


def run_controls(cfg: StudyConfig, run_dir: str | os.PathLike, task: str, progress: bool = False) -> dict[str, Any]:
    """Run every control of ``task`` (finished control rounds are reused), write and return ``controls.json``."""
    entries = ControlRunner(cfg, run_dir, task, progress).run()
    splits = read_splits(RunLayout(run_dir).task(task).splits)
    params = {"folds": list(cfg.controls.folds), "epochs": cfg.controls.epochs or cfg.train.epochs,
              "border": cfg.controls.border, "fill": cfg.controls.fill, "derived_from": cfg.source_task(task)}
    report = build_report(entries, splits, params)
    write_controls(run_dir, task, report)
    return report


__all__ = ["CONTROLS", "ControlRunner", "build_report", "control_sentences", "controls_table", "cramers_v",
           "read_controls", "run_controls", "write_controls"]
