"""External validation: the five fold models on a data root the study never trained on.

Images are found with ``cxrlib.data.sources.discover`` (any supported layout), scanned, mapped to the task's
classes, and every image that overlaps the run's ``<task>/splits.csv`` is excluded and counted: identical content
hash, a near-duplicate (aligned fingerprint correlation at ``data.near_duplicate_threshold`` or more, see
``cxrlib.data.phash``), or the same source-qualified patient.
Each fold model predicts every image; the ensemble is the mean probability of the fold models. Metrics (with
the same Wilson / bootstrap intervals as cross-validation) are reported for the ensemble and for each model,
over all images and per source.

Images are grouped as in the splits (source-qualified patient merged with duplicate clusters; an image without
a patient id is its own group) and the intervals resample those groups. A source that cannot be read or
decoded costs only itself (listed under ``failed``); a total failure is recorded as ``{"data_root", "error"}``
by :func:`external_validate_or_error`. For a COVID-19-against-the-rest task a second, ``broad`` analysis
keeps every other finding (bacterial, fungal, lung opacity, ...) as the negative class.

Writes ``<run>/<task>/external/predictions.csv`` (:data:`ID_COLUMNS`, ``predicted``, ``prob_<class>`` for the
ensemble, plus ``fold<k>_prob_<class>`` per model) and ``external/external.json``; the caller passes the
report to ``cxrlib.evaluate.summary.summarize_task``, which keeps it under ``external``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import io
from ..data.images import image_options, load_images
from ..data.phash import near_duplicate_pairs
from ..data.scan import scan_table
from ..data.sources import discover
from ..data.splits import assign_groups, read_splits, task_table
from ..device import resolve_device
from ..errors import ArtifactError, DataError
from ..inference import predict_probs
from ..labels import COVID
from ..layout import RunLayout, fold_name
from ..models import load_checkpoint
from .pooled import pooled_metrics

CHUNK = 256  # images decoded and predicted at a time
#: Columns of external/predictions.csv besides the probabilities: ``label`` is the canonical finding,
#: ``analysis`` "narrow" (a task class) or "broad_only" (another finding, in the broad analysis only) and
#: ``group`` the bootstrap unit (source-qualified patient merged with duplicate clusters, as in the splits).
ID_COLUMNS = ("path", "true", "label", "analysis", "source", "patient_id", "group", "sha256")


def training_images(run_dir: str | os.PathLike, task: str) -> pd.DataFrame:
    """The run's splits (every image the fold models saw or were tested on): sha256, phash, source, patient_id."""
    path = RunLayout(run_dir).task(task).splits
    if not path.is_file():
        raise ArtifactError(f"{path}: splits file is missing; it is needed to exclude training images")
    return read_splits(path)  # DataError naming the file when a column (sha256, phash, ...) is missing


def training_hashes(run_dir: str | os.PathLike, task: str) -> set[str]:
    """Content hashes of every image in the run's splits."""
    return set(training_images(run_dir, task)["sha256"]) - {""}


def overlap_with_training(frame: pd.DataFrame, training: pd.DataFrame, near_duplicate_threshold: float) -> pd.Series:
    """Why each external row overlaps the training data: "identical", "near_duplicate", "same_patient" or ""."""
    reason = pd.Series("", index=frame.index, dtype=object)
    patients = {f"{s}:{p}" for s, p in zip(training["source"], training["patient_id"]) if p}
    same_patient = [bool(p) and f"{s}:{p}" in patients for s, p in zip(frame["source"], frame["patient_id"])]
    reason[same_patient] = "same_patient"
    hashes = training["phash"].tolist() + frame["phash"].tolist()
    i, j = near_duplicate_pairs(hashes, near_duplicate_threshold)
    n_train = len(training)
    cross = (i < n_train) & (j >= n_train)
    reason.iloc[np.unique(j[cross] - n_train)] = "near_duplicate"
    reason[frame["sha256"].isin(set(training["sha256"]))] = "identical"
    return reason


def broad_negative(classes: dict[str, list[str]]) -> str | None:
    """The negative class of a COVID-19-against-the-rest task (two classes, one of them covid19), else None."""
    if len(classes) != 2 or COVID not in classes:
        return None
    return next(c for c in classes if c != COVID)


