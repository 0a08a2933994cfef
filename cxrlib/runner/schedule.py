"""Running a job table: dependency order, resume (skip complete, up-to-date jobs), failure isolation,
a local pool of worker processes, progress bar and run.json updates."""

from __future__ import annotations

import glob
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Sequence

from ..cores import usable_cores
from ..kernel_fork import KernelForkServer, notebook_imports
from ..layout import RunLayout
from .execute import (JobContext, Worker, clean_temps, collect, export_html, html_path, job_env, remove_outputs,
                      spawn_job, thread_share)
from .jobs import Job, is_complete, is_stale, missing_outputs
from .state import RunRecord, now

log = logging.getLogger(__name__)

#: Outcome statuses of one invocation ("uptodate": complete outputs found, nothing run).
DONE, UPTODATE, FAILED, SKIPPED = "done", "uptodate", "failed", "skipped"
STOP_GRACE_S = 20.0  # a stopped run waits this long for its workers to end, then kills them


@dataclass
class Outcome:
    status: str
    note: str = ""
    seconds: float | None = None


@dataclass
class RunResult:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    interrupted: str | None = None  # the signal's name when the run was stopped

    @property
    def ok(self) -> bool:
        return self.interrupted is None and all(o.status in (DONE, UPTODATE) for o in self.outcomes.values())


def count_gpus() -> list[str]:
    """Visible GPU ids (honours CUDA_VISIBLE_DEVICES), counted by torch in a child process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    if sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*") and not os.path.exists("/dev/kfd"):
        return []  # no NVIDIA or ROCm device nodes: no need to start torch (~1.5 s) to count none
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, timeout=120)
        n = int(out.stdout.strip() or 0)
    except (OSError, subprocess.SubprocessError, ValueError):
        n = 0
    return [str(i) for i in range(n)]


def preload(jobs: Sequence[Job]) -> None:
    """Import papermill, nbconvert and the python steps' modules once here, so that forked workers start
    working at once instead of each importing them again (these imports start no Python threads)."""
    if any(job.notebook for job in jobs):
        import nbconvert  # noqa: F401
        import papermill  # noqa: F401
    for module in {step.partition(":")[0] for job in jobs for step in job.steps if isinstance(step, str)}:
        importlib.import_module(module)


#: With several jobs at once, ready jobs start in this order of kinds (then in table order): what others wait on,
#: then the longest, so that short jobs fill the end instead of one long job running on alone.
START_ORDER = ("explore", "splits", "controls", "train", "gradcam", "evaluate", "summary")


def start_priority(job: Job) -> int:
    return START_ORDER.index(job.kind) if job.kind in START_ORDER else len(START_ORDER)


def log_path(job: Job, run_dir: Path) -> Path:
    return RunLayout(run_dir).logs / f"{job.slug}.log"


def kernel_server(ctx: JobContext, notebook_jobs: Sequence[Job]) -> KernelForkServer | None:
    """Start the kernel fork server for ``notebook_jobs`` (at least two: for one the imports cost the same), or
    None when the kernel spec is not ipykernel's or the server cannot start."""
    if not ctx.fork_kernels or len(notebook_jobs) < 2:
        return None
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        argv = KernelSpecManager().get_kernel_spec(ctx.kernel_name).argv
        modules = notebook_imports(sorted({Path(ctx.notebooks_dir) / job.notebook for job in notebook_jobs
                                           if (Path(ctx.notebooks_dir) / job.notebook).exists()}))
    except Exception as exc:  # the jobs start their own kernels, and report a missing kernel or notebook
        log.warning("no kernel fork server (%s: %s)", type(exc).__name__, exc)
        return None
    server = KernelForkServer(argv, modules, log_file=RunLayout(ctx.run_dir).logs / "kernel-fork-server.log")
    return server if server.start() else None


