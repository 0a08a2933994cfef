"""Executing one job: papermill for its notebook (rendered atomically, kept as ``*.failed.ipynb`` when it
fails), HTML export, then its python steps. ``spawn_job`` runs a job in a forked worker process with its
own log file and environment, so a crash or out-of-memory kill touches only that job."""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import io
from ..allocator import RETAIN_ENV
from ..config import StudyConfig, load_config
from ..cores import apply_job_env
from ..errors import ArtifactError
from ..kernel_fork import fork_kernel_manager
from ..lifetime import die_with_parent
from .jobs import Job, Step

KERNEL_NAME = "cxr-study"


@dataclass
class JobContext:
    """What every job of an invocation shares: where the run lives and how to rebuild its config."""

    run_dir: Path
    notebooks_dir: Path
    params_file: str | None = None
    overrides: tuple[str, ...] = ()
    kernel_name: str = KERNEL_NAME
    html: bool = True
    fork_kernels: bool = True  # the scheduler forks kernels from one pre-imported process (cxrlib.kernel_fork)
    kernel_server: str | None = None  # that process's socket, while it runs
    cwd: Path = field(default_factory=Path.cwd)
    _cfg: StudyConfig | None = field(default=None, repr=False)

    def config(self) -> StudyConfig:
        if self._cfg is None:
            self._cfg = load_config(self.params_file, self.overrides)
        return self._cfg


def failed_path(rendered: Path) -> Path:
    """Where the partly executed notebook of a failed run goes (``x.ipynb`` -> ``x.failed.ipynb``)."""
    return rendered.with_name(rendered.stem + ".failed.ipynb")


def html_path(notebook: Path) -> Path:
    return notebook.with_suffix(".html")


def side_files(job: Job, run_dir: Path) -> list[Path]:
    """Files a job leaves besides its outputs: the HTML export and the failed notebook (+ its HTML)."""
    if not job.rendered:
        return []
    out = Path(run_dir) / job.rendered
    return [html_path(out), failed_path(out), html_path(failed_path(out))]


def remove_outputs(job: Job, run_dir: Path) -> None:
    """Delete a job's outputs, side files and scratch files (before redoing it with --force or after an
    upstream change)."""
    for path in [Path(run_dir) / rel for rel in job.outputs + job.scratch] + side_files(job, run_dir):
        if path.is_dir():  # a scratch folder (the controls' models)
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def clean_temps(job: Job, run_dir: Path) -> None:
    """Remove temporary files that an interrupted earlier attempt left beside this job's outputs."""
    for path in [Path(run_dir) / rel for rel in job.outputs + job.scratch] + side_files(job, run_dir):
        if path.parent.is_dir():
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def resolve_step(step: Step) -> Callable[..., Any]:
    if callable(step):
        return step
    module, _, name = step.partition(":")
    return getattr(importlib.import_module(module), name)


def export_html(notebook: Path) -> Path:
    """Export a rendered notebook to HTML beside it (nbconvert's HTMLExporter)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    return io.write_text(html_path(notebook), body)


def run_notebook(job: Job, ctx: JobContext) -> Path:
    """Execute the job's notebook with papermill into its rendered path (atomically); return that path."""
    import papermill

    src = Path(ctx.notebooks_dir) / job.notebook
    if not src.exists():
        raise ArtifactError(f"{src}: notebook not found (needed by job {job.id})")
    out = Path(ctx.run_dir) / job.rendered
    failed = failed_path(out)
    forked = {"kernel_manager_class": fork_kernel_manager(ctx.kernel_server)} if ctx.kernel_server else {}
    with io.atomic_path(out) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not end in one of")
                papermill.execute_notebook(
                    str(src), str(tmp), parameters=job.parameters, kernel_name=ctx.kernel_name,
                    language="python", log_output=True, progress_bar=False, cwd=str(ctx.cwd),
                    shutdown_kernel="immediate",  # every cell has finished; a graceful stop only costs seconds
                    **forked,
                )
        except BaseException:
            if tmp.exists() and tmp.stat().st_size:
                io.write_bytes(failed, tmp.read_bytes())
                if ctx.html:
                    _try_export(failed)
            raise
    failed.unlink(missing_ok=True)
    html_path(failed).unlink(missing_ok=True)
    if ctx.html:
        export_html(out)
    return out


def _try_export(notebook: Path) -> None:
    try:
        export_html(notebook)
    except Exception:  # the job already failed; its notebook is kept even if it cannot be exported
        logging.getLogger(__name__).exception("could not export %s to HTML", notebook)