def _read_sources(root, cfg, progress: bool) -> tuple[pd.DataFrame, dict, list[dict], list[dict]]:
    """Discover and scan ``root``: (scanned rows, counts, failed sources, warnings).

    A source whose reader fails (``discover``'s ``attrs["failed"]``) or none of whose images can be decoded is
    listed as failed ``{"source", "reason"}``; the other sources are still used.
    """
    table = discover(root)
    failed = [{"source": f["folder"] or f["reader"], "reason": f"{f['reader']}: {f['reason']}"}
              for f in table.attrs.get("failed", [])]
    warnings = [{"source": entry["folder"], "warning": w}
                for entry in table.attrs.get("sources", []) for w in entry.get("warnings", [])]
    scanned, quality = scan_table(table, cfg.data.cache_dir, cfg.data.resize, workers=cfg.data.workers,
                                  progress=progress)
    reasons = dict(zip(quality["path"], quality["reason"]))
    for source, rows in table.groupby("source", sort=True):
        if not (scanned["source"] == source).any():
            first = reasons.get(str(rows["path"].iloc[0]), "unreadable")
            failed.append({"source": str(source), "reason": f"none of its {len(rows)} images could be read "
                                                            f"(e.g. {first})"})
    counts = {"discovered": len(table), "unreadable": len(quality)}
    return scanned, counts, failed, warnings


