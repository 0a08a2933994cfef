"""The run's tables as pandas frames (notebook 05 shows them; ``report.html`` renders them into ``index.html``):
run facts, job status, results beside the original study, COVID-19 rates, external validation, errors by
source, shortcut checks, the source audit, and the lists of figures and notebooks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import io
from ..errors import ArtifactError
from ..evaluate.summary import read_summary  # noqa: F401  (re-exported for notebook 05)
from ..layout import NB_CONTROLS, RunLayout

#: Figures shown first on the page when present (others follow in name order).
KEY_FIGURES = ("confusion", "roc", "reliability", "loss", "correct", "layers", "samples", "sizes")
NOTEBOOK_ORDER = ("01_", "02_", "03_", "04_", "05_", "07_")
_READ_ERRORS = (ArtifactError, OSError, ValueError, KeyError, TypeError, pd.errors.ParserError)


def load_run(run_dir: str | os.PathLike) -> dict:
    """The run's record ({} when absent)."""
    path = RunLayout(run_dir).record
    return io.read_json(path) if path.exists() else {}


def run_tasks(run_dir: str | os.PathLike, run: dict | None = None) -> list[str]:
    """Tasks of the run: those recorded in its record, then any other subfolder holding splits."""
    run = load_run(run_dir) if run is None else run
    found = RunLayout(run_dir).tasks_with_splits()
    return list(dict.fromkeys([*(run.get("tasks") or []), *found]))


def safe_table(build, *args):
    """``build(*args)``, or a short note naming what could not be read (one bad artifact never sinks the page)."""
    from IPython.display import Markdown

    try:
        return build(*args)
    except _READ_ERRORS as exc:
        return Markdown(f"*could not read: {exc}*")