def execute_job(job: Job, ctx: JobContext) -> None:
    """Run ``job`` in this process: its notebook (if any), then its python steps. Raises on failure."""
    clean_temps(job, ctx.run_dir)
    if job.notebook:
        run_notebook(job, ctx)
    for step in job.steps:
        resolve_step(step)(job, ctx)


def describe_error(exc: BaseException) -> str:
    """One line saying why a job failed."""
    name = type(exc).__name__
    if name == "PapermillExecutionError":
        text = f"cell {getattr(exc, 'exec_count', '?')}: {exc.ename}: {exc.evalue}"
    elif name == "DeadKernelError":
        text = f"kernel died (killed, or out of memory?): {exc}"
    elif isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    else:
        text = f"{name}: {exc}"
    text = " ".join(str(text).split())
    return text if len(text) <= 400 else text[:397] + "..."


def describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by {sig}{hint}"
    return f"worker process exited with code {exitcode} without reporting"


def thread_share(ncores: int, parallel: int, alone: bool) -> int | None:
    """CPU threads for a job starting now: None (the libraries' default) when one job runs at a time; all
    cores for a job that starts with no other running or starting, else an equal share. A job keeps its share
    to the end, so one that started alone can overlap with the next by up to ``ncores // parallel`` threads."""
    if parallel == 1:
        return None
    return ncores if alone else max(1, ncores // parallel)


def job_env(slot: int, parallel: int, gpus: Sequence[str], cores: int, threads: int | None = None,
            retain_memory: bool = False) -> dict[str, str]:
    """Environment for the job in worker ``slot``: one GPU per slot (round robin), with several jobs at once
    ``threads`` CPU threads (default: an equal share of ``cores``), and with ``retain_memory``
    (``train.retain_memory``) glibc's settings that keep freed memory for reuse (``cxrlib.allocator``)."""
    env: dict[str, str] = {"CXR_PROGRESS": "0"}  # no live viewer under papermill: per-epoch log lines only
    if parallel > 1 and gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    if parallel > 1:
        n = str(threads or thread_share(cores, parallel, alone=False))
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, CXR_THREADS=n)
    if retain_memory:
        env.update(RETAIN_ENV)
    return env


class _Interrupt(KeyboardInterrupt):
    pass


def _raise_interrupt(signum, frame):
    raise _Interrupt(f"signal {signum}")


def _worker(job: Job, ctx: JobContext, env: dict[str, str], log_path: Path, conn, parent_pid: int) -> None:
    signal.set_wakeup_fd(-1)  # the runner's self-pipe is not this process's business
    signal.signal(signal.SIGTERM, _raise_interrupt)
    die_with_parent()  # SIGTERM when the runner dies
    signal.signal(signal.SIGINT, _raise_interrupt)
    code = 1
    try:
        if os.getppid() != parent_pid:  # the runner died before prctl took effect
            raise _Interrupt("runner gone")
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # (pytest may have replaced the streams)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                            format="%(asctime)s %(name)s %(levelname)s: %(message)s")
        os.environ.update(env)
        apply_job_env(env)
        print(f"== job {job.id} (pid {os.getpid()}) env {env}", file=sys.stderr, flush=True)
        execute_job(job, ctx)
        conn.send(("done", ""))
        code = 0
    except BaseException as exc:
        traceback.print_exc()
        try:
            conn.send(("failed", describe_error(exc)))
        except (OSError, ValueError):
            pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@dataclass
class Worker:
    job: Job
    process: Any
    conn: Any
    slot: int
    log: Path
    started: float = field(default_factory=time.monotonic)


def spawn_job(job: Job, ctx: JobContext, env: dict[str, str], log_path: Path, slot: int) -> Worker:
    """Start ``job`` in a worker process (fork where available) writing its live output to ``log_path``."""
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mpc = mp.get_context(method)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    recv, send = mpc.Pipe(duplex=False)
    proc = mpc.Process(target=_worker, args=(job, ctx, env, log_path, send, os.getpid()), name=f"job {job.id}")
    proc.start()
    send.close()
    return Worker(job, proc, recv, slot, log_path)


def collect(worker: Worker) -> tuple[str, str]:
    """(status, error) of a finished worker; reaps the process."""
    message = None
    try:
        if worker.conn.poll():
            message = worker.conn.recv()
    except (EOFError, OSError):
        message = None
    worker.process.join()
    worker.conn.close()
    if message is None:
        return "failed", describe_exit(worker.process.exitcode)
    return message
