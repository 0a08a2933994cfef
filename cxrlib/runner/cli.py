"""``python run_all.py``: the whole study (or one job of it) as a resumable papermill job graph."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..config import StudyConfig, load_config
from ..errors import ArtifactError, ConfigError, CxrError
from ..layout import NB_COMPARE, RunLayout
from .checks import check_data_root, check_kernel
from .cluster import EXECUTORS, ClusterOptions, make_executor, pending, submit
from .sweep import combinations, parse_sweeps, seed_splits, shares_splits, slug
from .execute import KERNEL_NAME, JobContext
from .jobs import (STAGES, Job, RunSpec, build_jobs, is_complete, is_stale, missing_outputs, stage_ranges,
                   tasks_with_sources)
from .schedule import DONE, FAILED, SKIPPED, UPTODATE, RunResult, run_jobs
from .state import RunRecord, as_stored, params_diff

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = "params/cpu.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_all.py",
        description="Run the CXR study: exploration, splits, training per fold, evaluation, Grad-CAM and the "
                    "summary page, as papermill-rendered notebooks under results/<run>/. Finished jobs are reused.",
    )
    p.add_argument("--params", default=DEFAULT_PARAMS, help="params YAML (default: %(default)s)")
    p.add_argument("--data", metavar="DIR", help="data root (overrides data.root)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                   help="override a param, e.g. --set train.epochs=3 split.n_folds=3")
    p.add_argument("--run", metavar="NAME", help="run name (default: the params' name)")
    p.add_argument("--results", default="results", metavar="DIR", help="folder holding runs (default: %(default)s)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks to run (default: all in the params)")
    p.add_argument("--folds", nargs="+", type=int, metavar="K", help="train only these folds (default: all)")
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="jobs at once (default: 1)")
    p.add_argument("--job-index", type=int, metavar="I",
                   help="run only job I of the job table (see --dry-run); its inputs must exist")
    p.add_argument("--dry-run", action="store_true", help="print the job table and exit")
    p.add_argument("--force", action="store_true", help="redo jobs even when their outputs exist")
    p.add_argument("--no-html", action="store_true", help="do not export rendered notebooks to HTML")
    p.add_argument("--no-kernel-fork", action="store_true",
                   help="start every notebook's kernel afresh instead of forking it from one process that has "
                        "imported the notebooks' modules once (~4 s of CPU per notebook)")
    p.add_argument("--notebooks", default=str(REPO / "notebooks"), metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                   help="run the study once per value (repeatable: every combination), as sub-runs under "
                        "<run>/sweep/, then the comparison notebook; e.g. --sweep model.arch=resnet18,resnet50")
    c = p.add_argument_group("cluster (--executor slurm: one job array per stage, chained by dependencies)")
    c.add_argument("--executor", default="local", choices=("local", *EXECUTORS),
                   help="local: this machine (default); slurm: submit through submitit; submitit-local: "
                        "submitit's local executor, stage by stage")
    c.add_argument("--partition", help="SLURM partition")
    c.add_argument("--account", help="SLURM account")
    c.add_argument("--time", type=int, default=240, metavar="MIN", help="time limit per job (default: %(default)s)")
    c.add_argument("--gpus-per-job", type=int, default=0, metavar="N", help="GPUs per job (default: 0)")
    c.add_argument("--cpus-per-job", type=int, default=4, metavar="N", help="CPUs per job (default: %(default)s)")
    c.add_argument("--mem-gb", type=int, metavar="GB", help="memory per job")
    return p


def main(argv: Sequence[str] | None = None, kernel_name: str = KERNEL_NAME) -> int:
    """Entry point; returns the exit code (0 ok, 1 a job failed, 2 bad input, 130/143 interrupted)."""
    args = parser().parse_args(argv)
    try:
        return _main(args, kernel_name)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _params_path(name: str) -> Path:
    path = Path(name)
    if not path.exists() and not path.is_absolute() and (REPO / path).exists():
        path = REPO / path
    return path.resolve() if path.exists() else path


def _main(args: argparse.Namespace, kernel_name: str) -> int:
    if args.sweep:
        return _run_sweep(args, kernel_name)
    params_file = str(_params_path(args.params))
    overrides = [item for group in args.overrides for item in group]
    if args.data:
        overrides.append(f"data.root={json.dumps(str(Path(args.data).resolve()))}")
    cfg = load_config(params_file, overrides)
    check_data_root(cfg.data.root)

    tasks = tasks_with_sources(cfg, tuple(dict.fromkeys(args.tasks or cfg.tasks)))
    added = [t for t in tasks if t not in (args.tasks or cfg.tasks)]
    for source in added:
        users = [t for t in tasks if cfg.source_task(t) == source]
        print(f"tasks: also running {source}: {', '.join(users)} {'reuses' if len(users) == 1 else 'reuse'} "
              "its models (derived_tasks)", flush=True)
    if args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel}: needs at least 1 job at a time")
    run_dir = (Path(args.results) / (args.run or cfg.name)).resolve()
    spec = RunSpec(cfg=cfg, run_dir=run_dir, params_file=params_file, overrides=tuple(overrides), tasks=tasks)
    jobs = build_jobs(spec)
    selected = _select(jobs, args, cfg.split.n_folds)

    if args.dry_run:
        print(format_table(jobs, run_dir, selected))
        return 0
    if args.executor != "local" and args.job_index is None:
        return _submit(args, jobs, selected, run_dir, params_file, overrides, cfg, tasks)

    ctx = JobContext(run_dir=run_dir, notebooks_dir=Path(args.notebooks), params_file=params_file,
                     overrides=tuple(overrides), kernel_name=kernel_name, html=not args.no_html,
                     fork_kernels=not args.no_kernel_fork, _cfg=cfg)
    chosen = [jobs[i] for i in selected]
    if any(job.notebook for job in chosen):
        check_kernel(kernel_name)
        missing = sorted({job.notebook for job in chosen if job.notebook and not (ctx.notebooks_dir / job.notebook).exists()})
        if missing:
            raise ArtifactError(f"{ctx.notebooks_dir}: notebooks {missing} not found")
    record = RunRecord(run_dir)
    _check_params(record, cfg, args.force, partial=_partial(record, selected, jobs, tasks))
    if args.job_index is not None:
        _check_inputs(jobs, jobs[args.job_index], run_dir)

    record.start_invocation(cfg=cfg, params_file=params_file, overrides=overrides, tasks=tasks,
                            job_table=[_row(i, job, jobs) for i, job in enumerate(jobs)], force=args.force)
    result = RunResult()
    code = 1
    try:
        result = run_jobs(jobs, ctx, selected, parallel=args.parallel, force=args.force, record=record,
                          progress=not args.no_progress)
        code = {"SIGTERM": 143, "SIGINT": 130}.get(result.interrupted, 0 if result.ok else 1)
    finally:
        record.end_invocation(code, tasks)
    print(format_status(jobs, result), file=sys.stderr)
    page = RunLayout(run_dir).index_html
    print(f"run folder: {run_dir}" + (f"  (summary page: {page})" if page.exists() else ""), file=sys.stderr)
    return code


def _run_sweep(args: argparse.Namespace, kernel_name: str) -> int:
    """Each combination of the swept values as a sub-run under ``<run>/sweep/``, then the comparison notebook."""
    sweeps = parse_sweeps(args.sweep)
    if args.executor != "local" or args.job_index is not None:
        raise ConfigError("--sweep runs locally (one sub-run after the other); submit each value with --set instead")
    params_file = str(_params_path(args.params))
    name = args.run or load_config(params_file, [x for group in args.overrides for x in group]).name
    parent = (Path(args.results) / name).resolve()
    codes, first = [], None
    for combo in combinations(sweeps):
        sub = argparse.Namespace(**{**vars(args), "sweep": [], "run": f"{name}/sweep/{slug(combo)}",
                                    "overrides": [*args.overrides, combo]})
        sub_dir = (Path(args.results) / sub.run).resolve()
        print(f"sweep: {' '.join(combo)} -> {sub_dir}", file=sys.stderr)
        if first is not None and shares_splits(sweeps):
            seed_splits(first, sub_dir, args.tasks or load_config(params_file).tasks)
        code = _main(sub, kernel_name)
        codes.append(code)
        if code in (130, 143):
            return code
        first = first or sub_dir
    if args.dry_run:
        return max(codes)
    return max([*codes, _render_compare(parent, args, params_file, kernel_name)])


def _render_compare(parent: Path, args: argparse.Namespace, params_file: str, kernel_name: str) -> int:
    """Render the comparison notebook (07) into the parent run folder (always afresh: the sub-runs may have moved)."""
    layout = RunLayout(parent)
    job = Job(id="compare", kind="compare", stage=STAGES.index("summary"), notebook=NB_COMPARE,
              rendered=layout.relative(layout.compare_notebook), parameters={"run_dir": str(parent)},
              outputs=(layout.relative(layout.compare_notebook),))
    check_kernel(kernel_name)
    ctx = JobContext(run_dir=parent, notebooks_dir=Path(args.notebooks), params_file=params_file, overrides=(),
                     kernel_name=kernel_name, html=not args.no_html, fork_kernels=not args.no_kernel_fork)
    result = run_jobs([job], ctx, force=True, progress=False)
    print(f"comparison: {layout.compare_notebook}", file=sys.stderr)
    return 0 if result.ok else 1


def forwarded_args(args: argparse.Namespace, params_file: str, overrides: Sequence[str], run_dir: Path) -> list[str]:
    """The arguments a cluster task needs to rebuild this invocation's job table (data root in the overrides)."""
    argv = ["--params", params_file, "--results", str(run_dir.parent), "--run", run_dir.name,
            "--notebooks", str(Path(args.notebooks).resolve()), "--no-progress"]
    if overrides:
        argv += ["--set", *overrides]
    if args.tasks:
        argv += ["--tasks", *args.tasks]
    if args.no_html:
        argv.append("--no-html")
    if args.no_kernel_fork:
        argv.append("--no-kernel-fork")
    if args.force:
        argv.append("--force")
    return argv


