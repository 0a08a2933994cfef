"""Reading a run's training artifacts for evaluation: predictions and histories of every fold, with checks."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import ArtifactError
from ..layout import RunLayout

PREDICTION_COLUMNS = ("path", "split", "true", "predicted", "source", "patient_id", "sha256")


def read_predictions(path: str | os.PathLike, classes: list[str] | None = None) -> pd.DataFrame:
    """Read one predictions file, checking its columns (and class names when ``classes`` is given)."""
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


def _missing_error(run_dir, task, n_folds, name: str, missing: list[int]) -> ArtifactError:
    task_layout = RunLayout(run_dir).task(task)
    files = ", ".join(RunLayout(task_layout.dir).relative(getattr(task_layout.fold(k), name)) for k in missing)
    return ArtifactError(
        f"{task_layout.dir}: {len(missing)} of {n_folds} folds lack {getattr(task_layout.fold(0), name).name}: "
        f"{files} (train these folds before evaluating)"
    )


def load_fold_predictions(
    run_dir: str | os.PathLike, task: str, n_folds: int, classes: list[str] | None = None
) -> pd.DataFrame:
    """All folds' predictions stacked, with a ``fold`` column; ArtifactError names every missing fold."""
    paths = {f.index: f.predictions for f in RunLayout(run_dir).task(task).folds(n_folds)}
    missing = [k for k, p in paths.items() if not p.is_file()]
    if missing:
        raise _missing_error(run_dir, task, n_folds, "predictions", missing)
    frames = []
    for k, path in paths.items():
        frame = read_predictions(path, classes)
        if "split" in frame.columns and not (frame["split"] == "test").any():
            raise ArtifactError(f"{path}: no test rows (split == 'test')")
        frames.append(frame.assign(fold=k))
    return pd.concat(frames, ignore_index=True)


def load_histories(run_dir: str | os.PathLike, task: str, n_folds: int) -> dict[int, pd.DataFrame]:
    """Each fold's training history by fold number; ArtifactError names every missing fold or column."""
    paths = {f.index: f.history for f in RunLayout(run_dir).task(task).folds(n_folds)}
    missing = [k for k, p in paths.items() if not p.is_file()]
    if missing:
        raise _missing_error(run_dir, task, n_folds, "history", missing)
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


def attach_groups(frame: pd.DataFrame, run_dir: str | os.PathLike, task: str) -> pd.DataFrame:
    """Add the leakage ``group`` of each image from the task's splits (by path) when available."""
    splits = RunLayout(run_dir).task(task).splits
    if "group" in frame.columns or not splits.is_file():
        return frame
    table = pd.read_csv(splits, dtype=str, keep_default_na=False)
    if not {"path", "group"} <= set(table.columns):
        return frame
    groups = table.drop_duplicates("path").set_index("path")["group"]
    return frame.assign(group=frame["path"].map(groups).fillna("").astype(str))