def run_info(run: dict, run_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Key facts of the run: name, dates, params file, overrides, commit, data fingerprint, seeds, versions.

    The record's fingerprint is written when an invocation ends, after the summary page; with ``run_dir`` a
    missing one is computed from the splits files the same way."""
    git = run.get("git") or {}
    fingerprint = (run.get("data_fingerprint") or {}).get("sha256")
    if fingerprint is None and run_dir is not None:
        from ..runner.state import data_fingerprint

        fingerprint = data_fingerprint(run_dir, run_tasks(run_dir, run))["sha256"]
    versions = run.get("versions") or {}
    rows = [
        ("run", run.get("run")), ("created", run.get("created")), ("updated", run.get("updated")),
        ("params file", run.get("params_file")), ("overrides", " ".join(run.get("overrides") or []) or "none"),
        ("git commit", (git.get("commit") or "not a git checkout") + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("data fingerprint", fingerprint or "no splits files yet"),
        ("seeds", ", ".join(f"{k}={v}" for k, v in (run.get("seeds") or {}).items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def job_status(run: dict, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """One row per job of the table: status, seconds, error, rendered notebook and log."""
    rows = []
    jobs = run.get("jobs") or {}
    for entry in run.get("job_table") or [{"index": i, "id": jid} for i, jid in enumerate(jobs)]:
        if entry["id"] in exclude:
            continue
        state = jobs.get(entry["id"], {})
        rows.append({
            "index": "-" if entry.get("index") is None else entry["index"], "job": entry["id"], "status": state.get("status", "pending"),
            "seconds": state.get("seconds"), "error": state.get("error") or "", "notebook": state.get("notebook") or "",
            "log": state.get("log") or "", "commit": (state.get("git_commit") or "")[:10] + ("+" if state.get("git_dirty") else ""),
        })
    return pd.DataFrame(rows, columns=["index", "job", "status", "seconds", "commit", "error", "notebook", "log"])


def results_table(summary: dict, task: str) -> pd.DataFrame:
    """The paper's table for ``task`` (published vs. ours, fold mean ± SD and pooled CI)."""
    from ..evaluate import paper_table

    return paper_table(summary, task)


def covid_table(summary: dict) -> pd.DataFrame | None:
    """COVID-19 sensitivity and specificity (pooled with interval, fold mean and SD), if the task has the class."""
    block = summary.get("covid19")
    if not block:
        return None
    return pd.DataFrame.from_dict(block, orient="index")


def errors_table(summary: dict) -> pd.DataFrame | None:
    """Test error rate by true class x source (a source-specific failure hints at a shortcut)."""
    records = summary.get("errors_by_source")
    if not records:
        return None
    frame = pd.DataFrame.from_records(records)
    return frame.set_index(frame.columns[0])


def external_table(summary: dict) -> pd.DataFrame | None:
    """External validation beside cross-validation (``cxrlib.evaluate.tables.external_table``), if the run had one."""
    if not summary.get("external") or "ensemble" not in summary["external"]:
        return None  # none, or a failed validation ({"data_root", "error"}): the page shows the error
    from ..evaluate.tables import external_table as table

    return table(summary["external"], summary)


def shortcut_table(run_dir: str | os.PathLike, task: str) -> pd.DataFrame | None:
    """Grad-CAM shortcut checks of ``task``: per true class, CAM mass in the border band / lungs and ROAD."""
    from ..cam.stats import read_cam_stats, shortcut_summary

    stats = read_cam_stats(run_dir, task)
    return shortcut_summary(stats) if stats is not None and len(stats) else None


#: What each shortcut-check column means (one line each, shown under the table).
SHORTCUT_LEGEND = {
    "layer": "the layer whose maps are summarised (the deepest with a usable resolution)",
    "n": "examples of this true class whose maps were computed",
    "correct_shown": "share of those examples the model classified correctly (examples are picked per outcome)",
    "border_share": "share of the map's mass in the image border band (text, markers, collimation edges)",
    "border_area": "share of the image area the border band covers (border_share at chance)",
    "center_share": "share of the map's mass in the image centre",
    "lung_share": "share of the map's mass inside the lung mask (only for sources that ship masks)",
    "lung_area": "share of the image area inside the lung mask (lung_share at chance)",
    "road_cam": "accuracy drop when the most salient pixels are removed (ROAD); larger: the map finds what matters",
    "road_random": "the same drop when as many random pixels are removed (the baseline for road_cam)",
    "road_n": "examples the ROAD numbers average over",
}


def source_audit(run_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Images per class x source: the exploration's audit table, else counted from the tasks' splits files."""
    layout = RunLayout(run_dir)
    if layout.source_audit.exists():
        return pd.read_csv(layout.source_audit).set_index("label")
    for task in layout.tasks_with_splits():
        splits = pd.read_csv(layout.task(task).splits)
        if {"label", "source"} <= set(splits.columns):
            return pd.crosstab(splits["label"], splits["source"], margins=True, margins_name="total")
    return None


def figures(run_dir: str | os.PathLike, task: str) -> list[str]:
    """The task's figures (paths relative to the run folder), key figures first."""
    root = Path(run_dir)
    folder = RunLayout(root).exploration_figures if task == "exploration" else RunLayout(root).task(task).figures
    found = sorted(folder.glob("*.png")) + sorted(folder.glob("**/*.png"))
    unique = list(dict.fromkeys(p.relative_to(root).as_posix() for p in found))

    def rank(rel: str) -> tuple[int, str]:
        name = Path(rel).name.lower()
        hits = [i for i, key in enumerate(KEY_FIGURES) if key in name]
        return (hits[0] if hits else len(KEY_FIGURES), rel)

    return sorted(unique, key=rank)


def notebooks(run_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, path) of every rendered notebook of the run, HTML export preferred, failed attempts included."""
    root = Path(run_dir)
    out = []
    for nb in sorted([*root.rglob("0[1-57]_*.ipynb"), *root.rglob(f"{Path(NB_CONTROLS).stem}*.ipynb")]):
        if nb.name.startswith("."):
            continue
        rel = nb.relative_to(root)
        shown = nb.with_suffix(".html") if nb.with_suffix(".html").exists() else nb
        label = rel.with_suffix("").as_posix() + (" (FAILED)" if nb.stem.endswith(".failed") else "")
        out.append((label, shown.relative_to(root).as_posix()))
    return sorted(out, key=lambda t: (t[1].count("/"), t[1]))
