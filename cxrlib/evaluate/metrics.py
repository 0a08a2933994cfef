"""Classification metrics of test predictions (scikit-learn underneath) and their mean / SD across folds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from ..errors import ArtifactError
from ..labels import COVID
from .artifacts import check_predictions, scored_rows

ECE_BINS = 10
_NOT_AVERAGED = {"fold", "n"}  # scalar fields of score_predictions that are bookkeeping, not metrics


def _arrays(frame: pd.DataFrame, classes: list[str]):
    check_predictions(frame, classes, where="predictions")
    index = {c: i for i, c in enumerate(classes)}
    y = frame["true"].map(index).to_numpy(dtype=np.int64)
    pred = frame["predicted"].map(index).to_numpy(dtype=np.int64)
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    return y, pred, probs


def top_confidence(probs: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The probability each row gave to its predicted class."""
    return probs[np.arange(len(pred)), pred]


def reliability_bins(confidence, correct, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Equal-width confidence bins (lo, hi]: count, mean confidence and accuracy per bin (empty bins kept)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(confidence, edges[1:-1], right=True)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, confidence, minlength=n_bins) / count
        acc = np.bincount(which, correct, minlength=n_bins) / count
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": count, "confidence": conf, "accuracy": acc})


def expected_calibration_error(confidence, correct, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width bins of |accuracy - mean confidence| weighted by the bin's share of rows."""
    confidence = np.asarray(confidence, dtype=float)
    if confidence.size == 0:
        return math.nan
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(confidence, edges[1:-1], right=True)
    gap = np.bincount(which, correct - confidence, minlength=n_bins)  # per bin: count * (acc - conf)
    return float(np.abs(gap).sum() / confidence.size)


def _auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    n_pos = int(y_binary.sum())
    n_neg = len(y_binary) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    return float(roc_auc_score(y_binary, scores))


def score_predictions(pred_frame: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """Metrics of the test rows of one predictions frame (scikit-learn underneath).

    Returns ``{"n", "classes", "accuracy", "per_class": {class: {precision, recall, f1, support, specificity,
    auc}}, "macro": {precision, recall, f1, auc}, "weighted": {precision, recall, f1}, "ece",
    "confusion_matrix" (rows true, columns predicted), "covid19": {sensitivity, specificity}}`` (the last only
    when the task has a covid19 class). Precision of a never-predicted class is 0; an AUC is NaN when the
    class or its complement is absent.
    """
    frame = scored_rows(pred_frame)
    if frame.empty:
        raise ArtifactError("predictions: no test rows to evaluate")
    y, pred, probs = _arrays(frame, classes)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y, pred, labels=labels)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    n = len(y)
    per_class = {}
    for i, cls in enumerate(classes):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        tn = n - cm[i, :].sum() - fp
        per_class[cls] = {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "specificity": float(tn / (tn + fp)) if tn + fp else math.nan,
            "auc": _auc(y == i, probs[:, i]),
        }
    out: dict[str, Any] = {"n": n, "classes": list(classes), "accuracy": float(accuracy_score(y, pred)),
                           "per_class": per_class}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, labels=labels, average=average, zero_division=0)
        out[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    aucs = [per_class[c]["auc"] for c in classes]
    out["macro"]["auc"] = float(np.mean(aucs)) if all(np.isfinite(aucs)) else math.nan
    out["ece"] = expected_calibration_error(top_confidence(probs, pred), pred == y)
    out["confusion_matrix"] = cm.tolist()
    if COVID in classes:
        out[COVID] = {"sensitivity": per_class[COVID]["recall"], "specificity": per_class[COVID]["specificity"]}
    return out


def _flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves as dotted keys (``per_class.normal.f1``), skipping counts and the confusion matrix."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _NOT_AVERAGED | {"support"}:
            flat[name] = float(value)
    return flat


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def across_folds(per_fold: list[dict]) -> dict:
    """Mean, sample SD (ddof=1) and per-fold values of every metric, nested like score_predictions."""
    flats = [_flatten(m) for m in per_fold]
    out = {}
    for key in flats[0]:
        values = np.array([f.get(key, math.nan) for f in flats], dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
            "values": values.tolist(),
        }
    return _nest(out)
