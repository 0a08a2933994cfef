"""bench/study_overhead.py: training machine time counts every fold and control epoch, weighted by its share of
the cores."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd

from cxrlib import io
from cxrlib.layout import RunLayout

BENCH = Path(__file__).resolve().parents[1] / "bench" / "study_overhead.py"


def _bench():
    spec = importlib.util.spec_from_file_location("study_overhead", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fold(fold, seconds, threads=None, cores=2):
    fold.history.parent.mkdir(parents=True, exist_ok=True)
    io.write_csv(fold.history, pd.DataFrame({"epoch": range(1, len(seconds) + 1), "seconds": seconds}))
    timings = {"fit_s": sum(seconds)} | ({"threads": threads, "cores": cores} if threads else {})
    io.write_json(fold.train_info, {"timings": timings})


def test_overhead_counts_folds_and_controls_by_their_share_of_the_cores(tmp_path, capsys):
    layout = RunLayout(tmp_path)
    io.write_json(layout.record, {"params": {"split": {"n_folds": 3}}, "tasks": ["binary"],
                                  "jobs": {"train:binary/fold0": {"seconds": 30}, "summary": {"seconds": 5}}})
    task = layout.task("binary")
    _fold(task.fold(0), [10, 10], threads=1)       # side by side with another job: half the machine
    _fold(task.fold(1), [8, 8, 4], threads=2)      # alone: the whole machine
    _fold(task.fold(2), [6])                       # an older run without thread counts: the whole machine
    _fold(task.control_fold("border_only", 0), [5, 5], threads=1)
    bench = _bench()
    assert bench.training_seconds(str(tmp_path)) == (56.0, 10 + 20 + 6 + 5)
    assert bench.stage_seconds(str(tmp_path)) == {"train": 30.0, "summary": 5.0}
    argv, sys.argv = sys.argv, ["study_overhead.py", str(tmp_path), "82"]
    try:
        bench.main()
    finally:
        sys.argv = argv
    assert capsys.readouterr().out.strip().splitlines()[-1] == "overhead=2.00"


def test_a_derived_tasks_rounds_and_controls_count_no_training(tmp_path):
    layout = RunLayout(tmp_path)
    io.write_json(layout.record, {"params": {"split": {"n_folds": 3}}, "tasks": ["multiclass", "binary"]})
    for k in range(3):
        _fold(layout.fold("multiclass", k), [10], threads=2)
        _fold(layout.fold("binary", k), [10], threads=2)  # the same history: derived from multiclass's round
        io.write_json(layout.fold("binary", k).train_info,
                      {"derived_from": {"task": "multiclass", "fold": k}, "timings": {"fit_s": 0.0}})
    _fold(layout.task("binary").control_fold("border_only", 0), [4], threads=2)
    io.write_json(layout.task("binary").control_fold("border_only", 0).train_info,
                  {"derived_from": {"task": "multiclass", "fold": 0}, "timings": {"fit_s": 0.0}})
    _fold(layout.task("binary").control_fold("source_probe_other", 0), [3], threads=2)  # trained by binary
    assert _bench().training_seconds(str(tmp_path)) == (33.0, 33.0)