def _submit(args, jobs, selected, run_dir: Path, params_file: str, overrides: Sequence[str], cfg, tasks) -> int:
    """Submit the jobs that still have work through submitit; the record takes this invocation's params first,
    so every task (which runs with --job-index) finds them and resumes instead of refusing."""
    options = ClusterOptions(partition=args.partition, account=args.account, time_min=args.time,
                             gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb)
    record = RunRecord(run_dir)
    _check_params(record, cfg, args.force, partial=_partial(record, selected, jobs, tasks))
    todo = pending(jobs, selected, run_dir, args.force)
    if not todo:
        print("every selected job is up to date; nothing to submit", file=sys.stderr)
        return 0
    record.start_invocation(cfg=cfg, params_file=params_file, overrides=list(overrides), tasks=tasks,
                            job_table=[_row(i, job, jobs) for i, job in enumerate(jobs)], force=args.force)
    executor = make_executor(args.executor, run_dir, options)
    local = args.executor == "submitit-local"
    forward = forwarded_args(args, params_file, overrides, run_dir)
    submission = submit(jobs, todo, forward, executor, wait_each_stage=local,
                        echo=lambda m: print(m, file=sys.stderr))
    if not local:
        print(f"submitted {len(todo)} jobs ({', '.join(sorted(set(submission.job_ids().values())))}); logs in "
              f"{RunLayout(run_dir).logs / 'submitit'}; rerun the same command to resubmit what failed",
              file=sys.stderr)
        return 0
    states = (record.read() or {}).get("jobs", {})
    failed = [jobs[i].id for i in todo if states.get(jobs[i].id, {}).get("status") != "done"]
    code = 1 if failed else 0
    record.end_invocation(code, tasks)
    print(f"run folder: {run_dir}" + (f"; not done: {failed}" if failed else ""), file=sys.stderr)
    return code


