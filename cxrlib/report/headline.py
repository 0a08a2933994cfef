"""The page's headline: per task, cross-validation beside external validation beside the published study, and
one sentence saying how far the external results fall from cross-validation.

Undefined values read "–" and their reasons are collected as footnotes (never "nan")."""

from __future__ import annotations

import math

import pandas as pd

from ..evaluate.tables import PUBLISHED
from ..evaluate.tables import lookup as _get  # dotted-key lookup, shared with the external table

#: (row label, key into across_folds / pooled / external metrics, key into the published numbers)
HEADLINE_METRICS = (
    ("accuracy", "accuracy", "overall.accuracy"),
    ("balanced accuracy", "macro.recall", None),  # mean recall over classes: accuracy with every class weighted alike
    ("macro F1", "macro.f1", None),
    ("macro AUC", "macro.auc", None),
    ("COVID-19 sensitivity", "covid19.sensitivity", "covid19.recall"),  # the study's COVID-19 recall
    ("COVID-19 specificity", "covid19.specificity", None),
)
DASH = "–"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


class Notes:
    """Footnotes for undefined cells: ``mark(reason)`` returns "– [n]" and remembers the reason once."""

    def __init__(self):
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"{DASH} [{self.reasons.index(reason) + 1}]"


def _interval(entry, notes: Notes, why: str, with_method: bool = False) -> str:
    if not isinstance(entry, dict) or not _finite(entry.get("value")):
        return notes.mark(why)
    text = f"{entry['value']:.3f}"
    if _finite(entry.get("low")) and _finite(entry.get("high")):
        text += f" ({entry['low']:.3f}–{entry['high']:.3f})"
    if with_method and entry.get("method"):
        text += f", {entry['method']}"
    return text


def _mean_sd(entry, notes: Notes, why: str) -> str:
    if not isinstance(entry, dict) or not _finite(entry.get("mean")):
        return notes.mark(why)
    sd = entry.get("sd")
    return f"{entry['mean']:.3f} ± {sd:.3f}" if _finite(sd) else f"{entry['mean']:.3f}"


def external_report(summary: dict) -> dict | None:
    """The summary's external validation report when it holds results (not a total failure)."""
    ext = summary.get("external")
    return ext if isinstance(ext, dict) and "ensemble" in ext else None


def headline_table(summary: dict, task: str, notes: Notes | None = None) -> tuple[pd.DataFrame, Notes]:
    """Rows: accuracy, macro F1 and AUC (and COVID-19 sensitivity / specificity when the task has the class).
    Columns: CV mean ± SD over folds, CV pooled with its CI and method, external ensemble, each external source,
    published. Returns the table of strings and the footnotes of its undefined cells."""
    notes = notes or Notes()
    level = round(100 * summary.get("ci_level", 0.95))
    ext = external_report(summary)
    published = PUBLISHED.get(task, {})
    pooled_col = f"cross-validation, pooled ({level}% CI, method)"
    ext_col = f"external, ensemble ({level}% CI)"
    rows = {}
    for label, key, pub_key in HEADLINE_METRICS:
        if key.startswith("covid19.") and "covid19" not in summary.get("classes", []):
            continue
        row = {
            "cross-validation, mean ± SD over folds": _mean_sd(_get(summary["across_folds"], key), notes,
                                                               "undefined in some fold (e.g. a class absent)"),
            pooled_col: _interval(_get(summary["pooled"], key), notes, "undefined on the pooled test folds",
                                  with_method=True),
        }
        if ext is not None:
            row[ext_col] = _interval(_get(ext["ensemble"]["all"], key), notes,
                                     "undefined on the external data (e.g. a class absent there)")
            for source, metrics in sorted(ext["ensemble"].get("by_source", {}).items()):
                row[f"external: {source}"] = _interval(_get(metrics, key), notes,
                                                       "undefined for this source (e.g. one class only)")
        pub = _get(published, pub_key) if pub_key else None
        row["published (ResNet50)"] = f"{pub:.2f}" if pub is not None else notes.mark("not reported by the study")
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = None
    return table, notes


def headline_sentence(summary: dict) -> str:
    """How far the external results fall from cross-validation, in words (or why there are none)."""
    ext = summary.get("external")
    if isinstance(ext, dict) and ext.get("error"):
        return f"External validation failed ({ext.get('data_root', 'external root')}): {ext['error']}"
    if external_report(summary) is None:
        return "No external validation in this run (set evaluate.external to a data root to add one)."
    level = round(100 * summary.get("ci_level", 0.95))
    cv = _get(summary["pooled"], "accuracy") or {}
    out = _get(ext["ensemble"]["all"], "accuracy") or {}
    if not (_finite(cv.get("value")) and _finite(out.get("value"))):
        return "External accuracy is undefined (no external images of the task's classes were evaluated)."
    gap = out["value"] - cv["value"]
    ci = (f" ({level}% CI {out['low']:.2f}–{out['high']:.2f})"
          if _finite(out.get("low")) and _finite(out.get("high")) else "")
    where = f"{abs(gap):.2f} {'below' if gap < 0 else 'above'} cross-validation" if round(gap, 2) else \
        "the same as in cross-validation"
    n = ext["ensemble"]["all"].get("n")
    on = f"On external data ({n} images)" if n else "On external data"
    return (f"{on} the ensemble's accuracy is {out['value']:.2f}{ci}, {where} "
            f"(pooled {cv['value']:.2f}).")


def external_failures(summary: dict) -> list[str]:
    """Sources of the external root that could not be read, as "source: reason" lines."""
    ext = summary.get("external")
    if not isinstance(ext, dict):
        return []
    return [f"{f.get('source', '?')}: {f.get('reason', 'unknown reason')}" for f in ext.get("failed") or []]
