"""Metrics per fold and across folds, with confidence intervals, beside the original study's numbers.

Per fold (test rows of ``fold<k>/predictions.csv``): accuracy; per-class precision, recall, F1, support,
specificity, one-vs-rest ROC-AUC; macro and weighted averages; confusion matrix; expected calibration error.
Across folds: mean and sample SD (ddof=1) over folds, and pooled over all test predictions with intervals:
Wilson for proportions (accuracy, per-class precision / recall / specificity), percentile bootstrap for the
rest (F1, AUC, ECE, macro and weighted averages) resampling patients (or leakage groups) when known.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from . import io
from .errors import ArtifactError
from .intervals import bootstrap, wilson

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

COVID = "covid19"
PREDICTION_COLUMNS = ("path", "split", "true", "predicted", "source", "patient_id", "sha256")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
ECE_BINS = 10
_NOT_AVERAGED = {"fold", "n"}  # scalar fields of fold_metrics that are bookkeeping, not metrics


# ----------------------------------------------------------------------------------------------- reading


def read_predictions(path: str | os.PathLike, classes: list[str] | None = None) -> pd.DataFrame:
    """Read one predictions.csv, checking its columns (and class names when ``classes`` is given)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: predictions file is missing")
    text_cols = {c: str for c in PREDICTION_COLUMNS}
    try:
        frame = pd.read_csv(path, dtype=text_cols, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable predictions CSV ({exc})") from exc
    check_predictions(frame, classes, where=str(path))
    for col in frame.columns:
        if col.startswith("prob_"):
            values = pd.to_numeric(frame[col], errors="coerce")
            if values.isna().any():
                raise ArtifactError(f"{path}: column {col} has non-numeric or empty values")
            frame[col] = values.astype(float)
    return frame


def check_predictions(frame: pd.DataFrame, classes: list[str] | None, where: str) -> None:
    """Raise ArtifactError naming ``where`` if columns, probabilities or class names do not fit the contract."""
    missing = [c for c in ("true", "predicted") if c not in frame.columns]
    if classes is not None:
        missing += [f"prob_{c}" for c in classes if f"prob_{c}" not in frame.columns]
    if missing:
        raise ArtifactError(f"{where}: missing columns {missing}")
    if classes is not None:
        for col in ("true", "predicted"):
            bad = sorted(set(frame[col].astype(str)) - set(classes))
            if bad:
                raise ArtifactError(f"{where}: column {col} has classes {bad} not in the task {classes}")
    if "split" in frame.columns:
        bad = sorted(set(frame["split"].astype(str)) - {"val", "test"})
        if bad:
            raise ArtifactError(f"{where}: column split has values {bad} (expected val or test)")


def _fold_dir(run_dir, task, k) -> Path:
    return Path(run_dir) / task / f"fold{k}"


def _missing_error(run_dir, task, n_folds, name: str, missing: list[int]) -> ArtifactError:
    where = Path(run_dir) / task
    files = ", ".join(f"fold{k}/{name}" for k in missing)
    return ArtifactError(
        f"{where}: {len(missing)} of {n_folds} folds lack {name}: {files} (train these folds before evaluating)"
    )


def load_fold_predictions(
    run_dir: str | os.PathLike, task: str, n_folds: int, classes: list[str] | None = None
) -> pd.DataFrame:
    """All folds' predictions.csv stacked, with a ``fold`` column; ArtifactError names every missing fold."""
    paths = {k: _fold_dir(run_dir, task, k) / "predictions.csv" for k in range(n_folds)}
    missing = [k for k, p in paths.items() if not p.is_file()]
    if missing:
        raise _missing_error(run_dir, task, n_folds, "predictions.csv", missing)
    frames = []
    for k, path in paths.items():
        frame = read_predictions(path, classes)
        if "split" in frame.columns and not (frame["split"] == "test").any():
            raise ArtifactError(f"{path}: no test rows (split == 'test')")
        frames.append(frame.assign(fold=k))
    return pd.concat(frames, ignore_index=True)


def load_histories(run_dir: str | os.PathLike, task: str, n_folds: int) -> dict[int, pd.DataFrame]:
    """Each fold's history.csv by fold number; ArtifactError names every missing fold or column."""
    paths = {k: _fold_dir(run_dir, task, k) / "history.csv" for k in range(n_folds)}
    missing = [k for k, p in paths.items() if not p.is_file()]
    if missing:
        raise _missing_error(run_dir, task, n_folds, "history.csv", missing)
    out = {}
    for k, path in paths.items():
        frame = pd.read_csv(path)
        lacking = [c for c in ("epoch", "train_loss", "val_loss") if c not in frame.columns]
        if lacking:
            raise ArtifactError(f"{path}: missing columns {lacking}")
        out[k] = frame
    return out


def scored_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows scored as test predictions (all rows when there is no ``split`` column)."""
    if "split" in frame.columns:
        return frame[frame["split"] == "test"]
    return frame


# ----------------------------------------------------------------------------------------------- metrics


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


def fold_metrics(pred_frame: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
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
    """Mean, sample SD (ddof=1) and per-fold values of every metric, nested like fold_metrics."""
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


# ----------------------------------------------------------------------------------------------- intervals


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
    point = fold_metrics(frame, classes)
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


# ----------------------------------------------------------------------------------------------- tables


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
    """One row per fold (then mean and SD): test images, accuracy, macro precision / recall / F1 / AUC, ECE."""
    rows = []
    for m in summary["folds"]:
        rows.append({"fold": str(m["fold"]), "n": m["n"], "accuracy": m["accuracy"],
                     **{f"macro {k}": m["macro"][k] for k in ("precision", "recall", "f1", "auc")}, "ece": m["ece"]})
    table = pd.DataFrame(rows).set_index("fold").astype(float)
    stats = table.drop(columns="n").agg(["mean", "std"])  # std: sample SD (ddof=1), as in across_folds
    table = pd.concat([table, stats.rename(index={"std": "sd"})])
    table["n"] = table["n"].astype("Int64")
    return table


def _num(value) -> float:
    return math.nan if value is None else float(value)


# ----------------------------------------------------------------------------------------------- summary


def json_safe(obj: Any) -> Any:
    """Replace NaN / inf floats (not valid JSON) by None, recursively."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def attach_groups(frame: pd.DataFrame, run_dir: str | os.PathLike, task: str) -> pd.DataFrame:
    """Add the leakage ``group`` of each image from ``<run>/<task>/splits.csv`` (by path) when available."""
    splits = Path(run_dir) / task / "splits.csv"
    if "group" in frame.columns or not splits.is_file():
        return frame
    table = pd.read_csv(splits, dtype=str, keep_default_na=False)
    if not {"path", "group"} <= set(table.columns):
        return frame
    groups = table.drop_duplicates("path").set_index("path")["group"]
    return frame.assign(group=frame["path"].map(groups).fillna("").astype(str))


def summarize(run_dir: str | os.PathLike, task: str, cfg) -> dict[str, Any]:
    """Evaluate every fold of ``task`` in ``run_dir``: writes ``fold<k>/metrics.json`` and ``<task>/summary.json``.

    The summary holds per-fold metrics, ``across_folds`` (mean / SD / values), ``pooled`` (with intervals),
    COVID-19 sensitivity and specificity, the class x source error table, the published numbers, and, when
    ``<task>/external/external.json`` exists (see cxrlib.external), the external validation under ``external``.
    """
    classes = cfg.task_classes(task)
    n_folds = cfg.split.n_folds
    frame = attach_groups(load_fold_predictions(run_dir, task, n_folds, classes), run_dir, task)
    per_fold = []
    for k in range(n_folds):
        metrics = {"fold": k, **fold_metrics(frame[frame["fold"] == k], classes)}
        io.write_json(_fold_dir(run_dir, task, k) / "metrics.json", json_safe(metrics))
        per_fold.append(metrics)
    ev = cfg.evaluate
    pooled = pooled_metrics(frame, classes, ev.ci_level, ev.bootstrap, ev.seed)
    folds = across_folds(per_fold)
    summary: dict[str, Any] = {
        "task": task,
        "classes": classes,
        "n_folds": n_folds,
        "ci_level": ev.ci_level,
        "folds": per_fold,
        "across_folds": folds,
        "pooled": pooled,
        "errors_by_source": errors_by_source(frame, classes=classes).reset_index().to_dict(orient="records"),
        "published": PUBLISHED.get(task),
    }
    if COVID in classes:
        summary[COVID] = {
            name: {**pooled[COVID][name], "mean": folds[COVID][name]["mean"], "sd": folds[COVID][name]["sd"]}
            for name in ("sensitivity", "specificity")
        }
    external = Path(run_dir) / task / "external" / "external.json"
    if external.is_file():
        summary["external"] = io.read_json(external)
    summary = json_safe(summary)
    io.write_json(Path(run_dir) / task / "summary.json", summary)
    return summary