def _select(jobs, args, n_folds: int) -> list[int]:
    if args.job_index is not None:
        if not 0 <= args.job_index < len(jobs):
            raise ConfigError(f"--job-index {args.job_index}: the job table has jobs 0..{len(jobs) - 1} "
                              "(see --dry-run)")
        return [args.job_index]
    folds = set(range(n_folds)) if args.folds is None else set(args.folds)
    bad = sorted(folds - set(range(n_folds)))
    if bad:
        raise ConfigError(f"--folds {bad}: split.n_folds is {n_folds}, so folds are 0..{n_folds - 1}")
    return [i for i, job in enumerate(jobs) if job.fold is None or job.fold in folds]


def _partial(record: RunRecord, selected: Sequence[int], jobs, tasks: Sequence[str]) -> str | None:
    """What this invocation leaves out of the run (a reason), or None when it covers the whole job table of
    every task the run has."""
    old = record.read() or {}
    others = [t for t in old.get("tasks", []) if t not in tasks]
    if others:
        return f"tasks {others} are not selected"
    if len(set(selected)) < len(jobs):
        return f"only {len(set(selected))} of {len(jobs)} jobs are selected"
    return None


def _check_params(record: RunRecord, cfg, force: bool, partial: str | None = None) -> None:
    """Refuse params that differ from the run's: without --force, and with --force when ``partial`` says the
    selection would redo only some jobs (the others would keep outputs made with the old params)."""
    old = record.read()
    if not old or "params" not in old or (force and not partial):
        return
    diff = params_diff(old["params"], as_stored(cfg.to_dict()), defaults=as_stored(StudyConfig().to_dict()))
    if not diff:
        return
    shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
    if force:
        raise ConfigError(
            f"{record.path}: this run was made with different params ({shown}), and --force would redo only part "
            f"of it ({partial}), leaving the other jobs' outputs made with the old params. Run the whole job "
            "table with --force (all tasks, no --job-index or --folds), or pick a new --run NAME."
        )
    raise ConfigError(
        f"{record.path}: this run was made with different params ({shown}). Resuming would mix settings; "
        "use the same params and --set values, pick a new --run NAME, or pass --force to redo it all."
    )


