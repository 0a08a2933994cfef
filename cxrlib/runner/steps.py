"""The python steps of the job table (run in the job's worker process, called as ``step(job, ctx)``).

Imported by the runner before it forks workers, so the heavy imports here are paid once per run."""

from __future__ import annotations

from .. import io
from ..data.splits import build_splits, write_splits
from ..errors import ArtifactError
from ..evaluate import fold_metrics as score, json_safe, read_predictions
from .jobs import Job


def make_splits(job: Job, ctx) -> None:
    """Build the task's folds from the data root and write ``<task>/splits.csv`` and ``<task>/quality.csv``."""
    cfg = ctx.config()
    result = build_splits(cfg, job.task, progress=False)
    task_dir = ctx.run_dir / job.task
    # quality first: splits.csv is what training reads, so it appears last
    io.write_csv(task_dir / "quality.csv", result.quality)
    write_splits(task_dir / "splits.csv", result.splits)


def fold_metrics(job: Job, ctx) -> None:
    """Score the fold's test predictions (``cxrlib.evaluate.fold_metrics``) into ``fold<k>/metrics.json``."""
    fold_dir = ctx.run_dir / job.task / f"fold{job.fold}"
    path = fold_dir / "predictions.csv"
    classes = ctx.config().task_classes(job.task)
    frame = read_predictions(path, classes)
    if "split" not in frame.columns or not (frame["split"] == "test").any():
        raise ArtifactError(f"{path}: no test rows (split == 'test')")
    io.write_json(fold_dir / "metrics.json", json_safe({"fold": job.fold, **score(frame, classes)}))

