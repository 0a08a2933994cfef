"""run_all.py end to end with the real notebooks, smoke params and a tiny synthetic data root (3 folds).

Slow by nature (one kernel per notebook job), so one run of one task is carried through every check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from support.synthetic import make_class_folders

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("01_data_exploration", "02_train_fold", "03_evaluate", "04_gradcam_gallery", "05_summary")
MISSING = [n for n in NOTEBOOKS if not (ROOT / "notebooks" / f"{n}.ipynb").exists()]
if not (ROOT / "params" / "smoke.yaml").exists():
    MISSING.append("params/smoke.yaml")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"not written yet: {MISSING}"),
]


def run_all(data, results, run, *extra, popen=False):
    cmd = [sys.executable, str(ROOT / "run_all.py"), "--params", str(ROOT / "params" / "smoke.yaml"),
           "--data", str(data), "--results", str(results), "--run", run, "--no-progress",
           "--set", "split.n_folds=3", f"data.cache_dir={Path(results).parent / 'cache'}", "data.workers=1",
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def snapshot(run_dir: Path) -> dict[Path, int]:
    """mtimes of every result file except the run record and logs (which each invocation updates)."""
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")
            if p.is_file() and p.name != "run.json" and "logs" not in p.relative_to(run_dir).parts}


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _training_started(run_dir: Path) -> bool:
    log = run_dir / "logs" / "train-binary-fold0.log"
    return log.exists() and len(re.findall(r"Executing Cell \d+", log.read_text(errors="replace"))) >= 3


# One run of the binary task carried through four stages (each a module fixture, so any test runs alone):
# killed during fold 0's training -> resumed with a Grad-CAM notebook that fails -> completed -> re-run.


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = make_class_folders(root / "data", {"normal": 8, "viral_pneumonia": 8, "covid19": 8}, size=48)
    broken = root / "notebooks"
    shutil.copytree(ROOT / "notebooks", broken)
    nb = nbformat.read(broken / "04_gradcam_gallery.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell('raise RuntimeError("gradcam broken on purpose")'))
    nbformat.write(nb, broken / "04_gradcam_gallery.ipynb")
    return {"data": data, "results": root / "results", "run_dir": root / "results" / "e2e", "broken": broken}


def invoke(work, *extra, **kw):
    return run_all(work["data"], work["results"], "e2e", "--tasks", "binary", *extra, **kw)


@pytest.fixture(scope="module")
def killed(work):
    run_dir = work["run_dir"]
    proc = invoke(work, popen=True)
    try:
        _wait_for(lambda: _training_started(run_dir) or proc.poll() is not None, 300, "fold 0 training to start")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the runner only: its worker must notice and stop by itself
        out = proc.communicate(timeout=60)[0]
    assert _training_started(run_dir), out[-4000:]
    worker = int(re.search(r"== job train:binary/fold0 \(pid (\d+)\)",
                           (run_dir / "logs" / "train-binary-fold0.log").read_text()).group(1))
    _wait_for(lambda: not Path(f"/proc/{worker}").exists(), 60, "the orphaned worker to exit")
    finished = {p: t for p, t in snapshot(run_dir).items()
                if p.name in ("01_data_exploration.ipynb", "01_data_exploration.html", "splits.csv", "quality.csv")}
    return finished


@pytest.fixture(scope="module")
def resumed(work, killed):
    return invoke(work, "--notebooks", str(work["broken"]))


@pytest.fixture(scope="module")
def completed(work, resumed):
    trained = {p: t for p, t in snapshot(work["run_dir"]).items() if "/fold" in p.as_posix()}
    return invoke(work), trained


def test_killed_run_resumes_and_a_failing_job_is_isolated(work, killed, resumed):
    run_dir = work["run_dir"]
    assert len(killed) == 4  # exploration and splits had finished before the kill
    assert resumed.returncode == 1, resumed.stderr[-4000:]
    record = json.loads((run_dir / "run.json").read_text())
    status = {k: v["status"] for k, v in record["jobs"].items()}
    assert status["gradcam:binary"] == "failed"
    assert "gradcam broken on purpose" in record["jobs"]["gradcam:binary"]["error"]
    assert {status[k] for k in status if k != "gradcam:binary"} == {"done"}  # the summary page still renders
    assert (run_dir / "binary" / "04_gradcam_gallery.failed.ipynb").exists()
    assert "gradcam broken on purpose" in (run_dir / "index.html").read_text()
    assert all(p.stat().st_mtime_ns == t for p, t in killed.items())  # finished jobs untouched
    assert "FAILED" in resumed.stderr and "1 FAILED" in resumed.stderr


def test_completed_run_has_every_notebook_page_and_json(work, completed):
    run_dir = work["run_dir"]
    proc, trained = completed
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 done" in proc.stderr and "7 up to date" in proc.stderr  # only Grad-CAM and the summary ran
    assert all(p.stat().st_mtime_ns == t for p, t in trained.items())
    expected = ["run.json", "index.html", "01_data_exploration.ipynb", "01_data_exploration.html",
                "05_summary.ipynb", "05_summary.html"]
    expected += [f"binary/{n}" for n in ("splits.csv", "quality.csv", "summary.json", "cam_stats.csv", "cam_road.csv",
                                         "03_evaluate.ipynb", "03_evaluate.html",
                                         "04_gradcam_gallery.ipynb", "04_gradcam_gallery.html",
                                         "controls/controls.json", "06_shortcut_controls.ipynb")]
    for k in range(3):
        expected += [f"binary/fold{k}/{n}" for n in ("model.pt", "history.csv", "predictions.csv", "train.json",
                                                     "metrics.json", "02_train_fold.ipynb", "02_train_fold.html")]
    missing = [rel for rel in expected if not (run_dir / rel).is_file()]
    assert not missing, missing
    record = json.loads((run_dir / "run.json").read_text())
    assert {j["status"] for j in record["jobs"].values()} == {"done"} and len(record["jobs"]) == 9
    assert record["params"]["split"]["n_folds"] == 3 and record["data_fingerprint"]["sha256"]
    metrics = json.loads((run_dir / "binary" / "fold1" / "metrics.json").read_text())
    assert metrics["classes"] == ["other", "covid19"] and metrics["n"] > 0
    page = (run_dir / "index.html").read_text()
    assert "Details: binary" in page and 'href="binary/fold2/02_train_fold.html"' in page
    assert "gradcam broken on purpose" not in page
    rendered = nbformat.read(run_dir / "binary" / "fold2" / "02_train_fold.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in rendered.cells)
    assert not list(run_dir.rglob(".*.tmp")) and not list(run_dir.rglob("*.failed.*"))


def test_second_run_skips_everything_and_dry_run_shows_done(work, completed):
    run_dir = work["run_dir"]
    assert completed[0].returncode == 0
    before = snapshot(run_dir)
    again = invoke(work)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "9 up to date" in again.stderr and snapshot(run_dir) == before
    dry = invoke(work, "--dry-run")
    rows = [line for line in dry.stdout.splitlines() if re.match(r"^\d+\s", line)]
    assert len(rows) == 9 and all(" done " in row for row in rows)


def test_job_index_runs_exactly_one_job(work, completed):
    run_dir = work["run_dir"]
    assert completed[0].returncode == 0
    dry = invoke(work, "--dry-run").stdout
    index = int(re.search(r"^(\d+)\s+\d\s+evaluate:binary\s", dry, re.M).group(1))
    before = snapshot(run_dir)
    proc = invoke(work, "--job-index", str(index), "--force")
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = snapshot(run_dir)
    changed = sorted(p.relative_to(run_dir).as_posix() for p in before if after.get(p) != before[p])
    # the evaluation also rewrites the folds' metrics.json (same numbers); nothing else outside its files
    assert {"binary/summary.json", "binary/03_evaluate.ipynb", "binary/03_evaluate.html"} <= set(changed)
    assert all(c.startswith("binary/") and ("fold" not in c or c.endswith("metrics.json")) for c in changed), changed
    assert "1 done" in proc.stderr


def test_adding_the_other_task_reuses_the_run_and_summarises_both(work, completed):
    run_dir = work["run_dir"]
    assert completed[0].returncode == 0
    before = {p: t for p, t in snapshot(run_dir).items() if "binary" in p.relative_to(run_dir).parts}
    proc = run_all(work["data"], work["results"], "e2e")  # all tasks of the params: multiclass joins binary
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = snapshot(run_dir)
    assert all(after[p] == t for p, t in before.items())  # the finished task is untouched
    for k in range(3):
        assert (run_dir / "multiclass" / f"fold{k}" / "metrics.json").is_file()
    summary = json.loads((run_dir / "multiclass" / "summary.json").read_text())
    assert summary["classes"] == ["normal", "viral_pneumonia", "covid19"]
    page = (run_dir / "index.html").read_text()
    assert "Details: binary" in page and "Details: multiclass" in page
    assert (run_dir / "multiclass" / "04_gradcam_gallery.html").is_file()


def test_summary_notebook_runs_under_nbval_on_the_run(work, completed, tmp_path):
    from support.nbval_helper import run_notebook_under_nbval

    assert completed[0].returncode == 0
    index = work["run_dir"] / "index.html"
    before = index.stat().st_mtime_ns
    run_notebook_under_nbval(ROOT / "notebooks" / "05_summary.ipynb", tmp_path, {"run_dir": str(work["run_dir"])})
    assert index.stat().st_mtime_ns > before and "Details: binary" in index.read_text()


@pytest.mark.parametrize("notebook, extra", [
    ("03_evaluate", {}),
    ("04_gradcam_gallery", {"fold": "all"}),
])
def test_report_notebooks_run_under_nbval_on_a_trained_run(work, completed, tmp_path, notebook, extra):
    """nbval on artifacts of a real (tiny) training run, in a copy so the run itself stays untouched."""
    from support.nbval_helper import run_notebook_under_nbval

    assert completed[0].returncode == 0
    run_copy = tmp_path / "run"
    shutil.copytree(work["run_dir"], run_copy)
    params = {"run_dir": str(run_copy), "task": "binary", "params_file": str(ROOT / "params" / "smoke.yaml"),
              "overrides": ["split.n_folds=3", "cam.n_examples=2",
                            f"data.cache_dir={Path(work['results']).parent / 'cache'}"], **extra}
    run_notebook_under_nbval(ROOT / "notebooks" / f"{notebook}.ipynb", tmp_path / "nb", params)
    written = "summary.json" if notebook == "03_evaluate" else "cam_stats.csv"
    assert (run_copy / "binary" / written).stat().st_mtime_ns > (work["run_dir"] / "binary" / written).stat().st_mtime_ns
