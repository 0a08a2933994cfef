"""Submit the job table to a cluster through submitit: an array per stage (per wave, where a job depends on
another of its stage), arrays chained by dependencies.

Each submitted task runs ``python -m cxrlib.runner <same arguments> --job-index I``, so a cluster job does exactly
what a local run does for job I (papermill, python steps, ``run.json`` under its file lock). Jobs whose outputs
are complete and up to date are not submitted: a rerun resumes like a local one.

``slurm``: stages are submitted at once; a stage waits for the previous one with ``afterok`` (the summary with
``afterany``, so the page is rendered after failures too). ``submitit-local`` (one machine, and the tests) has no
scheduler dependencies: each stage is submitted when the previous one has finished.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ConfigError
from ..layout import RunLayout
from .jobs import STAGES, Job, is_complete, is_stale

EXECUTORS = ("slurm", "submitit-local")
SUMMARY_STAGE = STAGES.index("summary")


@dataclass(frozen=True)
class ClusterOptions:
    """Resources of every submitted task (None: the cluster's default)."""

    partition: str | None = None
    account: str | None = None
    time_min: int = 240
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: int | None = None

    def parameters(self) -> dict[str, Any]:
        """submitit's ``update_parameters`` keywords (``slurm_`` ones are ignored by the local executor)."""
        out: dict[str, Any] = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_job}
        if self.gpus_per_job:
            out["gpus_per_node"] = self.gpus_per_job
        if self.mem_gb:
            out["mem_gb"] = self.mem_gb
        if self.partition:
            out["slurm_partition"] = self.partition
        if self.account:
            out["slurm_account"] = self.account
        return out


@dataclass
class Submission:
    """What was submitted: job index → cluster job, per stage."""

    stages: list[dict[int, Any]] = field(default_factory=list)

    def job_ids(self) -> dict[int, str]:
        return {i: str(job.job_id) for stage in self.stages for i, job in stage.items()}


def pending(jobs: Sequence[Job], selected: Sequence[int], run_dir: Path, force: bool) -> list[int]:
    """The selected job indices that still have work: missing or stale outputs (all with ``force``)."""
    by_id = {job.id: job for job in jobs}
    return [i for i in selected
            if force or not is_complete(jobs[i], run_dir) or is_stale(jobs[i], by_id, run_dir)]


def task_command(argv: Sequence[str], index: int) -> list[str]:
    """The command one cluster task runs: this run's arguments, restricted to job ``index``."""
    return [sys.executable, "-m", "cxrlib.runner", *argv, "--job-index", str(index)]


def make_executor(kind: str, run_dir: Path, options: ClusterOptions):
    """A submitit executor writing its logs under ``<run>/logs/submitit``."""
    import submitit

    folder = RunLayout(run_dir).logs / "submitit"
    if kind == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    elif kind == "submitit-local":
        executor = submitit.LocalExecutor(folder=folder)
    else:
        raise ConfigError(f"--executor {kind!r}: one of local, {', '.join(EXECUTORS)}")
    executor.update_parameters(name="cxr-study", **options.parameters())
    return executor


def waves(jobs: Sequence[Job], todo: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``todo`` as (stage, indices) arrays in submission order: each stage split into waves, a job one wave
    after the latest of its dependencies in the same stage (the first task's splits before the others')."""
    index = {job.id: i for i, job in enumerate(jobs)}
    wave: dict[int, int] = {}
    for i in sorted(todo):  # dependencies are listed before their dependants
        same = [index[d] for d in jobs[i].depends + jobs[i].after if d in index and jobs[index[d]].stage == jobs[i].stage]
        wave[i] = 1 + max((wave[d] for d in same if d in wave), default=-1)
    keys = sorted({(jobs[i].stage, wave[i]) for i in todo})
    return [(stage, [i for i in sorted(todo) if (jobs[i].stage, wave[i]) == (stage, w)]) for stage, w in keys]


def submit(jobs: Sequence[Job], todo: Sequence[int], argv: Sequence[str], executor, wait_each_stage: bool,
           echo: Callable[[str], None] = print) -> Submission:
    """Submit the ``todo`` jobs stage by stage (an array per wave of a stage, see :func:`waves`).

    With ``wait_each_stage`` (no scheduler dependencies) an array is submitted once the previous one has ended;
    otherwise each array depends on the previous array's tasks (``afterok``; the summary ``afterany``).
    """
    import submitit

    result = Submission()
    previous: list[Any] = []
    for stage, indices in waves(jobs, todo):
        if previous and not wait_each_stage:
            kind = "afterany" if stage == SUMMARY_STAGE else "afterok"
            executor.update_parameters(
                slurm_additional_parameters={"dependency": f"{kind}:" + ":".join(str(j.job_id) for j in previous)})
        with executor.batch():
            submitted = {i: executor.submit(submitit.helpers.CommandFunction(task_command(argv, i))) for i in indices}
        result.stages.append(submitted)
        echo(f"stage {STAGES[stage]}: submitted jobs {indices} as "
             f"{', '.join(str(j.job_id) for j in submitted.values())}")
        if wait_each_stage:
            for i, job in submitted.items():
                state = _wait(job)
                echo(f"  job {i} ({jobs[i].id}): {state}")
        previous = list(submitted.values())
    return result


def _wait(job) -> str:
    """Wait for a task; its failure is recorded in run.json by the task itself, so it is reported, not raised."""
    try:
        job.result()
        return "done"
    except Exception as exc:  # noqa: BLE001 - a failed task's reason is in its log and run.json
        return f"failed ({type(exc).__name__}; log: {job.paths.stderr})"
