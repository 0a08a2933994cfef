"""The job graph, resume, failure isolation, run.json and CLI checks, on python jobs and dummy notebooks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cxrlib import io
from cxrlib.allocator import RETAIN_ENV
from cxrlib.config import load_config
from cxrlib.errors import ConfigError
from cxrlib.runner import cli, steps
from cxrlib.runner.execute import JobContext, job_env, thread_share
from cxrlib.runner.jobs import (DERIVED_SPLITS_STEP, SPLITS_STEP, Job, RunSpec, build_jobs, check_table, is_stale,
                                stage_ranges, tasks_with_sources)
from cxrlib.runner.schedule import (DONE, FAILED, SKIPPED, START_ORDER, UPTODATE, RunResult, run_jobs,
                                    start_priority)
from cxrlib.runner import state
from cxrlib.runner.state import RunRecord, params_diff

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ helpers


def write_outputs(job, ctx):
    """A python step: append the job id to order.txt, record the job's env, write its outputs."""
    with open(ctx.run_dir / "order.txt", "a") as fh:
        fh.write(job.id + "\n")
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "MALLOC_TRIM_THRESHOLD_")}
    for rel in job.outputs:
        io.write_json(ctx.run_dir / rel, {"job": job.id, "env": env, "t": time.time()})


def fail(job, ctx):
    raise ValueError(f"{job.id} breaks on purpose")


def die(job, ctx):
    os.kill(os.getpid(), signal.SIGKILL)


def nap(job, ctx):
    time.sleep(1.0)
    write_outputs(job, ctx)


def pyjob(jid, depends=(), step=write_outputs, after_failures=False, n_out=1):
    outs = tuple(f"{jid}/out{i}.json" for i in range(n_out))
    return Job(id=jid, kind="test", stage=0, outputs=outs, depends=tuple(depends), steps=(step,), after_failures=after_failures)


def diamond(b_step=write_outputs):
    """a -> b -> d ; a -> c ; summary (soft) after d and c."""
    return [pyjob("a", n_out=2), pyjob("b", ["a"], b_step), pyjob("c", ["a"]), pyjob("d", ["b"]),
            pyjob("summary", ["d", "c"], after_failures=True)]


