"""The python steps of the job table (run in the job's worker process, called as ``step(job, ctx)``).

Imported by the runner before it forks workers, so the heavy imports here are paid once per run."""

from __future__ import annotations

from .. import io
from ..data.relabel import relabel_splits
from ..data.splits import build_splits, read_splits, write_splits
from ..errors import ArtifactError
from ..evaluate import read_predictions
from ..evaluate.summary import write_fold_metrics as write_metrics
from ..layout import RunLayout
from .jobs import Job


def make_splits(job: Job, ctx) -> None:
    """Build the task's folds from the data root and write its splits and data-quality table."""
    cfg = ctx.config()
    result = build_splits(cfg, job.task, progress=False)
    task = RunLayout(ctx.run_dir).task(job.task)
    # quality first: the splits are what training reads, so they appear last
    io.write_csv(task.quality, result.quality)
    write_splits(task.splits, result.splits)


def derive_splits(job: Job, ctx) -> None:
    """A derived task's splits: its source task's rows and folds, each target mapped to the class holding it."""
    cfg = ctx.config()
    layout = RunLayout(ctx.run_dir)
    source = layout.task(cfg.source_task(job.task))
    task = layout.task(job.task)
    splits = relabel_splits(read_splits(source.splits), cfg, job.task, where=str(source.splits))
    if not source.quality.is_file():
        raise ArtifactError(f"{source.quality}: missing beside {source.splits.name}; remake task "
                            f"{cfg.source_task(job.task)}'s splits (its splits job writes both)")
    io.write_bytes(task.quality, source.quality.read_bytes())
    write_splits(task.splits, splits)


def write_fold_metrics(job: Job, ctx) -> None:
    """Score the fold's test predictions into its ``metrics.json`` (``cxrlib.evaluate.summary``)."""
    path = RunLayout(ctx.run_dir).fold(job.task, job.fold).predictions
    classes = ctx.config().task_classes(job.task)
    frame = read_predictions(path, classes)
    if "split" not in frame.columns or not (frame["split"] == "test").any():
        raise ArtifactError(f"{path}: no test rows (split == 'test')")
    write_metrics(ctx.run_dir, job.task, job.fold, frame, classes)
