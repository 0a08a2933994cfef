"""overhead = study wall seconds / the machine time of every training epoch in the study.

Training epochs are those of every fold and of every shortcut control's model (history.csv ``seconds``); a
derived task's rounds (``derived_tasks``) trained nothing and repeat their source's history: they do not count.
An epoch that ran on ``threads`` of the ``cores`` (train.json timings; runs with ``--parallel`` share the cores
between jobs) counts ``seconds * threads / cores``: two folds trained side by side on one core each take twice
as long per epoch as one fold on both cores, and that is no extra training. For a run with one job at a time
this is the plain sum of epoch seconds. Also prints each stage's summed job seconds (run.json).

Usage: python bench/study_overhead.py RESULTS/RUN WALL_SECONDS   (bench/study_wall.sh calls it last)
"""

from __future__ import annotations

import sys
from collections import defaultdict

import pandas as pd

from cxrlib import io
from cxrlib.layout import FoldLayout, RunLayout, parse_fold_name
from cxrlib.train.derive import is_derived


def _trained_folds(layout: RunLayout, task: str, n_folds: int) -> list[FoldLayout]:
    t = layout.task(task)
    folds = t.folds(n_folds)
    if t.control_models.is_dir():
        for control in sorted(p for p in t.control_models.iterdir() if p.is_dir()):
            ks = [parse_fold_name(p.name) for p in control.iterdir()]
            folds += [t.control_fold(control.name, k) for k in sorted(k for k in ks if k is not None)]
    return folds


def training_seconds(run_dir: str) -> tuple[float, float]:
    """(sum of epoch seconds, the same weighted by each training's share of the cores)."""
    layout = RunLayout(run_dir)
    record = io.read_json(layout.record)
    n_folds = int(record["params"]["split"]["n_folds"])
    plain = weighted = 0.0
    for task in record.get("tasks", []):
        for fold in _trained_folds(layout, task, n_folds):
            if not fold.history.exists() or is_derived(fold.train_info):  # a derived round's history is its source's
                continue
            seconds = float(pd.read_csv(fold.history)["seconds"].sum())
            timings = io.read_json(fold.train_info).get("timings", {}) if fold.train_info.exists() else {}
            share = min(1.0, timings["threads"] / timings["cores"]) if "threads" in timings else 1.0
            plain += seconds
            weighted += seconds * share
    return plain, weighted


def stage_seconds(run_dir: str) -> dict[str, float]:
    jobs = io.read_json(RunLayout(run_dir).record).get("jobs", {})
    out: dict[str, float] = defaultdict(float)
    for job_id, entry in jobs.items():
        out[job_id.split(":")[0]] += float(entry.get("seconds") or 0)
    return dict(out)


def main() -> None:
    run_dir, wall = sys.argv[1], float(sys.argv[2])
    for stage, seconds in stage_seconds(run_dir).items():
        print(f"job_s[{stage}]={seconds:.1f}")
    plain, weighted = training_seconds(run_dir)
    print(f"training_epoch_s={plain:.1f}")
    print(f"training_epoch_core_s={weighted:.1f}  (epoch seconds x threads / cores)")
    print(f"overhead={wall / weighted:.2f}" if weighted else "overhead=nan (no training history found)")


if __name__ == "__main__":
    main()
