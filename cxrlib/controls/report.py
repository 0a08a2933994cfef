"""``controls/controls.json``, the class x source contingency with Cramér's V, and the controls table.

Schema: ``{"<control>": {"accuracy": {"value", "low", "high", "method"} | null, "chance", "n", "folds",
"external": {"data_root", "accuracy", "chance", "n"} | {"data_root", "error"} | null, "skipped": null |
reason}, ..., "contingency": {class: {source: n}}, "cramers_v": float | null, "params": {...}}`` with the controls
``full``, ``border_only``, ``centre_only``, ``lungs_masked`` and ``source_probe`` (which adds ``by_class``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from .. import io
from ..layout import RunLayout
from .masks import CONTROLS

#: What each control tests (first words of its sentence).
MEANING = {
    "full": "The study's own models on the same test folds",
    "border_only": "Trained and tested on the outer band only (text, markers, collimation edges)",
    "centre_only": "Trained and tested without the outer band (lungs and mediastinum stay)",
    "lungs_masked": "Trained and tested with the lungs replaced by a constant",
    "source_probe": "Trained to tell the source of images within one class",
}


def contingency(splits: pd.DataFrame) -> pd.DataFrame:
    """Images per task class (rows) x source (columns)."""
    return pd.crosstab(splits["target"].astype(str), splits["source"].astype(str))


def cramers_v(table: pd.DataFrame | np.ndarray) -> float | None:
    """Cramér's V of a contingency table: sqrt(chi² / (n (min(r, c) - 1))), 0 = independent, 1 = one determines
    the other. None when it is undefined (a single row or column, or no counts)."""
    obs = np.asarray(table, dtype=np.float64)
    obs = obs[obs.sum(1) > 0][:, obs.sum(0) > 0] if obs.size else obs
    n = obs.sum()
    k = min(obs.shape) if obs.ndim == 2 else 0
    if n == 0 or k < 2:
        return None
    expected = np.outer(obs.sum(1), obs.sum(0)) / n
    chi2 = float(((obs - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / (n * (k - 1)))


def build_report(entries: dict[str, dict], splits: pd.DataFrame, params: dict | None = None) -> dict[str, Any]:
    table = contingency(splits)
    report = {name: entries[name] for name in CONTROLS}
    report["contingency"] = {str(c): {str(s): int(v) for s, v in row.items()} for c, row in table.iterrows()}
    report["cramers_v"] = cramers_v(table)
    if params is not None:
        report["params"] = params
    return io.json_safe(report)


def write_controls(run_dir: str | os.PathLike, task: str, report: dict[str, Any]) -> None:
    io.write_json(RunLayout(run_dir).task(task).controls, report)


def read_controls(run_dir: str | os.PathLike, task: str) -> dict[str, Any] | None:
    path = RunLayout(run_dir).task(task).controls
    return io.read_json(path) if path.is_file() else None


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _acc(acc: dict | None) -> str:
    if not acc or acc.get("value") is None:
        return "–"
    return f"{_pct(acc['value'])} ({_pct(acc['low'])}–{_pct(acc['high'])})"


def controls_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per control: test accuracy with its interval, chance, n and external accuracy (or why not)."""
    rows = []
    for name in CONTROLS:
        e = report.get(name)
        if e is None:
            continue
        ext = e.get("external")
        ext_text = "–" if not ext else (f"error: {ext['error']}" if "error" in ext else _acc(ext.get("accuracy")))
        rows.append({"control": name, "accuracy (95 % CI)": _acc(e.get("accuracy")) if not e.get("skipped")
                     else f"skipped: {e['skipped']}", "chance": _pct(e.get("chance")), "n": e.get("n", 0),
                     "external accuracy": ext_text})
    return pd.DataFrame(rows).set_index("control")


def _above_chance(e: dict) -> bool | None:
    acc = e.get("accuracy") or {}
    if acc.get("low") is None or e.get("chance") is None:
        return None
    return acc["low"] > e["chance"]


def control_sentences(report: dict[str, Any]) -> dict[str, str]:
    """A sentence per control saying what its result means for this run."""
    out = {}
    full = (report.get("full") or {}).get("accuracy") or {}
    source = (report.get("params") or {}).get("derived_from")  # derived_tasks: the masked models are its source's
    for name in CONTROLS:
        e = report.get(name)
        if e is None:
            continue
        head = f"{MEANING[name]}: "
        if source and name in ("border_only", "centre_only", "lungs_masked"):
            head = f"{MEANING[name]} ({source}'s control models, their classes summed): "
        if e.get("skipped"):
            out[name] = head + f"not run ({e['skipped']})."
            continue
        acc, chance, above = e["accuracy"]["value"], e.get("chance"), _above_chance(e)
        said = f"{_pct(acc)} against {_pct(chance)} by chance"
        if name == "full":
            out[name] = head + f"{said}; the reference for the controls."
        elif name == "border_only":
            out[name] = head + said + ("; the labels are predictable without anatomy: a shortcut is available."
                                       if above else "; the border alone does not give the labels away.")
        elif name == "centre_only":
            drop = None if full.get("value") is None else full["value"] - acc
            out[name] = head + said + (f"; {_pct(abs(drop))} {'below' if drop >= 0 else 'above'} the full image, "
                                       "the border's contribution." if drop is not None else ".")
        elif name == "lungs_masked":
            out[name] = head + said + ("; the models classify without seeing the lungs: evidence of a shortcut."
                                       if above else "; without the lungs the models are near chance.")
        else:
            v = report.get("cramers_v")
            out[name] = head + said + ("; each source leaves a learnable fingerprint." if above
                                       else "; the sources are not told apart above chance.") + (
                f" Class and source are associated with Cramér's V = {v:.2f}." if v is not None else "")
    return out
