"""Pooled metrics over all folds' test predictions, each with a confidence interval."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..labels import COVID
from .artifacts import scored_rows
from .intervals import bootstrap, wilson
from .metrics import _arrays, expected_calibration_error, score_predictions, top_confidence


def cluster_ids(frame: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """Bootstrap units: the ``group`` column, else ``patient_id``; rows without an id count alone.

    Returns (ids or None for plain image resampling, unit name: "group", "patient" or "image").
    """
    for col, unit in (("group", "group"), ("patient_id", "patient")):
        if col in frame.columns:
            ids = frame[col].fillna("").astype(str).to_numpy()
            known = ids != ""
            if known.any():
                rows = np.array([f"\0row{i}" for i in range(len(ids))], dtype=object)
                return np.where(known, ids, rows), unit
    return None, "image"


def _bootstrap_statistic(y, pred, probs, k):
    """Fast numpy versions of the bootstrapped metrics (tested against scikit-learn on the full sample)."""
    conf = top_confidence(probs, pred)
    correct = (pred == y).astype(float)

    def stat(idx: np.ndarray) -> dict[str, float]:
        yy, pp, pr = y[idx], pred[idx], probs[idx]
        cm = np.bincount(yy * k + pp, minlength=k * k).reshape(k, k).astype(float)
        tp = np.diag(cm)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
        weights = support / support.sum()
        out = {
            "macro.precision": precision.mean(), "macro.recall": recall.mean(), "macro.f1": f1.mean(),
            "weighted.precision": weights @ precision, "weighted.recall": weights @ recall,
            "weighted.f1": weights @ f1,
            "ece": expected_calibration_error(conf[idx], correct[idx]),
        }
        aucs = []
        for i in range(k):
            pos = yy == i
            n_pos = int(pos.sum())
            n_neg = len(yy) - n_pos
            if n_pos == 0 or n_neg == 0:
                auc = math.nan
            else:
                ranks = rankdata(pr[:, i])
                auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
            aucs.append(auc)
            out[f"per_class.{i}.f1"] = f1[i]
            out[f"per_class.{i}.auc"] = auc
        out["macro.auc"] = float(np.mean(aucs))
        return {key: float(v) for key, v in out.items()}

    return stat


def _interval(value, lo, hi, method) -> dict[str, Any]:
    return {"value": value, "low": lo, "high": hi, "method": method}


def pooled_metrics(
    pred_frame: pd.DataFrame,
    classes: list[str],
    ci_level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """fold_metrics of all test rows together, every metric given as ``{value, low, high, method}``.

    Wilson intervals for accuracy and per-class precision / recall / specificity (COVID-19 sensitivity and
    specificity); percentile bootstrap (``resamples`` draws from ``np.random.default_rng(seed)``) for F1, AUC,
    ECE and the macro / weighted averages, resampling clusters from :func:`cluster_ids`.
    """
    frame = scored_rows(pred_frame)
    point = score_predictions(frame, classes)
    y, pred, probs = _arrays(frame, classes)
    k, n = len(classes), len(y)
    cm = np.asarray(point["confusion_matrix"])
    ids, unit = cluster_ids(frame)
    draws = bootstrap(_bootstrap_statistic(y, pred, probs, k), n, ids, resamples, ci_level,
                      np.random.default_rng(seed))
    method = f"bootstrap ({unit}s)"

    def boot(key: str, value: float) -> dict[str, Any]:
        lo, hi = draws[key]
        return _interval(value, lo, hi, method)

    def wil(successes: int, total: int, value: float) -> dict[str, Any]:
        lo, hi = wilson(int(successes), int(total), ci_level)
        return _interval(value, lo, hi, "wilson")

    out: dict[str, Any] = {
        "n": n,
        "classes": list(classes),
        "accuracy": wil(np.trace(cm), n, point["accuracy"]),
        "per_class": {},
    }
    for i, cls in enumerate(classes):
        m = point["per_class"][cls]
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        tn = n - tp - fp - fn
        out["per_class"][cls] = {
            "precision": wil(tp, tp + fp, m["precision"]),
            "recall": wil(tp, tp + fn, m["recall"]),
            "f1": boot(f"per_class.{i}.f1", m["f1"]),
            "specificity": wil(tn, tn + fp, m["specificity"]),
            "auc": boot(f"per_class.{i}.auc", m["auc"]),
            "support": m["support"],
        }
    for average in ("macro", "weighted"):
        out[average] = {name: boot(f"{average}.{name}", v) for name, v in point[average].items()}
    out["ece"] = boot("ece", point["ece"])
    out["confusion_matrix"] = point["confusion_matrix"]
    if COVID in classes:
        out[COVID] = {"sensitivity": out["per_class"][COVID]["recall"],
                      "specificity": out["per_class"][COVID]["specificity"]}
    out["bootstrap"] = {"unit": unit, "clusters": int(len(set(ids)) if ids is not None else n),
                        "resamples": int(resamples), "seed": int(seed)}
    return out