def ctx_for(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return JobContext(run_dir=run_dir, notebooks_dir=tmp_path / "nb")


def mtimes(run_dir):
    return {p: p.stat().st_mtime_ns for p in Path(run_dir).rglob("out*.json")}


def order(ctx):
    return (ctx.run_dir / "order.txt").read_text().split()


def run(jobs, ctx, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("gpus", [])
    return run_jobs(jobs, ctx, **kw)


# ------------------------------------------------------------------------------------------ job table


def spec(tmp_path, tasks=("multiclass", "binary"), n_folds=3):
    cfg = load_config(None, [f"split.n_folds={n_folds}", f"data.root={tmp_path}"])
    return RunSpec(cfg=cfg, run_dir=tmp_path / "r", params_file=None, overrides=(), tasks=tasks)


def test_job_table_is_deterministic_and_stage_ordered(tmp_path):
    jobs = build_jobs(spec(tmp_path))
    assert [j.id for j in jobs] == [j.id for j in build_jobs(spec(tmp_path))]
    assert [j.id for j in jobs][:3] == ["splits:multiclass", "splits:binary", "explore"]
    # the first task's splits job runs the shared scan and near-duplicate search; the rest read its caches
    assert jobs[0].after == () and jobs[1].after == jobs[2].after == ("splits:multiclass",)
    assert jobs[1].depends == jobs[2].depends == ()  # order only: a later task's splits never go stale by it
    assert [j.stage for j in jobs] == sorted(j.stage for j in jobs)
    assert stage_ranges(jobs) == [("prepare", 0, 2), ("train", 3, 8), ("evaluate", 9, 12), ("controls", 13, 14),
                                  ("summary", 15, 15)]
    train = {j.id: j for j in jobs}["train:binary/fold2"]
    assert train.depends == ("splits:binary",) and train.parameters["fold"] == 2
    assert "binary/fold2/train.json" in train.outputs and train.rendered == "binary/fold2/02_train_fold.ipynb"
    ev = {j.id: j for j in jobs}["evaluate:multiclass"]
    assert ev.depends == tuple(f"train:multiclass/fold{k}" for k in range(3))
    summary = jobs[-1]
    assert summary.after_failures and set(summary.depends) == {"explore", "evaluate:multiclass", "gradcam:multiclass",
                                                     "evaluate:binary", "gradcam:binary", "controls:multiclass",
                                                     "controls:binary"}
    explore = jobs[2].parameters
    # notebooks get what a reader sets; everything derived comes from the params (data.root via overrides)
    assert set(explore) == {"run_dir", "task", "params_file", "overrides"}
    assert set(jobs[-4].parameters) == {"run_dir", "task", "fold", "params_file", "overrides"}


def test_controls_stage_follows_its_training_rounds_and_is_skipped_when_complete_or_off(tmp_path):
    s = spec(tmp_path)
    s = RunSpec(cfg=load_config(None, ["split.n_folds=3", "controls.folds=[0, 2]"]), run_dir=s.run_dir,
                params_file=None, overrides=(), tasks=s.tasks)
    jobs = {j.id: j for j in build_jobs(s)}
    ctl = jobs["controls:binary"]
    assert ctl.stage == 3 and ctl.notebook == "06_shortcut_controls.ipynb"
    assert ctl.depends == ("splits:binary", "train:binary/fold0", "train:binary/fold2")
    assert ctl.outputs == ("binary/controls/controls.json", "binary/06_shortcut_controls.ipynb")
    # the runner treats it like any job: run once, then up to date; a missing output makes it run again
    ctx = ctx_for(tmp_path)
    job = Job(id=ctl.id, kind=ctl.kind, stage=ctl.stage, outputs=ctl.outputs, steps=(write_outputs,))
    assert run([job], ctx).outcomes[job.id].status == DONE
    assert run([job], ctx).outcomes[job.id].status == UPTODATE
    (ctx.run_dir / ctl.outputs[1]).unlink()
    assert run([job], ctx).outcomes[job.id].status == DONE
    off = RunSpec(cfg=load_config(None, ["split.n_folds=3", "controls.enabled=false"]), run_dir=s.run_dir,
                  params_file=None, overrides=(), tasks=s.tasks)
    assert not [j for j in build_jobs(off) if j.kind == "controls"]


def test_a_derived_task_waits_for_its_sources_splits_rounds_and_controls(tmp_path):
    cfg = load_config(None, ["split.n_folds=3", f"data.root={tmp_path}", "derived_tasks={binary: multiclass}"])
    assert tasks_with_sources(cfg, ("binary",)) == ("multiclass", "binary")
    assert tasks_with_sources(cfg, ("binary", "multiclass")) == ("multiclass", "binary")
    s = RunSpec(cfg=cfg, run_dir=tmp_path / "r", params_file=None, overrides=(), tasks=("multiclass", "binary"))
    jobs = {j.id: j for j in build_jobs(s)}
    assert jobs["splits:binary"].steps == (DERIVED_SPLITS_STEP,) and jobs["splits:binary"].depends == ("splits:multiclass",)
    assert jobs["splits:multiclass"].steps == (SPLITS_STEP,)
    assert jobs["train:binary/fold1"].depends == ("splits:binary", "train:multiclass/fold1")
    assert jobs["train:multiclass/fold1"].depends == ("splits:multiclass",)
    assert jobs["controls:binary"].depends[-1] == "controls:multiclass"
    with pytest.raises(ConfigError, match="task binary reuses multiclass's models"):
        build_jobs(RunSpec(cfg=cfg, run_dir=tmp_path / "r", params_file=None, overrides=(), tasks=("binary",)))


def test_job_table_rejects_unknown_task_and_bad_order(tmp_path):
    with pytest.raises(Exception, match="unknown task"):
        build_jobs(spec(tmp_path, tasks=("nope",)))
    with pytest.raises(ValueError, match="not listed before"):
        check_table([pyjob("b", ["a"]), pyjob("a")])


# ------------------------------------------------------------------------------------------ graph runs


def test_runs_in_dependency_order_records_status_then_second_run_skips_all(tmp_path):
    ctx = ctx_for(tmp_path)
    jobs = diamond()
    record = RunRecord(ctx.run_dir)
    result = run(jobs, ctx, record=record)
    assert result.ok and {o.status for o in result.outcomes.values()} == {DONE}
    seq = order(ctx)
    assert sorted(seq) == sorted(j.id for j in jobs)
    assert seq.index("a") < seq.index("b") < seq.index("d") < seq.index("summary") and seq[-1] == "summary"
    data = record.read()
    assert {v["status"] for v in data["jobs"].values()} == {"done"}
    assert all(v["seconds"] is not None and v["log"].startswith("logs/") for v in data["jobs"].values())
    before = mtimes(ctx.run_dir)

    again = run(jobs, ctx, record=record)
    assert {o.status for o in again.outcomes.values()} == {UPTODATE}
    assert mtimes(ctx.run_dir) == before and len(order(ctx)) == len(jobs)


def test_failure_skips_dependants_and_keeps_independent_jobs(tmp_path):
    ctx = ctx_for(tmp_path)
    record = RunRecord(ctx.run_dir)
    result = run(diamond(b_step=fail), ctx, record=record)
    status = {k: o.status for k, o in result.outcomes.items()}
    assert status == {"a": DONE, "b": FAILED, "c": DONE, "d": SKIPPED, "summary": DONE}
    assert not result.ok
    assert "breaks on purpose" in result.outcomes["b"].note
    jobs = record.read()["jobs"]
    assert jobs["b"]["status"] == "failed" and "ValueError" in jobs["b"]["error"]
    assert jobs["d"]["status"] == "skipped" and "dependency b failed" in jobs["d"]["error"]
    assert "breaks on purpose" in (ctx.run_dir / jobs["b"]["log"]).read_text()  # the traceback is in the job log

    # fixed: b and d run, a and c stay untouched, the summary is redone because its inputs changed
    before = mtimes(ctx.run_dir)
    fixed = run(diamond(), ctx, record=record)
    status = {k: o.status for k, o in fixed.outcomes.items()}
    assert status == {"a": UPTODATE, "b": DONE, "c": UPTODATE, "d": DONE, "summary": DONE}
    after = mtimes(ctx.run_dir)
    assert all(after[p] == t for p, t in before.items() if p.parts[-2] in ("a", "c"))


def test_killed_worker_is_a_failure_not_a_crash(tmp_path):
    ctx = ctx_for(tmp_path)
    result = run([pyjob("a", step=die), pyjob("b")], ctx)
    assert result.outcomes["a"].status == FAILED and "SIGKILL" in result.outcomes["a"].note
    assert result.outcomes["b"].status == DONE


def test_half_written_job_is_redone_and_upstream_change_makes_dependants_stale(tmp_path):
    ctx = ctx_for(tmp_path)
    jobs = diamond()
    run(jobs, ctx)
    (ctx.run_dir / "a" / "out1.json").unlink()  # a half-written job
    status = {k: o.status for k, o in run(jobs, ctx).outcomes.items()}
    assert status == {k: DONE for k in status}  # a redone, hence everything after it
    by_id = {j.id: j for j in jobs}
    assert not any(is_stale(j, by_id, ctx.run_dir) for j in jobs)

    io.write_json(ctx.run_dir / "b" / "out0.json", {"changed": True})  # upstream rewritten by hand
    assert is_stale(by_id["d"], by_id, ctx.run_dir)
    status = {k: o.status for k, o in run(jobs, ctx).outcomes.items()}
    assert status == {"a": UPTODATE, "b": UPTODATE, "c": UPTODATE, "d": DONE, "summary": DONE}


def test_scratch_files_survive_a_resume_but_not_a_redo(tmp_path):
    ctx = ctx_for(tmp_path)
    job = Job(id="t", kind="t", stage=0, outputs=("t/a.json", "t/b.json"), steps=(write_outputs,),
              scratch=("t/checkpoint_last.pt",))
    checkpoint = ctx.run_dir / "t" / "checkpoint_last.pt"
    io.write_text(checkpoint, "epoch 3")  # an interrupted attempt: no outputs yet
    run([job], ctx)
    assert checkpoint.exists()  # resumed: the job itself decides what to do with it
    assert run([job], ctx, force=True).ok and not checkpoint.exists()


@pytest.mark.parametrize("summary_after, outcome", [("b", FAILED), ("c", SKIPPED)])
def test_soft_job_reruns_when_a_stale_dependency_fails_in_this_run(tmp_path, summary_after, outcome):
    ctx = ctx_for(tmp_path)

    def chain(b_step):  # a -> b -> c; the soft summary reads b or c
        return [pyjob("a"), pyjob("b", ["a"], b_step), pyjob("c", ["b"]), pyjob("summary", [summary_after], after_failures=True)]

    run(chain(write_outputs), ctx)
    summary_out = ctx.run_dir / "summary" / "out0.json"
    first = summary_out.stat().st_mtime_ns
    time.sleep(0.01)
    io.write_json(ctx.run_dir / "a" / "out0.json", {"remade": True})  # b is stale: its outputs get deleted
    result = run(chain(fail), ctx)
    assert result.outcomes[summary_after].status == outcome
    assert result.outcomes["summary"].status == DONE  # it shows the failure, not the old results
    assert summary_out.stat().st_mtime_ns > first


def test_interrupted_job_whose_inputs_changed_starts_afresh(tmp_path):
    ctx = ctx_for(tmp_path)
    seen = tmp_path / "seen.txt"

    def train(job, ctx):
        checkpoint = ctx.run_dir / "t" / "checkpoint_last.pt"
        seen.write_text(checkpoint.read_text() if checkpoint.exists() else "no checkpoint")
        write_outputs(job, ctx)

    up = pyjob("up")
    job = Job(id="t", kind="t", stage=0, outputs=("t/a.json", "t/b.json"), depends=("up",), steps=(train,),
              scratch=("t/checkpoint_last.pt",))
    run([up], ctx)
    checkpoint = ctx.run_dir / "t" / "checkpoint_last.pt"
    io.write_text(checkpoint, "epoch 3 on the old split")  # interrupted: one output, a checkpoint
    io.write_json(ctx.run_dir / "t" / "a.json", {"old": True})
    time.sleep(0.01)
    assert run([up, job], ctx, selected=[0], force=True).ok  # the split is remade

    assert run([up, job], ctx, selected=[1]).ok
    assert seen.read_text() == "no checkpoint"  # not resumed on the old split

    io.write_text(checkpoint, "epoch 1 on the new split")  # interrupted again, inputs unchanged since
    (ctx.run_dir / "t" / "b.json").unlink()
    assert run([up, job], ctx).outcomes["up"].status == UPTODATE
    assert seen.read_text() == "epoch 1 on the new split"  # resumed


def test_markers_limit_what_dependants_compare_against(tmp_path):
    ctx = ctx_for(tmp_path)
    up = Job(id="up", kind="t", stage=0, outputs=("up/train.json", "up/metrics.json"), steps=(write_outputs,),
             stamp_outputs=("up/train.json",))
    down = pyjob("down", ["up"])
    run([up, down], ctx)
    io.write_json(ctx.run_dir / "up" / "metrics.json", {"rewritten by evaluation": 1})
    assert not is_stale(down, {"up": up, "down": down}, ctx.run_dir)


def test_force_redoes_everything_and_selection_needs_complete_inputs(tmp_path):
    ctx = ctx_for(tmp_path)
    jobs = diamond()
    run(jobs, ctx)
    before = mtimes(ctx.run_dir)
    assert {o.status for o in run(jobs, ctx, force=True).outcomes.values()} == {DONE}
    assert all(mtimes(ctx.run_dir)[p] > t for p, t in before.items())

    only_d = run(jobs, ctx, selected=[3])
    assert list(only_d.outcomes) == ["d"] and only_d.outcomes["d"].status == UPTODATE
    (ctx.run_dir / "b" / "out0.json").unlink()
    blocked = run(jobs, ctx, selected=[3])
    assert blocked.outcomes["d"].status == SKIPPED and "not selected and incomplete" in blocked.outcomes["d"].note


def test_after_orders_jobs_without_making_them_stale_or_skipped(tmp_path):
    import dataclasses

    ctx = ctx_for(tmp_path)
    first, second = pyjob("first"), dataclasses.replace(pyjob("second"), after=("first",))
    result = run([first, second], ctx, parallel=2)
    assert result.ok and order(ctx) == ["first", "second"]  # two free slots, yet second waited for first
    before = mtimes(ctx.run_dir)
    assert run([first, second], ctx, force=True, selected=[0]).ok  # first redone ...
    again = run([first, second], ctx)
    assert again.outcomes["second"].status == UPTODATE  # ... second is not stale by it
    assert mtimes(ctx.run_dir)[ctx.run_dir / "second" / "out0.json"] == before[ctx.run_dir / "second" / "out0.json"]
    broken = dataclasses.replace(pyjob("first", step=fail))
    outcome = run([broken, second], ctx, force=True).outcomes
    assert outcome["first"].status == FAILED and outcome["second"].status == DONE  # order only, not data


def test_parallel_pool_overlaps_jobs_and_sets_each_jobs_env(tmp_path):
    ctx = ctx_for(tmp_path)
    jobs = [pyjob(f"j{i}", step=nap) for i in range(4)]
    t0 = time.monotonic()
    result = run(jobs, ctx, parallel=2, gpus=["0", "1"])
    assert result.ok and time.monotonic() - t0 < 3.95  # 4 one-second jobs: one at a time takes >= 4 s
    envs = [io.read_json(ctx.run_dir / f"j{i}" / "out0.json")["env"] for i in range(4)]
    cores = len(os.sched_getaffinity(0))
    assert all(e["OMP_NUM_THREADS"] == str(max(1, cores // 2)) for e in envs)
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs[:2]) == ["0", "1"]
    assert job_env(0, 1, ["0", "1"], 8) == {"CXR_PROGRESS": "0"}  # one job at a time: only the tqdm bar is off
    assert job_env(3, 2, ["4", "5"], 8)["CUDA_VISIBLE_DEVICES"] == "5"
    # train.retain_memory (default on) reaches every job: its kernels through glibc's environment variables
    assert all(e["MALLOC_TRIM_THRESHOLD_"] == RETAIN_ENV["MALLOC_TRIM_THRESHOLD_"] for e in envs)
    assert job_env(0, 1, [], 8, retain_memory=True).keys() >= RETAIN_ENV.keys()


def record_torch_threads(job, ctx):
    import torch

    io.write_json(ctx.run_dir / job.outputs[0], {"threads": torch.get_num_threads(),
                                                 "omp": os.environ.get("OMP_NUM_THREADS")})


def test_parallel_gives_a_job_that_starts_alone_every_core_and_sets_torchs_pool(tmp_path):
    ctx = ctx_for(tmp_path)
    jobs = [pyjob("first", step=record_torch_threads), pyjob("b", ["first"], nap), pyjob("c", ["first"], nap)]
    result = run(jobs, ctx, parallel=2)
    assert result.ok
    cores = len(os.sched_getaffinity(0))
    first = io.read_json(ctx.run_dir / "first" / "out0.json")
    assert first == {"threads": cores, "omp": str(cores)}  # alone: nothing to share the cores with
    assert [io.read_json(ctx.run_dir / j / "out0.json")["env"]["OMP_NUM_THREADS"] for j in "bc"] == \
        [str(max(1, cores // 2))] * 2
    assert thread_share(8, 1, alone=False) is None and thread_share(8, 3, alone=False) == 2
    assert thread_share(8, 3, alone=True) == 8 and thread_share(2, 4, alone=False) == 1


def test_parallel_starts_long_jobs_first_so_short_ones_fill_the_end(tmp_path):
    ctx = ctx_for(tmp_path)

    def job(jid, kind, depends=()):
        return Job(id=jid, kind=kind, stage=0, outputs=(f"{jid}/out0.json",), depends=tuple(depends), steps=(nap,))

    jobs = [job("splits", "splits"), *(job(f"train{k}", "train", ["splits"]) for k in range(4)),
            job("gradcam", "gradcam", [f"train{k}" for k in range(4)]), job("controls", "controls", ["train0"])]
    assert run(jobs, ctx, parallel=2).ok
    order = (ctx.run_dir / "order.txt").read_text().split()
    # controls is ready when train0 and train1 end: it starts beside train2, before train3 (table order: after)
    assert order.index("controls") < order.index("train3")
    assert [start_priority(j) for j in jobs[:2]] == [1, 3] and start_priority(pyjob("x")) == len(START_ORDER)


def _wait_running(record: RunRecord, job_id: str, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        data = record.path.exists() and record.read()
        if data and data["jobs"].get(job_id, {}).get("status") == "running":
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} was not running within {seconds:g} s")


def test_sigterm_stops_the_run_and_records_the_running_job(tmp_path):
    script = tmp_path / "drive.py"
    script.write_text(f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_runner import pyjob, ctx_for
from cxrlib.runner.schedule import run_jobs
from cxrlib.runner.state import RunRecord

def slow(job, ctx):
    time.sleep(60)

ctx = ctx_for(Path({str(tmp_path)!r}))
res = run_jobs([pyjob("slow", step=slow), pyjob("after", ["slow"])], ctx, record=RunRecord(ctx.run_dir),
               progress=False, gpus=[])
print("INTERRUPTED", res.interrupted, {{k: o.status for k, o in res.outcomes.items()}})
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    record = RunRecord(tmp_path / "run")
    _wait_running(record, "slow")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "INTERRUPTED SIGTERM {'slow': 'failed'}" in out
    entry = record.read()["jobs"]["slow"]
    assert entry["status"] == "failed" and "interrupted by SIGTERM" in entry["error"]


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_and_said_so(tmp_path):
    script = tmp_path / "drive.py"
    script.write_text(f"""
import signal, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_runner import pyjob, ctx_for
import cxrlib.runner.schedule as schedule
from cxrlib.runner.state import RunRecord

def stubborn(job, ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path({str(tmp_path / "ignoring")!r}).touch()
    time.sleep(60)

schedule.STOP_GRACE_S = 1
ctx = ctx_for(Path({str(tmp_path)!r}))
res = schedule.run_jobs([pyjob("stubborn", step=stubborn)], ctx, record=RunRecord(ctx.run_dir), progress=False,
                        gpus=[])
print("INTERRUPTED", res.interrupted, res.outcomes["stubborn"].note)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    record = RunRecord(tmp_path / "run")
    _wait_running(record, "stubborn")
    deadline = time.time() + 30
    while not (tmp_path / "ignoring").exists() and time.time() < deadline:  # the step has set its SIG_IGN
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "INTERRUPTED SIGTERM interrupted by SIGTERM: still running 1 s later, killed" in out
    assert "out of memory" not in record.read()["jobs"]["stubborn"]["error"]


# ------------------------------------------------------------------------------------------ notebooks


def dummy_notebook(path: Path, body: str, params: str = 'run_dir = "."\ntask = "t"') -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "cxr-study", "display_name": "cxr-study", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_notebook_jobs_render_atomically_and_failures_keep_the_partial_notebook(tmp_path):
    ctx = ctx_for(tmp_path)
    dummy_notebook(ctx.notebooks_dir / "ok.ipynb",
                   'from pathlib import Path\nPath(run_dir, task).mkdir(exist_ok=True)\n'
                   'Path(run_dir, task, "made.txt").write_text(task)\nprint("hello from", task)')
    dummy_notebook(ctx.notebooks_dir / "bad.ipynb", 'print("about to fail")\nraise RuntimeError("boom " + task)')
    common = {"run_dir": str(ctx.run_dir)}
    jobs = [
        Job(id="ok", kind="t", stage=0, notebook="ok.ipynb", rendered="ok/ok.ipynb",
            parameters={**common, "task": "ok"}, outputs=("ok/made.txt", "ok/ok.ipynb")),
        Job(id="bad", kind="t", stage=0, notebook="bad.ipynb", rendered="bad/bad.ipynb",
            parameters={**common, "task": "bad"}, outputs=("bad/bad.ipynb",)),
    ]
    record = RunRecord(ctx.run_dir)
    result = run(jobs, ctx, record=record)
    assert result.outcomes["ok"].status == DONE
    rendered = nbformat.read(ctx.run_dir / "ok" / "ok.ipynb", as_version=4)
    assert rendered.cells[1].source.startswith("# Parameters")  # papermill injected the parameters
    assert (ctx.run_dir / "ok" / "ok.html").exists() and (ctx.run_dir / "ok" / "made.txt").read_text() == "ok"
    assert "hello from ok" in (ctx.run_dir / "logs" / "ok.log").read_text()  # live cell output logged

    assert result.outcomes["bad"].status == FAILED and "RuntimeError: boom bad" in result.outcomes["bad"].note
    assert not (ctx.run_dir / "bad" / "bad.ipynb").exists()
    partial = nbformat.read(ctx.run_dir / "bad" / "bad.failed.ipynb", as_version=4)
    assert any("about to fail" in str(c.get("outputs")) for c in partial.cells)
    assert (ctx.run_dir / "bad" / "bad.failed.html").exists()
    assert record.read()["jobs"]["bad"]["notebook"] == "bad/bad.failed.ipynb"
    assert not list(ctx.run_dir.rglob(".*.tmp"))


def test_unexportable_notebook_of_an_up_to_date_job_is_logged_not_fatal(tmp_path, caplog):
    ctx = ctx_for(tmp_path)
    ctx.html = True
    io.write_text(ctx.run_dir / "a" / "a.ipynb", "{truncated")  # complete, but the notebook is corrupt
    io.write_json(ctx.run_dir / "a" / "out0.json", {})
    corrupt = Job(id="a", kind="t", stage=0, outputs=("a/out0.json", "a/a.ipynb"), rendered="a/a.ipynb",
                  steps=(write_outputs,))
    with caplog.at_level("WARNING", logger="cxrlib.runner.schedule"):
        result = run([corrupt, pyjob("b")], ctx)
    assert {k: o.status for k, o in result.outcomes.items()} == {"a": UPTODATE, "b": DONE}
    assert any("a.ipynb: could not export to HTML" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture()
def cli_env(tmp_path):
    data = tmp_path / "data"
    (data / "normal").mkdir(parents=True)
    (data / "normal" / "x.png").write_bytes(b"not read by these tests")
    nbs = tmp_path / "notebooks"
    for name in ("01_data_exploration", "02_train_fold", "03_evaluate", "04_gradcam_gallery", "05_summary",
                 "06_shortcut_controls"):
        dummy_notebook(nbs / f"{name}.ipynb", "pass")
    base = ["--params", str(ROOT / "params" / "smoke.yaml") if (ROOT / "params" / "smoke.yaml").exists() else os.devnull,
            "--data", str(data), "--results", str(tmp_path / "results"), "--run", "r", "--notebooks", str(nbs),
            "--no-progress", "--set", "split.n_folds=3", "--tasks", "binary"]
    return tmp_path, base


def test_cli_data_root_missing_or_empty_names_both_ways_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "missing", tmp_path / "empty"):
        code = cli.main(["--params", os.devnull, "--data", str(root), "--results", str(tmp_path / "res")])
        err = capsys.readouterr().err
        assert code == 2
        assert "python -m cxrlib fetch --dest data/" in err and "make run DATA=" in err and str(root) in err
    assert not (tmp_path / "res").exists()


def test_cli_kernel_missing_says_how_to_register(cli_env, capsys):
    tmp_path, base = cli_env
    code = cli.main(base, kernel_name="no-such-kernel-cxr")
    err = capsys.readouterr().err
    assert code == 2 and "python -m ipykernel install --sys-prefix --name no-such-kernel-cxr" in err
    assert not (tmp_path / "results").exists()


def test_cli_dry_run_lists_the_table_and_writes_nothing(cli_env, capsys):
    tmp_path, base = cli_env
    assert cli.main(base + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[2] for r in rows] == ["splits:binary", "explore", "train:binary/fold0", "train:binary/fold1",
                                    "train:binary/fold2", "evaluate:binary", "gradcam:binary", "controls:binary",
                                    "summary"]
    assert [r[0] for r in rows] == [str(i) for i in range(9)] and {r[5] for r in rows} == {"pending"}
    assert rows[1][4] == "after:0" and rows[5][4] == "2,3,4" and "binary/{splits.csv,quality.csv}" in out
    assert "stages (e.g. for sbatch --array): prepare 0-1, train 2-4, evaluate 5-6, controls 7, summary 8" in out
    assert not (tmp_path / "results").exists()


def test_cli_job_index_runs_exactly_one_job_and_checks_inputs(cli_env, capsys, monkeypatch):
    tmp_path, base = cli_env
    code = cli.main(base + ["--job-index", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "binary/splits.csv" in err and "job 0 splits:binary" in err

    def fake_splits(job, ctx):
        for rel in job.outputs:
            io.write_text(ctx.run_dir / rel, "fake\n")

    monkeypatch.setattr(steps, "make_splits", fake_splits)
    assert cli.main(base + ["--job-index", "0"]) == 0
    run_dir = tmp_path / "results" / "r"
    data = json.loads((run_dir / "run.json").read_text())
    assert data["jobs"]["splits:binary"]["status"] == "done"
    assert {v["status"] for k, v in data["jobs"].items() if k != "splits:binary"} == {"pending"}
    assert data["data_fingerprint"]["splits"]["binary"] and data["git"] is not None
    assert data["versions"]["torch"] and data["seeds"]["split"] == 0 and data["params"]["split"]["n_folds"] == 3
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == ["binary", "logs", "run.json"]


def test_cli_refuses_to_resume_with_other_params_unless_forced(cli_env, capsys, monkeypatch):
    tmp_path, base = cli_env
    monkeypatch.setattr(steps, "make_splits", lambda job, ctx: [io.write_text(ctx.run_dir / r, "x") for r in job.outputs])
    assert cli.main(base + ["--job-index", "0"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--job-index", "0", "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "different params (train.lr)" in err and "--force" in err

    # --force redoes only what is selected, so with other params it must cover the whole run
    for part in (["--job-index", "0"], ["--folds", "0"]):
        assert cli.main(base + part + ["--set", "train.lr=0.5", "--force"]) == 2
        err = capsys.readouterr().err
        assert "would redo only part of it" in err and "new --run NAME" in err
    selections = []
    monkeypatch.setattr(cli, "run_jobs", lambda jobs, ctx, selected, **kw: selections.append(selected) or RunResult())
    assert cli.main(base + ["--set", "train.lr=0.5", "--force"], kernel_name="python3") == 0
    data = json.loads((tmp_path / "results" / "r" / "run.json").read_text())
    assert selections == [list(range(9))] and data["params"]["train"]["lr"] == 0.5 and len(data["invocations"]) == 2

    # a second task joins the run (whole table, so new params are fine); forcing one task alone is refused
    assert cli.main(base + ["multiclass", "--force"], kernel_name="python3") == 0
    assert cli.main(base + ["--set", "train.lr=0.5", "--force"], kernel_name="python3") == 2
    assert "tasks ['multiclass'] are not selected" in capsys.readouterr().err
    assert len(selections) == 2


def test_run_record_says_which_commit_made_each_job(tmp_path, monkeypatch):
    ctx = ctx_for(tmp_path)
    cfg = load_config(None, [])
    jobs = [pyjob("a"), pyjob("b", ["a"])]
    for i, commit in enumerate(("c0ffee", "beef42")):  # two invocations on different code
        monkeypatch.setattr(state, "git_info", lambda commit=commit: {"commit": commit, "dirty": commit == "beef42"})
        record = RunRecord(ctx.run_dir)
        record.start_invocation(cfg=cfg, params_file=None, overrides=[], tasks=["binary"], job_table=[], force=False)
        run(jobs, ctx, selected=[i], record=record)
        record.end_invocation(0, ["binary"])
    data = record.read()
    assert [(c["git_commit"], c["git_dirty"]) for c in data["invocations"]] == [("c0ffee", False), ("beef42", True)]
    assert data["jobs"]["a"]["git_commit"] == "c0ffee" and data["jobs"]["b"]["git_commit"] == "beef42"
    assert data["jobs"]["b"]["git_dirty"] is True and data["git"]["commit"] == "beef42"


def test_invocation_on_one_task_keeps_the_others_in_the_record(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(None, [])
    for task in ("multiclass", "binary"):
        io.write_text(run_dir / task / "splits.csv", f"{task} split\n")

    def table(tasks):
        ids = ["explore"] + [f"{kind}:{t}" for t in tasks for kind in ("splits", "evaluate")] + ["summary"]
        return [{"index": i, "id": jid, "kind": jid.partition(":")[0], "depends": [0], "outputs": []}
                for i, jid in enumerate(ids)]

    record = RunRecord(run_dir)
    for tasks in (["multiclass", "binary"], ["binary"]):  # a finished run, then run_all.py --tasks binary
        record.start_invocation(cfg=cfg, params_file=None, overrides=[], tasks=tasks, job_table=table(tasks),
                                force=False)
        record.end_invocation(0, tasks)
    data = record.read()
    assert data["tasks"] == ["multiclass", "binary"]
    assert [(r["index"], r["id"]) for r in data["job_table"]] == [
        (0, "explore"), (1, "splits:binary"), (2, "evaluate:binary"), (3, "summary"),
        (None, "splits:multiclass"), (None, "evaluate:multiclass")]
    assert "depends" not in data["job_table"][-1]  # its indices belonged to the earlier table
    assert set(data["data_fingerprint"]["splits"]) == {"multiclass", "binary"}


def test_params_diff_names_nested_keys():
    assert params_diff({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 3}) == ["a.c", "d", "e"]
    # a setting a newer cxrlib added counts only when it is not at its default
    defaults = {"a": {"b": 0, "c": 0, "new": 60}}
    assert params_diff({"a": {"b": 1}}, {"a": {"b": 1, "new": 60}}, defaults=defaults) == []
    assert params_diff({"a": {"b": 1}}, {"a": {"b": 1, "new": 0}}, defaults=defaults) == ["a.new"]
    assert params_diff({"a": {"b": 1}}, {"a": {"b": 1, "new": 60}}) == ["a.new"]


# ------------------------------------------------------------------------------------------ summary page


def test_summary_page_has_tables_status_links_and_figures(tmp_path):
    from support.fake_run import make_fake_run

    from cxrlib import report
    from cxrlib.evaluate import summarize_task as summarize

    run_dir = make_fake_run(tmp_path / "run", task="binary", n_folds=3)
    cfg = load_config(None, ["split.n_folds=3", "evaluate.bootstrap=20"])
    summarize(run_dir, "binary", cfg)
    (run_dir / "binary" / "figures").mkdir()
    (run_dir / "binary" / "figures" / "confusion_matrix.png").write_bytes(b"png")
    dummy_notebook(run_dir / "binary" / "03_evaluate.ipynb", "pass")
    io.write_text(run_dir / "binary" / "03_evaluate.html", "<html></html>")
    dummy_notebook(run_dir / "binary" / "04_gradcam_gallery.failed.ipynb", "pass")
    record = RunRecord(run_dir)
    record.start_invocation(cfg=cfg, params_file=None, overrides=["split.n_folds=3"], tasks=["binary"],
                            job_table=[{"index": 0, "id": "evaluate:binary"}, {"index": 1, "id": "gradcam:binary"},
                                       {"index": 2, "id": "summary"}], force=False)
    record.set_job("evaluate:binary", status="done", seconds=3.5, notebook="binary/03_evaluate.ipynb")
    record.set_job("gradcam:binary", status="failed", error="cell 3: RuntimeError: boom <b>",
                   notebook="binary/04_gradcam_gallery.failed.ipynb")

    path = report.write_index(run_dir, exclude=("summary",))
    page = path.read_text()
    assert "Details: binary" in page and "COVID-19 sensitivity and specificity" in page
    assert "0.980" in page  # the published binary accuracy beside ours
    assert 'href="binary/03_evaluate.html"' in page and "binary/04_gradcam_gallery.failed (FAILED)" in page
    assert "RuntimeError: boom &lt;b&gt;" in page and 'class="failed">failed' in page
    assert 'src="binary/figures/confusion_matrix.png"' in page and "1 job(s) failed" in page
    assert "<td>summary</td>" not in page
    status = report.job_status(record.read(), exclude=("summary",))
    assert list(status["status"]) == ["done", "failed"]


def test_summary_job_renders_notebook_05_and_the_index(tmp_path):
    from support.fake_run import make_fake_run

    from cxrlib.evaluate import summarize_task as summarize
    from cxrlib.runner.execute import execute_job

    run_dir = make_fake_run(tmp_path / "run", task="binary", n_folds=3)
    cfg = load_config(None, ["split.n_folds=3", "evaluate.bootstrap=20"])
    summarize(run_dir, "binary", cfg)
    job = build_jobs(RunSpec(cfg=cfg, run_dir=run_dir, params_file=None, overrides=(), tasks=("binary",)))[-1]
    assert job.id == "summary"
    execute_job(job, JobContext(run_dir=run_dir, notebooks_dir=ROOT / "notebooks"))
    nb = nbformat.read(run_dir / "05_summary.ipynb", as_version=4)
    text = "".join(str(c.get("outputs", "")) for c in nb.cells)
    assert "Error" not in text and "Non-COVID" in text  # the binary table rendered
    assert (run_dir / "05_summary.html").exists() and "Details: binary" in (run_dir / "index.html").read_text()