def run_jobs(jobs: Sequence[Job], ctx: JobContext, selected: Sequence[int] | None = None, *, parallel: int = 1,
             force: bool = False, record: RunRecord | None = None, progress: bool = True,
             gpus: Sequence[str] | None = None) -> RunResult:
    """Run the ``selected`` jobs (indices into ``jobs``; all by default) in dependency order.

    A job whose outputs all exist and are newer than its dependencies' outputs is left alone (unless
    ``force``). A stale job (a dependency redone in this run or newer than its outputs or scratch files; for
    a job that runs after failures also a dependency that failed or was skipped) loses its outputs and scratch and starts afresh;
    an interrupted job that is not stale resumes with its scratch files. A failed job makes its hard
    dependants ``skipped``; independent jobs go on. Dependencies outside the selection must already be
    complete, or the dependant is skipped.
    """
    from tqdm import tqdm

    run_dir = Path(ctx.run_dir)
    by_id = {job.id: job for job in jobs}
    index = {job.id: i for i, job in enumerate(jobs)}
    order = [jobs[i] for i in sorted(set(range(len(jobs)) if selected is None else selected))]
    chosen = {job.id for job in order}
    parallel = max(1, parallel)
    if gpus is None:
        gpus = count_gpus() if parallel > 1 else []
    ncores = usable_cores()
    retain_memory = ctx.config().train.retain_memory
    preload(order)
    result = RunResult()
    ran: set[str] = set()
    pending = list(order)
    running: dict[str, Worker] = {}
    free = list(range(parallel))
    tqdm.monitor_interval = 0  # no monitor thread: workers are forked from this process
    bar = tqdm(total=len(order), unit="job", desc=run_dir.name, disable=not progress, file=sys.stderr,
               dynamic_ncols=True)

    def say(text: str) -> None:
        if progress:
            bar.write(text, file=sys.stderr)

    def note(job: Job, **fields) -> None:
        if record is not None:
            record.set_job(job.id, **fields)

    def finish(job: Job, outcome: Outcome) -> None:
        result.outcomes[job.id] = outcome
        bar.update(1)

    def blocker(job: Job) -> str | None:
        """'wait' while a dependency is unfinished, a reason when the job cannot run, None when ready."""
        if any(dep in chosen and dep not in result.outcomes for dep in job.after):
            return "wait"
        for dep in job.depends:
            if dep in chosen:
                if dep not in result.outcomes:
                    return "wait"
                if result.outcomes[dep].status in (FAILED, SKIPPED) and not job.after_failures:
                    return f"dependency {dep} {result.outcomes[dep].status}"
            elif not job.after_failures and not is_complete(by_id[dep], run_dir):
                missing = missing_outputs(by_id[dep], run_dir)[0]
                return f"dependency {dep} not selected and incomplete ({missing} missing)"
        return None

    def changed_inputs(job: Job) -> bool:
        """True when this run changed (or, for a job that runs after failures, failed to remake) an input of ``job``: a hard job
        reruns after a dependency was redone; a job that runs after failures after any dependency outcome other than up to date,
        since a failed or skipped dependency has deleted or kept old outputs the job would otherwise reuse."""
        if job.after_failures:
            return any(dep in result.outcomes and result.outcomes[dep].status != UPTODATE for dep in job.depends)
        return any(dep in ran for dep in job.depends)

    # Started now, so that its imports overlap the first jobs (the splits' serial stretches): notebooks that will
    # run, as far as can be told before the run (complete ones may still turn stale, which only costs a server).
    server = kernel_server(ctx, [j for j in order if j.notebook and (force or not is_complete(j, run_dir))])

    def context_for(job: Job) -> JobContext:
        return replace(ctx, kernel_server=server.path) if server is not None and job.notebook else ctx

    def start(job: Job, slot: int, threads: int | None) -> None:
        log = log_path(job, run_dir)
        log.unlink(missing_ok=True)
        code = record.git if record is not None else {}
        note(job, status="running", start=now(), end=None, seconds=None, error=None,
             log=str(log.relative_to(run_dir)), pid=os.getpid(), git_commit=code.get("commit"),
             git_dirty=code.get("dirty"), threads=threads)
        say(f"[{index[job.id]}] {job.id}: started (log {log})")
        env = job_env(slot, parallel, gpus, ncores, threads, retain_memory)
        running[job.id] = spawn_job(job, context_for(job), env, log, slot)

    def reap(worker: Worker, interrupted: str | None = None, killed: bool = False) -> None:
        status, error = collect(worker)
        if killed:  # our SIGKILL, not the kernel's out-of-memory killer
            error = f"interrupted by {interrupted}: still running {STOP_GRACE_S:g} s later, killed"
        elif interrupted and status == FAILED:
            error = f"interrupted by {interrupted} ({error})"
        job = worker.job
        seconds = round(time.monotonic() - worker.started, 2)
        free.append(worker.slot)
        del running[job.id]
        rendered = None
        if job.rendered:
            out = run_dir / job.rendered
            kept = out if status == DONE else out.with_name(out.stem + ".failed.ipynb")
            rendered = str(kept.relative_to(run_dir)) if kept.exists() else None
        note(job, status=status, end=now(), seconds=seconds, error=error or None, notebook=rendered)
        if status == DONE:
            ran.add(job.id)
        say(f"[{index[job.id]}] {job.id}: {status} in {seconds:.1f} s" + (f": {error}" if error else ""))
        finish(job, Outcome(status, error, seconds))

    def step_pending() -> None:
        starting: list[Job] = []
        for job in sorted(pending, key=start_priority) if parallel > 1 else list(pending):
            reason = blocker(job)
            if reason == "wait":
                continue
            if reason is not None:
                pending.remove(job)
                note(job, status=SKIPPED, error=reason, end=now())
                say(f"[{index[job.id]}] {job.id}: skipped ({reason})")
                finish(job, Outcome(SKIPPED, reason))
                continue
            complete = is_complete(job, run_dir)
            stale = changed_inputs(job) or is_stale(job, by_id, run_dir)
            if complete and not stale and not force:
                pending.remove(job)
                if ctx.html and job.rendered and not html_path(run_dir / job.rendered).exists():
                    try:
                        export_html(run_dir / job.rendered)
                    except Exception as exc:  # a missing HTML copy must not stop the run
                        log.warning("%s: could not export to HTML (%s: %s)", run_dir / job.rendered,
                                    type(exc).__name__, exc)
                if record is not None:
                    entry = (record.read() or {}).get("jobs", {}).get(job.id, {})
                    if entry.get("status") != DONE:
                        note(job, status=DONE, error=None, note="outputs found complete")
                finish(job, Outcome(UPTODATE, "outputs complete"))
                continue
            if len(starting) == len(free):
                continue
            pending.remove(job)
            if force or stale:
                remove_outputs(job, run_dir)
            clean_temps(job, run_dir)
            starting.append(job)
        threads = thread_share(ncores, parallel, alone=len(starting) == 1 and not running)
        for job in starting:
            start(job, free.pop(0), threads)

    with _StopSignals() as stop:
        try:
            while (pending or running) and not stop.names:
                step_pending()
                if stop.names:
                    break
                if running:
                    ready = wait([w.process.sentinel for w in running.values()] + [stop.wakeup])
                    stop.drain()
                    for worker in [w for w in list(running.values()) if w.process.sentinel in ready]:
                        reap(worker)
                elif pending:
                    raise RuntimeError(f"job table deadlock: {[j.id for j in pending]} cannot start")
            if stop.names:
                result.interrupted = stop.names[0]
                for worker in running.values():
                    worker.process.terminate()
                deadline = time.monotonic() + STOP_GRACE_S
                for worker in list(running.values()):
                    worker.process.join(max(0.1, deadline - time.monotonic()))
                    killed = worker.process.is_alive()
                    if killed:
                        worker.process.kill()
                    reap(worker, interrupted=result.interrupted, killed=killed)
        finally:
            bar.close()
            if server is not None:
                server.stop()
    return result


class _StopSignals:
    """SIGTERM / SIGINT only note their name and wake the scheduler's wait (a self-pipe), so the run stops
    between steps, never halfway through starting a worker or writing run.json."""

    def __init__(self):
        self.names: list[str] = []
        self._previous: dict = {}
        self._wakeup_previous = -1
        self._active = threading.current_thread() is threading.main_thread()
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)

    @property
    def wakeup(self) -> int:
        return self._read

    def drain(self) -> None:
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def _note(self, signum, frame) -> None:
        self.names.append(signal.Signals(signum).name)

    def __enter__(self) -> "_StopSignals":
        if self._active:
            self._wakeup_previous = signal.set_wakeup_fd(self._write)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        if self._active:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self._wakeup_previous)
        os.close(self._read)
        os.close(self._write)
