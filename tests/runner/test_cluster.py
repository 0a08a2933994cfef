"""--executor: the job table submitted through submitit (arrays per stage, dependencies, resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrlib.config import load_config
from cxrlib.runner import cli
from cxrlib.runner.cluster import ClusterOptions, pending, submit, task_command
from cxrlib.runner.jobs import RunSpec, build_jobs
from support.synthetic import make_class_folders

ROOT = Path(__file__).resolve().parents[2]


class FakeJob:
    def __init__(self, job_id):
        self.job_id = job_id


class FakeExecutor:
    """Records what submit() asks of a submitit executor."""

    def __init__(self):
        self.params, self.arrays, self._open, self._n = [], [], None, 100

    def update_parameters(self, **kw):
        self.params.append(kw)

    def batch(self):
        executor = self

        class _Batch:
            def __enter__(self):
                executor._open = []

            def __exit__(self, *exc):
                executor.arrays.append((executor._open, dict(executor.params[-1]) if executor.params else {}))
                executor._open = None
                return False

        return _Batch()

    def submit(self, fn):
        self._n += 1
        self._open.append(fn.command)
        return FakeJob(f"{self._n}")


def _jobs(tmp_path):
    cfg = load_config(ROOT / "params" / "smoke.yaml", ["split.n_folds=3"])
    spec = RunSpec(cfg=cfg, run_dir=tmp_path / "run", params_file=None, overrides=(), tasks=("binary",))
    return build_jobs(spec)


def test_slurm_submission_is_arrays_per_stage_chained_by_dependencies(tmp_path):
    jobs = _jobs(tmp_path)
    executor = FakeExecutor()
    result = submit(jobs, list(range(len(jobs))), ["--params", "p.yaml"], executor, wait_each_stage=False,
                    echo=lambda m: None)
    stages = [sorted({jobs[i].stage for i in stage}) for stage in result.stages]
    # the exploration reads the splits job's caches: a second array of the prepare stage, after the first
    assert stages == [[0], [0]] + [[s] for s in sorted({job.stage for job in jobs}) if s > 0]
    assert [jobs[i].id for i in result.stages[0]] == ["splits:binary"]
    assert [jobs[i].id for i in result.stages[1]] == ["explore"]
    array_of = {jobs[i].id: a for a, stage in enumerate(result.stages) for i in stage}
    assert all(array_of[dep] < array_of[job.id] for job in jobs for dep in job.depends + job.after)
    commands = [cmd for array, _ in executor.arrays for cmd in array]
    assert commands[0][-2:] == ["--job-index", "0"] and commands[0][1:3] == ["-m", "cxrlib.runner"]
    deps = [params.get("slurm_additional_parameters", {}).get("dependency") for _, params in executor.arrays]
    first_ids = ":".join(str(j.job_id) for j in result.stages[0].values())
    before_summary = ":".join(str(j.job_id) for j in result.stages[-2].values())
    assert deps[0] is None and deps[1] == f"afterok:{first_ids}"
    assert all(d.startswith("afterok:") for d in deps[1:-1]) and deps[-1] == f"afterany:{before_summary}"


def test_pending_skips_complete_jobs_unless_forced(tmp_path):
    jobs = _jobs(tmp_path)
    for rel in jobs[0].outputs:
        path = tmp_path / "run" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    todo = pending(jobs, range(len(jobs)), tmp_path / "run", force=False)
    assert 0 not in todo and 1 in todo
    assert pending(jobs, range(len(jobs)), tmp_path / "run", force=True) == list(range(len(jobs)))


def test_cluster_options_map_to_submitit_parameters():
    params = ClusterOptions(partition="gpu", account="lab", time_min=30, gpus_per_job=1, cpus_per_job=8,
                            mem_gb=32).parameters()
    assert params == {"timeout_min": 30, "cpus_per_task": 8, "gpus_per_node": 1, "mem_gb": 32,
                      "slurm_partition": "gpu", "slurm_account": "lab"}
    assert task_command(["--run", "r"], 3)[-4:] == ["--run", "r", "--job-index", "3"]


def test_forwarded_args_rebuild_the_same_job_table(tmp_path):
    data = make_class_folders(tmp_path / "data", {"normal": 2, "covid19": 2}, size=32)
    args = cli.parser().parse_args(["--params", str(ROOT / "params" / "smoke.yaml"), "--data", str(data),
                                    "--run", "r", "--results", str(tmp_path), "--tasks", "binary",
                                    "--set", "split.n_folds=3"])
    overrides = ["split.n_folds=3", f"data.root={json.dumps(str(data))}"]
    argv = cli.forwarded_args(args, args.params, overrides, tmp_path / "r")
    again = cli.parser().parse_args(argv)
    assert again.run == "r" and Path(again.results) == tmp_path and again.tasks == ["binary"]
    assert [x for group in again.overrides for x in group] == overrides


@pytest.mark.slow
def test_submitit_local_executor_runs_the_study_and_resumes(tmp_path):
    pytest.importorskip("submitit")
    data = make_class_folders(tmp_path / "data", {"normal": 6, "viral_pneumonia": 6, "covid19": 6}, size=48)
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--params", str(ROOT / "params" / "smoke.yaml"),
           "--data", str(data), "--results", str(tmp_path / "results"), "--run", "c", "--tasks", "binary",
           "--executor", "submitit-local", "--cpus-per-job", "1", "--no-html",
           "--set", "split.n_folds=3", "train.epochs=1", f"data.cache_dir={tmp_path / 'cache'}", "data.workers=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "results" / "c"
    record = json.loads((run_dir / "run.json").read_text())
    assert {s["status"] for s in record["jobs"].values()} == {"done"}
    assert (run_dir / "index.html").exists() and list((run_dir / "logs" / "submitit").glob("*_log.out"))
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to submit" in again.stderr
