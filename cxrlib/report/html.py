"""``results/<run>/index.html``: the headline numbers of each task first, then the key figures, the shortcut
checks (with a legend), the source audit, details, and provenance (run facts, jobs) last."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import io
from ..evaluate.summary import read_summary
from ..layout import RunLayout
from . import tables as t
from .headline import Notes, external_failures, headline_sentence, headline_table

_CSS = """
body{font-family:system-ui,sans-serif;margin:1em auto;max-width:1240px;color:#222;padding:0 1em;font-size:14px}
h1{font-size:1.4em;margin:.2em 0} h2{font-size:1.2em;margin:.8em 0 .3em} h3{font-size:1.05em;margin:.6em 0 .2em}
table{border-collapse:collapse;margin:.3em 0 .8em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3} .done{color:#186a1f} .failed{color:#b00020;font-weight:bold}
.skipped,.pending,.running{color:#8a6d00} img{max-width:100%;border:1px solid #ddd;margin:.3em 0}
figure{display:inline-block;max-width:48%;margin:.4em;vertical-align:top} figcaption{font-size:.85em;color:#444}
.note{color:#666;font-size:.85em} .sentence{margin:.2em 0 .2em;font-weight:600} .headline table{margin:.2em 0}
"""

#: Caption per figure (matched on the file name), saying what it shows.
CAPTIONS = (
    ("confusion_counts", "Confusion matrix of the pooled test folds (counts)"),
    ("confusion_percent", "Confusion matrix of the pooled test folds (share of each true class)"),
    ("roc", "ROC curves per class, pooled test folds"),
    ("precision_recall", "Precision–recall curves per class, pooled test folds"),
    ("reliability", "Reliability diagram: predicted confidence against observed accuracy"),
    ("loss_curves", "Training and validation loss per fold (Figure 2)"),
    ("cam_layers", "Figure 5: one COVID-19 X-ray and its Grad-CAM map at five depths"),
    ("cam_covid_grid", "Figure 6: final-layer maps of correctly classified COVID-19 cases"),
    ("cam_correct_vs_wrong", "Maps of correct (left) and misclassified (right) examples per class"),
    ("cam_browser_first", "The first example of the interactive browser"),
    ("image_sizes", "Original image sizes per source"),
    ("samples", "Random samples per class"),
    ("intensity_histograms", "Intensity histograms per class and source"),
)
KEY = ("confusion_counts", "roc", "cam_layers", "cam_covid_grid")


def caption(rel: str) -> str:
    name = Path(rel).stem
    return next((text for key, text in CAPTIONS if name.startswith(key)), name.replace("_", " "))


def _table(frame: pd.DataFrame | None, index: bool = True) -> str:
    if frame is None or frame.empty:
        return '<p class="note">not available</p>'
    shown = frame.map(lambda v: "–" if isinstance(v, str) and "nan" in v.split() or v == "nan" else v)
    return shown.to_html(index=index, float_format=_fmt, na_rep="–", border=0, escape=True)


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _html_of(notebook: str) -> str:
    return notebook[: -len(".ipynb")] + ".html" if notebook.endswith(".ipynb") else notebook


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


def _figures_html(paths: Sequence[str], prefix: str = "") -> str:
    return "".join(f'<figure><a href="{html.escape(f)}"><img src="{html.escape(f)}" alt="{html.escape(caption(f))}">'
                   f"</a><figcaption>{html.escape(prefix + caption(f))}</figcaption></figure>" for f in paths)


def _section(title: str, build, level: int = 3) -> str:
    try:
        body = build()
    except t._READ_ERRORS as exc:
        body = f'<p class="failed">could not read: {html.escape(str(exc))}</p>'
    return f"<h{level}>{html.escape(title)}</h{level}>{body}"


def _notes_html(notes: Notes) -> str:
    if not notes.reasons:
        return ""
    return '<p class="note">' + "; ".join(f"[{i}] – : {html.escape(r)}" for i, r in enumerate(notes.reasons, 1)) + "</p>"


def _headline(summary: dict | None, task: str, source: str | None = None) -> str:
    title = f"<h3>{html.escape(task)}</h3>"
    if source is not None:  # derived_tasks: say whose models these are before any number
        title += (f'<p class="derived">No models of its own: each round is <b>{html.escape(source)}</b>\'s model of '
                  f"that round, its classes summed into {html.escape(task)}'s, on the same images and folds "
                  f"(<code>derived_tasks.{html.escape(task)}</code>).</p>")
    if summary is None:
        return title + '<p class="failed">no summary (evaluation did not run or failed)</p>'
    table, notes = headline_table(summary, task)
    failed = external_failures(summary)
    sentence = headline_sentence(summary)
    cls = "sentence failed" if sentence.startswith("External validation failed") else "sentence"
    body = title + f'<p class="{cls}">{html.escape(sentence)}</p>' + _table(table) + _notes_html(notes)
    if failed:
        body += ('<p class="failed">External sources that could not be read: '
                 + "; ".join(html.escape(f) for f in failed) + "</p>")
    return body


def _shortcuts_html(root: Path, task: str) -> str:
    table = t.shortcut_table(root, task)
    if table is None or table.empty:
        return '<p class="note">no Grad-CAM statistics (the gallery did not run or failed)</p>'
    legend = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(t.SHORTCUT_LEGEND[c])}</li>"
                     for c in table.columns if c in t.SHORTCUT_LEGEND)
    return _table(table) + f'<ul class="note">{legend}</ul>'


def _controls_html(root: Path, task: str) -> str:
    from ..controls.report import control_sentences, controls_table, read_controls

    report = read_controls(root, task)
    if report is None:
        return '<p class="note">no shortcut controls (controls.enabled is off, or the stage did not run)</p>'
    sentences = "".join(f"<li>{html.escape(s)}</li>" for s in control_sentences(report).values())
    return _table(controls_table(report)) + f'<ul class="note">{sentences}</ul>'


def render_index(run_dir: str | os.PathLike, exclude: Sequence[str] = ()) -> str:
    """The summary page of the run as one HTML document (links and images relative to the run folder)."""
    root = Path(run_dir)
    run = t.load_run(root)
    status = t.job_status(run, exclude)
    tasks = t.run_tasks(root, run)
    summaries = {task: read_summary(root, task) for task in tasks}
    derived = (run.get("params") or {}).get("derived_tasks") or {}
    n_bad = int(status["status"].isin(["failed", "skipped"]).sum()) if len(status) else 0
    parts = [f"<h1>CXR study — run {html.escape(run.get('run', root.name))}</h1>"]
    if n_bad:
        parts.append(f'<p class="failed">{n_bad} job(s) failed or were skipped; see the job table at the end.</p>')
    parts.append('<section class="headline" id="headline"><h2>Headline: cross-validation, external validation '
                 "and the published study</h2>"
                 + "".join(_headline(summaries[task], task, derived.get(task)) for task in tasks) + "</section>")
    parts.append("<h2>Key figures</h2>")
    for task in tasks:
        figs = t.figures(root, task)
        key = [f for k in KEY for f in figs if Path(f).stem.startswith(k)][:4]
        parts.append(_figures_html(key, f"{task}: "))
    parts.append("<h2>Shortcut checks (Grad-CAM)</h2>")
    parts.extend(_section(task, lambda task=task: _shortcuts_html(root, task)) for task in tasks)
    parts.append("<h2>Shortcut controls (retrained on masked images, source probe)</h2>")
    parts.extend(_section(task, lambda task=task: _controls_html(root, task)) for task in tasks)
    parts.append(_section("Source audit: images per class and source", lambda: _table(t.source_audit(root)), 2))
    for task in tasks:
        summary = summaries[task]
        parts.append(f"<h2>Details: {html.escape(task)}</h2>")
        if summary is not None:
            parts.append(_section("Results beside the original study (Table 1/2)",
                                  lambda: _table(t.results_table(summary, task))))
            parts.append(_section("COVID-19 sensitivity and specificity", lambda: _table(t.covid_table(summary))))
            if t.external_table(summary) is not None:
                parts.append(_section("External validation, every model", lambda: _table(t.external_table(summary))))
            parts.append(_section("Test error rate by class and source", lambda: _table(t.errors_table(summary))))
        figs = t.figures(root, task)
        if figs:
            parts.append("<h3>All figures</h3>" + _figures_html(figs))
    data_figs = t.figures(root, "exploration")
    if data_figs:
        parts.append("<h2>Data</h2>" + _figures_html(data_figs))
    parts.append("<h2>Notebooks</h2><ul>" + "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(label)}</a></li>' for label, path in t.notebooks(root)) + "</ul>")
    parts.append("<h2>Provenance</h2>" + _table(t.run_info(run, root)) + "<h3>Jobs</h3>" + _status_html(status))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>CXR study — {html.escape(root.name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_index(run_dir: str | os.PathLike, exclude: Sequence[str] = ()) -> Path:
    """Write the run's ``index.html`` atomically; returns its path."""
    return io.write_text(RunLayout(run_dir).index_html, render_index(run_dir, exclude))
