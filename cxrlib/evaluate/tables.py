"""Tables for readers: the original study's Tables 1 and 2 beside ours, per fold, errors by class x source,
and external validation beside cross-validation."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..errors import ArtifactError
from .artifacts import scored_rows


#: The original study's published results (Tables 1 and 2), by task and class; "overall" holds accuracy.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "multiclass": {
        "overall": {"accuracy": 0.94},
        "normal": {"precision": 0.91, "recall": 0.95},
        "viral_pneumonia": {"precision": 0.95, "recall": 0.89},
        "covid19": {"precision": 0.97, "recall": 0.99},
    },
    "binary": {
        "overall": {"accuracy": 0.98},
        "other": {"precision": 0.98, "recall": 0.99},
        "covid19": {"precision": 0.99, "recall": 0.98},
    },
}

#: How the original tables name the classes.
DISPLAY_NAMES = {"normal": "Normal", "viral_pneumonia": "Viral pneumonia", "covid19": "COVID-19", "other": "Non-COVID"}


def errors_by_source(pred_frame: pd.DataFrame, value: str = "error_rate", classes: list[str] | None = None) -> pd.DataFrame:
    """Class x source table of test errors: ``value`` is "error_rate" (default), "errors" or "n".

    Rows are true classes (in the order of ``classes`` when given), columns sources, plus an "all" row and
    column. A source where one class fails far
    more often than elsewhere suggests the model learnt something about the source, not the disease.
    """
    if value not in ("error_rate", "errors", "n"):
        raise ValueError(f"value must be error_rate, errors or n, got {value!r}")
    frame = scored_rows(pred_frame)
    missing = [c for c in ("true", "predicted", "source") if c not in frame.columns]
    if missing:
        raise ArtifactError(f"predictions: missing columns {missing}")
    wrong = (frame["true"] != frame["predicted"]).astype(int)
    data = pd.DataFrame({"true": frame["true"].astype(str), "source": frame["source"].astype(str), "wrong": wrong})
    errors = data.pivot_table(index="true", columns="source", values="wrong", aggfunc="sum", margins=True,
                              margins_name="all", observed=True)
    counts = data.pivot_table(index="true", columns="source", values="wrong", aggfunc="count", margins=True,
                              margins_name="all", observed=True)
    table = {"errors": errors, "n": counts, "error_rate": errors / counts}[value]
    if classes is not None:
        table = table.reindex([c for c in classes if c in table.index] + ["all"])
    table.index.name, table.columns.name = "class", "source"
    return table


def paper_table(summary: dict, task: str) -> pd.DataFrame:
    """Table 1 (multiclass) / Table 2 (binary) in the original layout, beside the published numbers.

    Rows: Overall accuracy / precision / recall (macro averages), then precision and recall per class.
    Columns: published, mean and SD over folds, pooled value with its interval, and a formatted ``ours``.
    Published overall precision and recall are NaN: the original reports only the overall accuracy.
    """
    published = PUBLISHED.get(task, {})
    folds, pooled = summary["across_folds"], summary["pooled"]
    rows = [("Overall", "accuracy", published.get("overall", {}).get("accuracy"), folds["accuracy"],
             pooled["accuracy"])]
    for metric in ("precision", "recall"):
        rows.append(("Overall", metric, published.get("overall", {}).get(metric), folds["macro"][metric],
                     pooled["macro"][metric]))
    for cls in summary["classes"]:
        for metric in ("precision", "recall"):
            rows.append((DISPLAY_NAMES.get(cls, cls), metric, published.get(cls, {}).get(metric),
                         folds["per_class"][cls][metric], pooled["per_class"][cls][metric]))
    level = round(100 * summary.get("ci_level", 0.95))
    records = []
    for name, metric, pub, fold, pool in rows:
        records.append({
            "class": name, "metric": metric,
            "published": math.nan if pub is None else pub,
            "mean": _num(fold["mean"]), "sd": _num(fold["sd"]),
            "pooled": _num(pool["value"]), "low": _num(pool["low"]), "high": _num(pool["high"]),
            "ours": f"{_num(fold['mean']):.3f} ± {_num(fold['sd']):.3f} (pooled {_num(pool['value']):.3f}, "
                    f"{level}% CI {_num(pool['low']):.3f}–{_num(pool['high']):.3f})",
        })
    return pd.DataFrame.from_records(records).set_index(["class", "metric"])


def fold_table(summary: dict) -> pd.DataFrame:
    """One row per fold (then mean and SD): test images, accuracy, macro precision / recall / F1 / AUC, ECE, and
    the calibration temperature when the folds were calibrated."""
    temps = (summary.get("calibration") or {}).get("temperature")
    calibrated = temps is not None and any(t != 1.0 for t in temps)
    rows = []
    for i, m in enumerate(summary["folds"]):
        rows.append({"fold": str(m["fold"]), "n": m["n"], "accuracy": m["accuracy"],
                     **{f"macro {k}": m["macro"][k] for k in ("precision", "recall", "f1", "auc")}, "ece": m["ece"],
                     **({"temperature": temps[i]} if calibrated else {})})
    table = pd.DataFrame(rows).set_index("fold").astype(float)
    stats = table.drop(columns="n").agg(["mean", "std"])  # std: sample SD (ddof=1), as in across_folds
    table = pd.concat([table, stats.rename(index={"std": "sd"})])
    table["n"] = table["n"].astype("Int64")
    return table


def calibration_note(summary: dict) -> str:
    """One sentence on how the probabilities were calibrated (``evaluate.calibration``), for the reliability plot."""
    cal = summary.get("calibration") or {"method": "none"}
    temps = cal.get("temperature") or []
    if cal["method"] == "none" or not temps:
        return ("The probabilities are the networks' own softmax outputs (`evaluate.calibration: none`): no "
                "rescaling after training.")
    return (f"The probabilities are temperature-scaled (`evaluate.calibration: {cal['method']}`): each fold model's "
            f"logits are divided by a T fitted on its own validation fold (minimum log loss), T = "
            f"{min(temps):.2f}–{max(temps):.2f} (T < 1 sharpens, T > 1 softens); the test folds played no part "
            "in the fit.")


def _num(value) -> float:
    return math.nan if value is None else float(value)


ROW_METRICS = ("accuracy", "macro.f1", "macro.auc", "ece")


def lookup(metrics: dict, key: str):
    """The value at dotted ``key`` (``per_class.covid19.recall``) of a metrics tree, or None."""
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _cell(entry) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return "–"
    lo, hi = entry.get("low"), entry.get("high")
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def external_table(report: dict, summary: dict | None = None) -> pd.DataFrame:
    """Side by side: cross-validation (pooled, from ``summary``), external ensemble overall and per source,
    the broad COVID-19-against-every-other-finding analysis (binary tasks), and each fold model overall; one
    row per metric, cells ``value [low, high]``."""
    classes = report["classes"]
    keys = list(ROW_METRICS)
    if "covid19" in classes:
        keys += ["covid19.sensitivity", "covid19.specificity"]
    keys += [f"per_class.{c}.recall" for c in classes]
    columns: dict[str, dict] = {}
    if summary is not None:
        columns["cross-validation"] = summary["pooled"]
    columns["external ensemble"] = report["ensemble"]["all"]
    for source, metrics in report["ensemble"]["by_source"].items():
        columns[f"ensemble: {source}"] = metrics
    if "broad" in report:  # COVID-19 against every other finding
        columns["ensemble: covid19 vs any other finding"] = report["broad"]["ensemble"]["all"]
    for name, model in report["models"].items():
        columns[name] = model["all"]
    table = pd.DataFrame({name: [_cell(lookup(m, k)) for k in keys] for name, m in columns.items()}, index=keys)
    table.loc["n images"] = [str(m.get("n", "")) for m in columns.values()]
    table.index.name = "metric"
    return table