def _check_inputs(jobs, job, run_dir: Path) -> None:
    by_id = {j.id: j for j in jobs}
    if job.after_failures:
        return
    missing = [(dep, p) for dep in job.depends for p in missing_outputs(by_id[dep], run_dir)]
    if missing:
        index = {j.id: i for i, j in enumerate(jobs)}
        lines = "\n".join(f"  {p}  (from job {index[dep]} {dep})" for dep, p in missing[:12])
        raise ArtifactError(f"job {job.id} needs inputs that are missing; run their jobs first:\n{lines}")


def _row(i: int, job, jobs) -> dict:
    index = {j.id: k for k, j in enumerate(jobs)}
    return {"index": i, "id": job.id, "kind": job.kind, "depends": [index[d] for d in job.depends],
            "after": [index[d] for d in job.after], "outputs": list(job.outputs)}


def compact_outputs(paths: Sequence[str]) -> str:
    """``a/x, a/y, b`` -> ``a/{x,y} b`` for the job table."""
    groups: dict[str, list[str]] = {}
    for p in paths:
        head, _, tail = p.rpartition("/")
        groups.setdefault(head, []).append(tail)
    parts = []
    for head, names in groups.items():
        inner = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
        parts.append(f"{head}/{inner}" if head else inner)
    return " ".join(parts)


def format_table(jobs, run_dir: Path, selected: Sequence[int]) -> str:
    """The job table as text: index, stage, id, kind, depends, outputs and done/pending."""
    by_id = {j.id: j for j in jobs}
    index = {j.id: i for i, j in enumerate(jobs)}
    header = ("#", "stage", "job", "kind", "depends", "status", "outputs")
    rows = []
    for i in selected:
        job = jobs[i]
        done = is_complete(job, run_dir) and not is_stale(job, by_id, run_dir)
        deps = ",".join(str(index[d]) for d in job.depends)
        if len(deps) > 24:
            deps = f"{index[job.depends[0]]}..{index[job.depends[-1]]}"
        if job.after:  # order only: started after these, whatever their outcome
            deps = ",".join(filter(None, [deps, "after:" + ",".join(str(index[d]) for d in job.after)]))
        rows.append((str(i), str(job.stage), job.id, job.kind, deps or "-", "done" if done else "pending",
                     compact_outputs(job.outputs)))
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in [header] + rows]
    lines.append(f"run folder: {run_dir}")
    lines.append("stages (e.g. for sbatch --array): "
                 + ", ".join(f"{name} {a}-{b}" if a != b else f"{name} {a}" for name, a, b in stage_ranges(jobs)))
    return "\n".join(lines)


def format_status(jobs, result: RunResult) -> str:
    """The end-of-run status table."""
    index = {j.id: i for i, j in enumerate(jobs)}
    label = {DONE: "done", UPTODATE: "up to date", FAILED: "FAILED", SKIPPED: "skipped"}
    rows = [(str(index[jid]), jid, label[o.status], "" if o.seconds is None else f"{o.seconds:.1f}s",
             o.note if o.status in (FAILED, SKIPPED) else "") for jid, o in
            sorted(result.outcomes.items(), key=lambda kv: index[kv[0]])]
    header = ("#", "job", "status", "time", "note")
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in [header] + rows]
    counts = {s: sum(o.status == s for o in result.outcomes.values()) for s in label}
    summary = ", ".join(f"{n} {label[s]}" for s, n in counts.items() if n)
    if result.interrupted:
        summary += f"; interrupted by {result.interrupted}"
    return "\n".join(lines + [summary or "no jobs selected"])
