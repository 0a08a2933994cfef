"""overhead = study wall seconds / the sum of every fold's training epoch seconds (history.csv ``seconds``).

Usage: python bench/study_overhead.py RESULTS/RUN WALL_SECONDS   (bench/study_wall.sh calls it last)
"""

from __future__ import annotations

import sys

import pandas as pd

from cxrlib import io
from cxrlib.layout import RunLayout


def training_seconds(run_dir: str) -> float:
    layout = RunLayout(run_dir)
    record = io.read_json(layout.record)
    n_folds = int(record["params"]["split"]["n_folds"])
    total = 0.0
    for task in record.get("tasks", []):
        for fold in layout.task(task).folds(n_folds):
            if fold.history.exists():
                total += float(pd.read_csv(fold.history)["seconds"].sum())
    return total


def main() -> None:
    run_dir, wall = sys.argv[1], float(sys.argv[2])
    train = training_seconds(run_dir)
    print(f"training_epoch_s={train:.1f}")
    print(f"overhead={wall / train:.2f}" if train else "overhead=nan (no training history found)")


if __name__ == "__main__":
    main()
