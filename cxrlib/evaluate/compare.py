"""A ``--sweep``'s sub-runs side by side: accuracy with its interval against training cost and model size.

Reads each sub-run's record (params), each task's summary and each fold's ``train.json`` (timings) through
``cxrlib.layout``; the swept keys are the params that differ between sub-runs.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from .. import io
from ..layout import RunLayout
from ..models import model_cost
from .intervals import wilson
from .summary import read_summary


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "tasks":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def swept_keys(params: list[dict]) -> list[str]:
    """The params (dotted keys) whose values differ between sub-runs."""
    flats = [_flat(p) for p in params]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def _seconds_per_image(run_layout: RunLayout, task: str, n_folds: int) -> float | None:
    """Training seconds per image and epoch; a derived task's rounds (``derived_tasks``) cost their source's."""
    seconds, images = 0.0, 0
    for fold in run_layout.task(task).folds(n_folds):
        if not fold.train_info.exists():
            continue
        info = io.read_json(fold.train_info)
        if "derived_from" in info:
            source = run_layout.fold(info["derived_from"]["task"], fold.index).train_info
            if not source.exists():
                continue
            info = io.read_json(source)
        seconds += float(info["timings"]["fit_s"]) - float(info["timings"].get("feature_cache_s") or 0)
        images += int(info["epochs_run"]) * int(info["n_images"]["train"])
    return seconds / images if images else None


def _partial_summary(task_layout, n_folds: int) -> dict | None:
    """For sub-runs that trained only some folds (``--folds 0``): accuracy over the trained folds' test images
    (from each fold's metrics), with a Wilson interval; None when no fold has metrics."""
    found = [io.read_json(f.metrics) for f in task_layout.folds(n_folds) if f.metrics.exists()]
    if not found:
        return None
    n = sum(int(m["n"]) for m in found)
    correct = sum(round(float(m["accuracy"]) * int(m["n"])) for m in found)
    low, high = wilson(correct, n)
    accs = pd.Series([float(m["accuracy"]) for m in found])
    return {"n_folds": n_folds, "folds_evaluated": [int(m["fold"]) for m in found],
            "pooled": {"accuracy": {"value": correct / n, "low": low, "high": high, "method": "wilson"}},
            "across_folds": {"accuracy": {"mean": float(accs.mean()),
                                          "sd": float(accs.std(ddof=1)) if len(accs) > 1 else None}}}


def sweep_table(run_dir: str | os.PathLike, with_cost: bool = True) -> pd.DataFrame:
    """One row per (sub-run, task): swept values, test accuracy (fold mean ± SD, pooled with CI), external
    ensemble accuracy, training seconds per image, parameters and multiply-adds, and the data fingerprint."""
    runs = RunLayout(run_dir).sweep_runs()
    records = [io.read_json(RunLayout(r).record) for r in runs]
    keys = swept_keys([rec.get("params", {}) for rec in records])
    costs: dict[tuple, dict] = {}
    rows = []
    for path, rec in zip(runs, records):
        params = _flat(rec.get("params", {}))
        n_folds = int(params.get("split.n_folds", 5))
        for task in rec.get("tasks", []):
            summary = read_summary(path, task) or _partial_summary(RunLayout(path).task(task), n_folds)
            if summary is None:
                continue
            pooled, by_fold = summary["pooled"]["accuracy"], summary["across_folds"]["accuracy"]
            external = ((summary.get("external") or {}).get("ensemble") or {}).get("all", {}).get("accuracy", {})
            arch, size = params.get("model.arch"), params.get("train.image_size")
            folds = summary.get("folds_evaluated", list(range(summary["n_folds"])))
            row = {"run": path.name, "task": task, **{k: params.get(k) for k in keys}, "folds": len(folds),
                   "accuracy": pooled["value"], "low": pooled["low"], "high": pooled["high"],
                   "ci_method": pooled.get("method"), "fold_mean": by_fold["mean"], "fold_sd": by_fold["sd"],
                   "external_accuracy": external.get("value"),
                   "train_s_per_image": _seconds_per_image(RunLayout(path), task, summary["n_folds"]),
                   "data_fingerprint": (rec.get("data_fingerprint") or {}).get("sha256")}
            if with_cost and arch and size:
                key = (arch, len(rec["params"]["tasks"][task]), int(size))
                if key not in costs:
                    costs[key] = model_cost(*key)
                row.update(costs[key])
            rows.append(row)
    return pd.DataFrame(rows)
