"""Pooled metrics over all folds' test predictions, each with a confidence interval."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..labels import COVID
from .artifacts import scored_rows
from .intervals import bootstrap_intervals, wilson
from .metrics import _arrays, expected_calibration_error, macro_over_present, score_predictions, top_confidence


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
    """Fast numpy versions of the bootstrapped metrics (tested against scikit-learn on the full sample).

    Like :func:`score_predictions`, macro averages cover the classes present in the resample only. A
    per-class precision / recall / specificity that is undefined in a resample (no prediction / image of the
    class / of the rest) is NaN there, and counted by the bootstrap as an undefined resample.
    """
    conf = top_confidence(probs, pred)
    correct = (pred == y).astype(float)
    nan = np.full(k, math.nan)

    def stat(idx: np.ndarray) -> dict[str, float]:
        yy, pp, pr = y[idx], pred[idx], probs[idx]
        cm = np.bincount(yy * k + pp, minlength=k * k).reshape(k, k).astype(float)
        tp = np.diag(cm)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        present = support > 0
        precision0 = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)  # sklearn: 0 if never predicted
        recall = np.divide(tp, support, out=nan.copy(), where=present)
        denom = precision0 + recall
        f1 = np.divide(2 * precision0 * recall, denom, out=np.where(present, 0.0, math.nan), where=denom > 0)
        negatives = len(yy) - support
        specificity = np.divide(negatives - (predicted - tp), negatives, out=nan.copy(), where=negatives > 0)
        weights = support / support.sum()
        out = {
            "accuracy": float(np.trace(cm) / len(yy)),
            "macro.precision": macro_over_present(precision0, present),
            "macro.recall": macro_over_present(recall, present),
            "macro.f1": macro_over_present(f1, present),
            "weighted.precision": weights @ precision0, "weighted.recall": weights @ np.nan_to_num(recall),
            "weighted.f1": weights @ np.nan_to_num(f1),
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
            out[f"per_class.{i}.precision"] = tp[i] / predicted[i] if predicted[i] > 0 else math.nan
            out[f"per_class.{i}.recall"] = recall[i]
            out[f"per_class.{i}.specificity"] = specificity[i]
            out[f"per_class.{i}.f1"] = f1[i]
            out[f"per_class.{i}.auc"] = auc
        out["macro.auc"] = macro_over_present(aucs, present)
        return {key: float(v) for key, v in out.items()}

    return stat


_UNIT_NAMES = {"group": "patients and duplicate clusters", "patient": "patients", "image": "images"}


def pooled_metrics(
    pred_frame: pd.DataFrame,
    classes: list[str],
    ci_level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """score_predictions of all test rows together, every metric given as ``{value, low, high, method}``.

    Where images are grouped (:func:`cluster_ids`: the splits' ``group``, else ``patient_id``, and at least
    two images share a group), every interval is a percentile cluster bootstrap over those groups
    (``resamples`` draws from ``np.random.default_rng(seed)``), method ``"cluster bootstrap (patients)"`` or
    ``"cluster bootstrap (patients and duplicate clusters)"``. Where every image is its own group, accuracy and
    per-class precision / recall / specificity (COVID-19 sensitivity and specificity) get Wilson intervals
    (method ``"wilson"``) and the rest a bootstrap over images. Bootstrap intervals carry
    ``undefined_resamples``: the draws where the statistic was undefined (left out of the percentiles).
    """
    frame = scored_rows(pred_frame)
    point = score_predictions(frame, classes)
    y, pred, probs = _arrays(frame, classes)
    k, n = len(classes), len(y)
    cm = np.asarray(point["confusion_matrix"])
    ids, unit = cluster_ids(frame)
    n_clusters = int(len(set(ids)) if ids is not None else n)
    clustered = ids is not None and n_clusters < n
    if ids is not None and not clustered:
        ids, unit = None, "image"
    draws = bootstrap_intervals(_bootstrap_statistic(y, pred, probs, k), n, ids, resamples, ci_level,
                                np.random.default_rng(seed))
    method = f"cluster bootstrap ({_UNIT_NAMES[unit]})" if clustered else "bootstrap (images)"

    def boot(key: str, value: float) -> dict[str, Any]:
        d = draws[key]
        return {"value": value, "low": d["low"], "high": d["high"], "method": method,
                "undefined_resamples": d["undefined_resamples"]}

    def headline(key: str, successes: int, total: int, value: float) -> dict[str, Any]:
        if clustered:
            return boot(key, value)
        lo, hi = wilson(int(successes), int(total), ci_level)
        return {"value": value, "low": lo, "high": hi, "method": "wilson"}

    out: dict[str, Any] = {
        "n": n,
        "classes": list(classes),
        "accuracy": headline("accuracy", np.trace(cm), n, point["accuracy"]),
        "per_class": {},
    }
    for i, cls in enumerate(classes):
        m = point["per_class"][cls]
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        tn = n - tp - fp - fn
        out["per_class"][cls] = {
            "precision": headline(f"per_class.{i}.precision", tp, tp + fp, m["precision"]),
            "recall": headline(f"per_class.{i}.recall", tp, tp + fn, m["recall"]),
            "f1": boot(f"per_class.{i}.f1", m["f1"]),
            "specificity": headline(f"per_class.{i}.specificity", tn, tn + fp, m["specificity"]),
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
    out["bootstrap"] = {"unit": unit, "clusters": n_clusters, "resamples": int(resamples), "seed": int(seed),
                        "method": method}
    return out