def external_images(root: str | os.PathLike, cfg, task: str, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """The task's images under ``root`` with ``target``, ``sha256`` and ``analysis`` (not yet de-duplicated).

    ``analysis`` is ``"narrow"`` for images of a task class. For a COVID-19-against-the-rest task every other
    finding (bacterial, fungal, lung opacity, ...) is kept too, as the negative class, with ``analysis`` =
    ``"broad_only"``; the broad analysis uses both. Task classes absent from the external data are allowed; a
    root with no image of any task class raises DataError naming it. Counts include ``failed`` sources,
    ``warnings`` and the labels ``outside_task`` (of the narrow analysis).
    """
    classes = cfg.tasks[task]
    scanned, counts, failed, warnings = _read_sources(root, cfg, progress)
    labels = set(scanned["label"])
    present = {cls: labs for cls, labs in classes.items() if labels & set(labs)}
    if not present:
        raise DataError(f"{root}: no image has a label of task {task!r} {dict(classes)}; labels found: "
                        f"{sorted(labels)}" + "".join(f"; failed source {f['source']}: {f['reason']}"
                                                         for f in failed))
    frame, dropped = task_table(scanned, present, where=str(root))
    frame["analysis"] = "narrow"
    negative = broad_negative(classes)
    if negative is not None and dropped:
        rest = scanned[scanned["label"].isin(set(dropped))].copy()
        rest["target"] = negative
        rest["analysis"] = "broad_only"
        frame = pd.concat([frame, rest], ignore_index=True)
    counts.update({"outside_task": dropped, "absent_classes": [c for c in classes if c not in present],
                   "failed": failed, "warnings": warnings})
    return frame, counts


def _fold_models(run_dir, task, n_folds) -> list[Path]:
    task_layout = RunLayout(run_dir).task(task)
    paths = [f.model for f in task_layout.folds(n_folds)]
    missing = [RunLayout(task_layout.dir).relative(p) for p in paths if not p.is_file()]
    if missing:
        raise ArtifactError(f"{task_layout.dir}: {len(missing)} of {n_folds} fold models missing: "
                            f"{', '.join(missing)} (train these folds before external validation)")
    return paths


def predict_external(
    frame: pd.DataFrame, model_paths: list[Path], classes: list[str], cfg, device, progress: bool = False,
    transform: Callable[[np.ndarray, pd.DataFrame], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Predictions of each fold model (``fold<k>_prob_<class>``) and of the ensemble (``prob_<class>``).

    Images are preprocessed as the model's training data (its checkpoint's ``data`` params); ``transform(images,
    rows)`` then changes each chunk (the shortcut controls mask them)."""
    out = pd.DataFrame({"path": frame["path"].astype(str).to_numpy(), "true": frame["target"].astype(str).to_numpy(),
                        **{c: frame[c].astype(str).to_numpy() for c in ID_COLUMNS[2:] if c in frame.columns}})
    per_model = []
    for k, path in enumerate(model_paths):
        model, meta = load_checkpoint(path, device)
        if list(meta["classes"]) != list(classes):
            raise ArtifactError(f"{path}: model classes {meta['classes']} differ from the task's {classes}")
        probs = []
        for start in range(0, len(out), CHUNK):
            rows = out.iloc[start:start + CHUNK]
            images = load_images(rows["path"].tolist(), rows["sha256"].tolist(), resize=int(meta["resize"]),
                                 cache_dir=cfg.data.cache_dir, progress=progress,
                                 **image_options(meta.get("params", {}).get("data", {})))
            if transform is not None:
                images = transform(images, frame.iloc[start:start + CHUNK])
            probs.append(predict_probs(model, images, int(meta["image_size"]), cfg.train.batch_size, device,
                                       bool(meta.get("tta_flip", False)), float(meta.get("temperature", 1.0))))
        del model
        p = np.concatenate(probs)
        per_model.append(p)
        for i, c in enumerate(classes):
            out[model_column(k, c)] = p[:, i]
    mean = np.mean(per_model, axis=0)
    out["predicted"] = [classes[i] for i in mean.argmax(axis=1)]
    for i, c in enumerate(classes):
        out[f"prob_{c}"] = mean[:, i]
    return out


def model_column(fold: int, cls: str) -> str:
    """The column of one fold model's probability of ``cls`` (``fold<k>_prob_<class>``)."""
    return f"{fold_name(fold)}_prob_{cls}"


def model_frame(predictions: pd.DataFrame, classes: list[str], fold: int | None) -> pd.DataFrame:
    """The predictions of one fold model (or the ensemble when ``fold`` is None) with plain ``prob_<class>``."""
    frame = predictions[[c for c in ID_COLUMNS if c in predictions.columns]].copy()
    if fold is None:
        probs = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    else:
        probs = predictions[[model_column(fold, c) for c in classes]].to_numpy()
    for i, c in enumerate(classes):
        frame[f"prob_{c}"] = probs[:, i]
    frame["predicted"] = [classes[i] for i in probs.argmax(axis=1)]
    return frame


def _report(frame: pd.DataFrame, classes: list[str], ev) -> dict[str, Any]:
    report = {"all": pooled_metrics(frame, classes, ev.ci_level, ev.bootstrap, ev.seed), "by_source": {}}
    for source, rows in frame.groupby("source", sort=True):
        report["by_source"][str(source)] = pooled_metrics(rows, classes, ev.ci_level, ev.bootstrap, ev.seed)
    return report


def _analysis(predictions: pd.DataFrame, classes: list[str], ev, n_models: int) -> dict[str, Any]:
    return {"ensemble": _report(model_frame(predictions, classes, None), classes, ev),
            "models": {fold_name(k): _report(model_frame(predictions, classes, k), classes, ev)
                       for k in range(n_models)}}


def _broad(predictions: pd.DataFrame, classes: list[str], ev, n_models: int, negative: str) -> dict[str, Any]:
    """COVID-19 against every other finding: the negative class holds all non-COVID labels."""
    others = sorted(set(predictions.loc[predictions["true"] == negative, "label"]))
    counts = predictions.loc[predictions["true"] == negative, "label"].value_counts().sort_index()
    return {"negative_label": f"any other finding ({', '.join(others)})",
            "negative_counts": {str(k): int(v) for k, v in counts.items()},
            **_analysis(predictions, classes, ev, n_models)}


def evaluable_external(run_dir: str | os.PathLike, task: str, cfg, root: str | os.PathLike, progress: bool = False
                       ) -> tuple[pd.DataFrame, dict, list[dict], list[dict]]:
    """The external images of ``task`` that overlap nothing in the run's splits, with their bootstrap ``group``:
    (frame, counts, failed sources, warnings). DataError when nothing is left."""
    training = training_images(run_dir, task)
    frame, counts = external_images(root, cfg, task, progress)
    failed, warnings = counts.pop("failed"), counts.pop("warnings")
    overlap = overlap_with_training(frame, training, cfg.data.near_duplicate_threshold)
    narrow = (frame["analysis"] == "narrow").to_numpy()
    counts["excluded_in_training"] = int(((overlap == "identical") & narrow).sum())
    counts["excluded_near_duplicate"] = int(((overlap == "near_duplicate") & narrow).sum())
    counts["excluded_same_patient"] = int(((overlap == "same_patient") & narrow).sum())
    frame = frame[overlap == ""].reset_index(drop=True)
    if len(frame):
        frame["group"] = assign_groups(frame, cfg.data.near_duplicate_threshold, cfg.data.cache_dir).to_numpy()
    else:
        frame["group"] = []
    counts["evaluated"] = int((frame["analysis"] == "narrow").sum())
    if counts["evaluated"] == 0:
        raise DataError(f"{root}: all {int((overlap[narrow] != '').sum())} task images are also in the training "
                        f"data (identical, near-duplicate or same patient; {RunLayout(run_dir).task(task).splits}); "
                        "nothing left to validate on")
    return frame, counts, failed, warnings


def external_validate(
    run_dir: str | os.PathLike, task: str, cfg, root: str | os.PathLike | None = None,
    device: str | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Run the fold models of ``task`` on the external root (default ``cfg.evaluate.external``).

    Writes ``<run>/<task>/external/predictions.csv`` and ``external.json`` and returns the report:
    ``{"data_root", "classes", "counts": {discovered, unreadable, outside_task, absent_classes,
    excluded_in_training, excluded_near_duplicate, excluded_same_patient, evaluated}, "dropped": {"labels":
    {label: n}, "images"}, "failed": [{"source", "reason"}], "warnings": [{"source", "warning"}], "sources",
    "ensemble": {"all", "by_source"}, "models": {"fold<k>": ...}}`` where each leaf is a
    :func:`cxrlib.evaluate.pooled_metrics` dict. A COVID-19-against-the-rest task adds ``"broad"``:
    ``{"negative_label", "negative_counts", "ensemble", "models"}``, COVID-19 against every other finding.
    A source that cannot be read costs only itself: it is listed under ``failed``.
    """
    root = root if root is not None else cfg.evaluate.external
    if root is None:
        raise DataError("evaluate.external is not set: give a data root for external validation")
    classes = cfg.task_classes(task)
    model_paths = _fold_models(run_dir, task, cfg.split.n_folds)
    frame, counts, failed, warnings = evaluable_external(run_dir, task, cfg, root, progress)
    device = resolve_device(device or cfg.train.device)
    predictions = predict_external(frame, model_paths, classes, cfg, device, progress)
    out = RunLayout(run_dir).task(task)
    io.write_csv(out.external_predictions, predictions)
    ev = cfg.evaluate
    in_narrow = predictions[predictions["analysis"] == "narrow"].reset_index(drop=True)
    report = {
        "data_root": str(root),
        "classes": classes,
        "counts": counts,
        "dropped": {"labels": counts["outside_task"], "images": int(sum(counts["outside_task"].values()))},
        "failed": failed,
        "warnings": warnings,
        "sources": sorted(in_narrow["source"].unique().tolist()),
        **_analysis(in_narrow, classes, ev, len(model_paths)),
    }
    negative = broad_negative(cfg.tasks[task])
    if negative is not None:
        report["broad"] = _broad(predictions, classes, ev, len(model_paths), negative)
    report = io.json_safe(report)
    io.write_json(out.external_report, report)
    return report


def external_validate_or_error(run_dir: str | os.PathLike, task: str, cfg, progress: bool = False
                               ) -> dict[str, Any]:
    """external_validate, but a failure costs only this section and is recorded, never hidden.

    Returns the report, or on a total failure (no readable source, missing models, nothing left after
    exclusion) ``{"data_root", "error": message}``, which is also written to ``external.json`` (replacing a
    stale report) so the summary and the page show the error rather than "not configured".
    """
    try:
        return external_validate(run_dir, task, cfg, progress=progress)
    except (DataError, ArtifactError) as exc:
        root = cfg.evaluate.external
        report = {"data_root": None if root is None else str(root), "error": str(exc)}
        io.write_json(RunLayout(run_dir).task(task).external_report, report)
        return report
