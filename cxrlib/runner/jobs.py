"""The study's job table: a deterministic, stage-ordered list of jobs with their outputs and dependencies.

Stages keep SLURM array ranges contiguous: 0 prepare (splits, exploration), 1 train folds,
2 evaluate + Grad-CAM, 3 shortcut controls (``controls.enabled``), 4 summary. A job is complete when all its ``outputs`` exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from ..config import StudyConfig
from ..errors import ConfigError
from ..layout import NB_CONTROLS, NB_EVALUATE, NB_EXPLORE, NB_GRADCAM, NB_SUMMARY, NB_TRAIN, RunLayout, fold_name

#: A python step: a callable or a "module:function" reference, called as ``step(job, ctx)``.
Step = Union[str, Callable[..., Any]]

STAGES = ("prepare", "train", "evaluate", "controls", "summary")

SPLITS_STEP = "cxrlib.runner.steps:make_splits"
DERIVED_SPLITS_STEP = "cxrlib.runner.steps:derive_splits"
FOLD_METRICS_STEP = "cxrlib.runner.steps:write_fold_metrics"


@dataclass(frozen=True)
class Job:
    """One unit of work. Paths in ``outputs`` and ``rendered`` are relative to the run folder."""

    id: str
    kind: str
    stage: int
    outputs: tuple[str, ...]
    depends: tuple[str, ...] = ()
    #: jobs to start after, whatever their outcome, for order only (a cache they fill): unlike ``depends`` they
    #: never make this job stale or skipped, so adding a task to a finished run leaves the old task's jobs alone
    after: tuple[str, ...] = ()
    notebook: str | None = None  # source notebook file name, looked up in the notebooks folder
    rendered: str | None = None  # where the executed notebook goes
    parameters: dict[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()  # python steps, run after the notebook succeeded (or alone)
    task: str | None = None
    fold: int | None = None
    after_failures: bool = False  # runs once its dependencies have finished, whatever their outcome
    #: outputs that dependants are compared against for staleness (default: all); e.g. train.json, not the
    #: fold's metrics.json, which the evaluation rewrites
    stamp_outputs: tuple[str, ...] = ()
    #: files that are not outputs but belong to an attempt (a resume checkpoint): kept when an interrupted job
    #: is resumed, deleted with the outputs when it is redone from scratch (--force, or an input changed)
    scratch: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """A file-name-safe form of the id (for log files)."""
        return self.id.replace(":", "-").replace("/", "-")


@dataclass(frozen=True)
class RunSpec:
    """What one invocation works on: the config, where the run lives and how notebooks get their params."""

    cfg: StudyConfig
    run_dir: Path
    params_file: str | None
    overrides: tuple[str, ...]
    tasks: tuple[str, ...]

    @property
    def folds(self) -> tuple[int, ...]:
        return tuple(range(self.cfg.split.n_folds))


def build_jobs(spec: RunSpec) -> list[Job]:
    """Return the full job table of a run, in a fixed order (the order ``--job-index`` refers to).

    Every output path comes from ``cxrlib.layout`` (relative to the run folder)."""
    for task in spec.tasks:
        spec.cfg.task_classes(task)  # raises ConfigError for an unknown task
    if not spec.tasks:
        raise ConfigError("no task selected (params: tasks)")
    for task in spec.tasks:
        source = spec.cfg.source_task(task)
        if source is not None and source not in spec.tasks[:spec.tasks.index(task)]:
            raise ConfigError(f"task {task} reuses {source}'s models (derived_tasks.{task}): select {source} "
                              f"before it (tasks_with_sources)")
    run_dir = str(Path(spec.run_dir).resolve())
    rel = RunLayout("")
    common = {"params_file": spec.params_file, "overrides": list(spec.overrides)}
    explore = rel.explore_notebook.as_posix()
    # The first task's splits job scans the data and runs the near-duplicate search (its cores alone); the
    # other tasks' splits and the exploration notebook, which groups the same images, read its caches.
    first = f"splits:{spec.tasks[0]}"
    jobs: list[Job] = []
    for task in spec.tasks:
        t = rel.task(task)
        source = spec.cfg.source_task(task)
        jobs.append(Job(
            id=f"splits:{task}", kind="splits", stage=0, task=task,
            # a derived task's splits are its source's rows and folds, relabelled
            steps=(SPLITS_STEP,) if source is None else (DERIVED_SPLITS_STEP,),
            depends=() if source is None else (f"splits:{source}",),
            after=() if task == spec.tasks[0] or source is not None else (first,),
            outputs=_posix(t.splits, t.quality), stamp_outputs=_posix(t.splits),
        ))
    jobs.append(Job(
        id="explore", kind="explore", stage=0, notebook=NB_EXPLORE, rendered=explore, after=(first,),
        outputs=(explore,), stamp_outputs=(explore,),
        parameters={"run_dir": run_dir, "task": spec.tasks[0], **common},
    ))
    for task in spec.tasks:
        for k in spec.folds:
            f = rel.fold(task, k)
            source = spec.cfg.source_task(task)  # a derived task's round needs its source's round
            jobs.append(Job(
                id=train_job_id(task, k), kind="train", stage=1, task=task, fold=k,
                depends=(f"splits:{task}",) + (() if source is None else (train_job_id(source, k),)),
                notebook=NB_TRAIN, rendered=f.notebook.as_posix(),
                parameters={"run_dir": run_dir, "task": task, "fold": k, **common},
                steps=(FOLD_METRICS_STEP,),
                # train.json is written last by training, metrics.json by the step after the notebook
                outputs=_posix(*f.artifacts, f.notebook, f.metrics),
                stamp_outputs=_posix(f.train_info), scratch=_posix(f.last_checkpoint),
            ))
    for task in spec.tasks:
        t = rel.task(task)
        folds = tuple(train_job_id(task, k) for k in spec.folds)
        jobs.append(Job(
            id=f"evaluate:{task}", kind="evaluate", stage=2, task=task, depends=folds,
            notebook=NB_EVALUATE, rendered=t.evaluate_notebook.as_posix(),
            parameters={"run_dir": run_dir, "task": task, **common},
            outputs=_posix(t.summary, t.evaluate_notebook), stamp_outputs=_posix(t.summary),
        ))
        jobs.append(Job(
            id=f"gradcam:{task}", kind="gradcam", stage=2, task=task, depends=folds,
            notebook=NB_GRADCAM, rendered=t.gradcam_notebook.as_posix(),
            parameters={"run_dir": run_dir, "task": task, "fold": "all", **common},
            outputs=_posix(t.cam_stats, t.cam_road, t.gradcam_notebook), stamp_outputs=_posix(t.cam_stats),
        ))
    finals = ("explore",) + tuple(f"{kind}:{task}" for task in spec.tasks for kind in ("evaluate", "gradcam"))
    if spec.cfg.controls.enabled:
        for task in spec.tasks:
            t = rel.task(task)
            # the control models train on the same rounds (controls.folds) and compare with those study folds
            jobs.append(Job(
                id=f"controls:{task}", kind="controls", stage=STAGES.index("controls"), task=task,
                depends=(f"splits:{task}",) + tuple(train_job_id(task, k) for k in spec.cfg.controls.folds)
                # a derived task's masked controls are its source's control models, regrouped
                + (() if spec.cfg.source_task(task) is None else (f"controls:{spec.cfg.source_task(task)}",)),
                notebook=NB_CONTROLS, rendered=t.controls_notebook.as_posix(),
                parameters={"run_dir": run_dir, "task": task, **common},
                outputs=_posix(t.controls, t.controls_notebook), stamp_outputs=_posix(t.controls),
                # the control models: resumed after an interruption, retrained when the study's folds change
                scratch=_posix(t.control_models),
            ))
        finals += tuple(f"controls:{task}" for task in spec.tasks)
    summary_nb = rel.summary_notebook.as_posix()
    jobs.append(Job(
        id="summary", kind="summary", stage=STAGES.index("summary"), depends=finals, after_failures=True, notebook=NB_SUMMARY,
        rendered=summary_nb, parameters={"run_dir": run_dir},  # the notebook writes index.html
        outputs=_posix(rel.summary_notebook, rel.index_html), stamp_outputs=_posix(rel.index_html),
    ))
    check_table(jobs)
    return jobs


def tasks_with_sources(cfg: StudyConfig, tasks: Sequence[str]) -> tuple[str, ...]:
    """``tasks`` with the source of every derived task (``derived_tasks``) added, each source before its tasks."""
    out: list[str] = []
    for task in tasks:
        source = cfg.source_task(task)
        if source is not None and source not in out:
            out.append(source)
        if task not in out:
            out.append(task)
    return tuple(out)


def train_job_id(task: str, fold: int) -> str:
    return f"train:{task}/{fold_name(fold)}"


def _posix(*paths: Path) -> tuple[str, ...]:
    return tuple(p.as_posix() for p in paths)


def check_table(jobs: Sequence[Job]) -> None:
    """Raise ValueError on duplicate ids, unknown dependencies or a dependency listed after its dependant."""
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:
            raise ValueError(f"job table: duplicate job id {job.id!r}")
        for dep in job.depends + job.after:
            if dep not in seen:
                raise ValueError(f"job table: {job.id} depends on {dep!r}, which is not listed before it")
        seen.add(job.id)


def stage_ranges(jobs: Sequence[Job]) -> list[tuple[str, int, int]]:
    """(stage name, first index, last index) for each stage present, e.g. for ``sbatch --array`` ranges."""
    out: list[tuple[str, int, int]] = []
    for i, job in enumerate(jobs):
        name = STAGES[job.stage]
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1], i)
        else:
            out.append((name, i, i))
    return out


def output_paths(job: Job, run_dir: str | os.PathLike) -> list[Path]:
    return [Path(run_dir) / rel for rel in job.outputs]


def scratch_paths(job: Job, run_dir: str | os.PathLike) -> list[Path]:
    return [Path(run_dir) / rel for rel in job.scratch]


def is_complete(job: Job, run_dir: str | os.PathLike) -> bool:
    """True when every declared output of ``job`` exists."""
    return all(p.exists() for p in output_paths(job, run_dir))


def missing_outputs(job: Job, run_dir: str | os.PathLike) -> list[Path]:
    return [p for p in output_paths(job, run_dir) if not p.exists()]


def is_stale(job: Job, by_id: dict[str, Job], run_dir: str | os.PathLike) -> bool:
    """True when an output or scratch file of ``job`` is older than an existing stamp output of a dependency
    (make-style); a stale scratch file means an interrupted attempt started on inputs that were remade since."""
    mine = [p.stat().st_mtime_ns for p in output_paths(job, run_dir) + scratch_paths(job, run_dir) if p.exists()]
    if not mine:
        return False
    theirs = [
        p.stat().st_mtime_ns
        for dep in job.depends
        for p in (Path(run_dir) / rel for rel in (by_id[dep].stamp_outputs or by_id[dep].outputs))
        if p.exists()
    ]
    return bool(theirs) and max(theirs) > min(mine)
