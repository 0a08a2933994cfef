"""The run's summary: job status, both tasks' tables and key figures, external validation, shortcut checks
and links to every rendered notebook, as pandas tables (for notebook 05) and as ``results/<run>/index.html``."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import io
from .errors import ArtifactError
from .evaluate.summary import read_summary
from .layout import RunLayout

#: Figures shown first on the page when present (others follow in name order).
KEY_FIGURES = ("confusion", "roc", "reliability", "loss", "correct", "layers", "samples", "sizes")
NOTEBOOK_ORDER = ("01_", "02_", "03_", "04_", "05_")
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


def run_info(run: dict) -> pd.DataFrame:
    """Key facts of the run: name, dates, params file, overrides, commit, data fingerprint, seeds, versions."""
    git = run.get("git") or {}
    versions = run.get("versions") or {}
    rows = [
        ("run", run.get("run")), ("created", run.get("created")), ("updated", run.get("updated")),
        ("params file", run.get("params_file")), ("overrides", " ".join(run.get("overrides") or []) or "none"),
        ("git commit", (git.get("commit") or "not a git checkout") + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("data fingerprint", (run.get("data_fingerprint") or {}).get("sha256")),
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
    from .evaluate import paper_table

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
    if not summary.get("external"):
        return None
    from .evaluate.tables import external_table as table

    return table(summary["external"], summary)


def shortcut_table(run_dir: str | os.PathLike, task: str) -> pd.DataFrame | None:
    """Grad-CAM shortcut checks of ``task``: per true class, CAM mass in the border band / lungs and ROAD."""
    from .cam.stats import read_cam_stats, shortcut_summary

    stats = read_cam_stats(run_dir, task)
    return shortcut_summary(stats) if stats is not None and len(stats) else None


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
    for nb in sorted(root.rglob("0[1-5]_*.ipynb")):
        if nb.name.startswith("."):
            continue
        rel = nb.relative_to(root)
        shown = nb.with_suffix(".html") if nb.with_suffix(".html").exists() else nb
        label = rel.with_suffix("").as_posix() + (" (FAILED)" if nb.stem.endswith(".failed") else "")
        out.append((label, shown.relative_to(root).as_posix()))
    return sorted(out, key=lambda t: (t[1].count("/"), t[1]))


# ----------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} .done{color:#186a1f} .failed{color:#b00020;font-weight:bold} .skipped,.pending,.running{color:#8a6d00}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0} figure{display:inline-block;max-width:48%;margin:.5em}
figcaption{font-size:.8em;color:#555} .note{color:#666}
"""


def _table(frame: pd.DataFrame | None, index: bool = True) -> str:
    if frame is None or frame.empty:
        return '<p class="note">not available</p>'
    return frame.to_html(index=index, float_format=_fmt, na_rep="–", border=0, escape=True)


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _status_html(status: pd.DataFrame) -> str:
    if status.empty:
        return '<p class="note">no jobs recorded</p>'
    rows = []
    for r in status.itertuples():
        link = f'<a href="{html.escape(_html_of(r.notebook))}">notebook</a>' if r.notebook else ""
        log = f'<a href="{html.escape(r.log)}">log</a>' if r.log else ""
        secs = "" if r.seconds is None or (isinstance(r.seconds, float) and math.isnan(r.seconds)) else f"{r.seconds:.1f}"
        rows.append(f"<tr><td>{r.index}</td><td>{html.escape(r.job)}</td>"
                    f'<td class="{html.escape(r.status)}">{html.escape(r.status)}</td><td>{secs}</td>'
                    f"<td>{html.escape(r.error)}</td><td>{link} {log}</td></tr>")
    return ("<table><tr><th>#</th><th>job</th><th>status</th><th>seconds</th><th>error</th><th>files</th></tr>"
            + "".join(rows) + "</table>")


def _html_of(notebook: str) -> str:
    return notebook[: -len(".ipynb")] + ".html" if notebook.endswith(".ipynb") else notebook


def _figures_html(paths: Sequence[str]) -> str:
    return "".join(f'<figure><a href="{html.escape(f)}"><img src="{html.escape(f)}" alt="{html.escape(f)}"></a>'
                   f"<figcaption>{html.escape(f)}</figcaption></figure>" for f in paths)


def _section(title: str, build) -> str:
    try:
        body = build()
    except _READ_ERRORS as exc:
        body = f'<p class="failed">could not read: {html.escape(str(exc))}</p>'
    return f"<h3>{html.escape(title)}</h3>{body}"


def render_index(run_dir: str | os.PathLike, exclude: Sequence[str] = ()) -> str:
    """The summary page of the run as one HTML document (links and images relative to the run folder)."""
    root = Path(run_dir)
    run = load_run(root)
    status = job_status(run, exclude)
    n_bad = int(status["status"].isin(["failed", "skipped"]).sum()) if len(status) else 0
    parts = [f"<h1>CXR study — run {html.escape(run.get('run', root.name))}</h1>"]
    if n_bad:
        parts.append(f'<p class="failed">{n_bad} job(s) failed or were skipped; see the job table.</p>')
    parts.append("<h2>Run</h2>" + _table(run_info(run)))
    data_figs = figures(root, "exploration")
    if data_figs:
        parts.append('<h2>Data</h2><p class="note">From the exploration notebook; sources, folds and the leakage '
                     "audit are in it.</p>" + _figures_html(data_figs))
    for task in run_tasks(root, run):
        summary = read_summary(root, task)
        parts.append(f"<h2>Task: {html.escape(task)}</h2>")
        if summary is None:
            parts.append('<p class="note">no summary (evaluation did not run or failed)</p>')
        else:
            parts.append(_section("Results beside the original study", lambda: _table(results_table(summary, task))))
            parts.append(_section("COVID-19 sensitivity and specificity", lambda: _table(covid_table(summary))))
            parts.append(_section("External validation", lambda: _table(external_table(summary)) if summary.get(
                "external") else '<p class="note">none in this run (params: evaluate.external)</p>'))
            parts.append(_section("Test error rate by class and source", lambda: _table(errors_table(summary))))
        parts.append(_section("Shortcut checks (Grad-CAM mass in the border band and lungs, ROAD)",
                              lambda: _table(shortcut_table(root, task))))
        figs = figures(root, task)
        if figs:
            parts.append("<h3>Figures</h3>" + _figures_html(figs))
    parts.append("<h2>Notebooks</h2><ul>" + "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(label)}</a></li>' for label, path in notebooks(root)) + "</ul>")
    parts.append("<h2>Jobs</h2>" + _status_html(status))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>CXR study — {html.escape(root.name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_index(run_dir: str | os.PathLike, exclude: Sequence[str] = ()) -> Path:
    """Write the run's ``index.html`` atomically; returns its path."""
    return io.write_text(RunLayout(run_dir).index_html, render_index(run_dir, exclude))
