"""Leakage-free folds: task labels, patient + duplicate groups, StratifiedGroupKFold, and the audit.

A group is everything that must stay in one fold: the images of one patient (source-qualified), merged with
every image that is byte-identical (sha256) or a near-duplicate (aligned fingerprint correlation at or above
``data.near_duplicate_threshold``, ``cxrlib.data.phash``) of one of them; a near-duplicate cluster grows past
``CHAIN_SIZE`` images only through near-exact matches. Images without a patient id are their own group unless a
duplicate joins them. Every time splits are made they are audited; a group, content hash or
near-duplicate cluster in two folds is a LeakageError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from .. import io
from ..config import DataConfig
from ..errors import DataError, LeakageError
from .pair_cache import cached_scored_pairs
from .phash import check_threshold

SPLIT_COLUMNS = (
    "path", "label", "source", "patient_id", "group", "fold", "target",
    "sha256", "phash", "width", "height", "mask_path",
)  # fmt: skip
ROLES = ("train", "val", "test")
DEFAULT_NEAR_THRESHOLD = DataConfig.near_duplicate_threshold
CHAIN_SIZE = 3  # a near-duplicate cluster grows past this many images only through near-exact matches


# --------------------------------------------------------------------------- task table


def task_table(
    scanned: pd.DataFrame,
    classes: dict[str, list[str]],
    max_per_class: Optional[int] = None,
    seed: int = 0,
    where: str = "",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep the rows whose canonical label belongs to a task class and add ``target`` (the class name).

    Returns ``(frame, dropped)`` with ``dropped`` = {label: n} for labels outside the task. ``max_per_class``
    caps each class deterministically for ``seed``, whole groups at a time (column ``group`` when present,
    else patient, else content hash), so a patient is never cut in half; a class may end a group short of
    the cap. An empty class raises DataError naming it and ``where`` (the data root).
    """
    label_to_class = {lab: cls for cls, labels in classes.items() for lab in labels}
    mapped = scanned["label"].map(label_to_class)
    keep = mapped.notna()
    dropped = {str(k): int(v) for k, v in scanned.loc[~keep, "label"].value_counts().sort_index().items()}
    frame = scanned.loc[keep].copy()
    frame["target"] = mapped[keep].astype(str)
    counts = frame["target"].value_counts()
    for cls, labels in classes.items():
        if counts.get(cls, 0) == 0:
            found = {str(k): int(v) for k, v in scanned["label"].value_counts().sort_index().items()}
            place = f"{where}: " if where else ""
            raise DataError(
                f"{place}task class {cls!r} (labels {labels}) has no usable images; labels found: {found or 'none'}"
            )
    if max_per_class is not None:
        frame = _cap_per_class(frame, max_per_class, seed)
    return frame.reset_index(drop=True), dropped


def _cap_per_class(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    if cap < 1:
        raise ValueError(f"max_per_class must be >= 1, got {cap}")
    key = frame["group"].astype(str) if "group" in frame.columns else _base_keys(frame)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(frame), dtype=bool)
    for cls in sorted(frame["target"].unique()):
        in_cls = (frame["target"] == cls).to_numpy()
        if in_cls.sum() <= cap:
            chosen |= in_cls
            continue
        sizes = key[in_cls].value_counts().sort_index()
        order = rng.permutation(len(sizes))
        taken: list[str] = []
        total = 0
        for i in order:
            n = int(sizes.iloc[i])
            if total + n <= cap:
                taken.append(sizes.index[i])
                total += n
                if total == cap:
                    break
        chosen |= in_cls & key.isin(taken).to_numpy()
    return frame.loc[chosen]


# --------------------------------------------------------------------------- groups


def _base_keys(frame: pd.DataFrame) -> pd.Series:
    """Patient key ``source:patient_id``; rows without a patient get ``source:sha256:<16 hex>``."""
    pid = frame["patient_id"].fillna("").astype(str)
    src = frame["source"].astype(str)
    by_image = src + ":sha256:" + frame["sha256"].astype(str).str[:16]
    return (src + ":" + pid).where(pid != "", by_image)


def _duplicate_edges(frame: pd.DataFrame, near_duplicate_threshold: float,
                     cache_dir: str | os.PathLike | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Edges joining rows with identical sha256 (to the first such row) and near-duplicate pairs that pass
    ``_guarded``; pair scores are cached in ``cache_dir`` (``pair_cache``) unless it is None."""
    n = len(frame)
    sha_codes = pd.factorize(frame["sha256"].astype(str))[0]
    first_of_sha = pd.Series(np.arange(n)).groupby(sha_codes).transform("min").to_numpy()
    i, j, score = cached_scored_pairs(frame["phash"].astype(str).tolist(), cache_dir)
    keep = score >= check_threshold(near_duplicate_threshold) - 1e-6
    near = _guarded(sha_codes, i[keep], j[keep], score[keep], near_duplicate_threshold)
    return [(np.arange(n), first_of_sha), near]


def _guarded(start: np.ndarray, i: np.ndarray, j: np.ndarray, score: np.ndarray,
             threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate edges, strongest first (union-find), without those that would let a chain of similar
    images snowball: an edge that would make a cluster of more than ``CHAIN_SIZE`` images is kept only if it is
    near-exact (score at least two thirds of the way from ``threshold`` to 1). ``start`` labels the rows'
    initial clusters (identical images)."""
    label = np.asarray(start, dtype=np.int64)
    size = np.bincount(label, minlength=len(label)).astype(np.int64)
    parent = np.arange(len(size))
    exact = 1 - (1 - threshold) / 3

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    kept = np.zeros(len(i), dtype=bool)
    for k in np.argsort(-score, kind="stable"):
        a, b = find(int(label[i[k]])), find(int(label[j[k]]))
        if a == b:
            kept[k] = True
            continue
        if size[a] + size[b] > CHAIN_SIZE and score[k] < exact:
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        kept[k] = True
    return i[kept], j[kept]


def duplicate_components(frame: pd.DataFrame, near_duplicate_threshold: float = DEFAULT_NEAR_THRESHOLD,
                         cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Component id per row linking identical sha256 and near-duplicates (aligned fingerprint correlation at
    ``near_duplicate_threshold`` or more, chains guarded); ``cache_dir`` as in ``_duplicate_edges``."""
    return _components(len(frame), _duplicate_edges(frame, near_duplicate_threshold, cache_dir))


def _components(n: int, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    rows = np.concatenate([e[0] for e in edges]) if edges else np.empty(0, dtype=np.int64)
    cols = np.concatenate([e[1] for e in edges]) if edges else np.empty(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def assign_groups(frame: pd.DataFrame, near_duplicate_threshold: float = DEFAULT_NEAR_THRESHOLD,
                  cache_dir: str | os.PathLike | None = None) -> pd.Series:
    """Group per row: patients merged (union-find) with exact and near-duplicate image clusters (pair scores
    cached in ``cache_dir`` unless it is None: ``pair_cache``).

    The name is the smallest member key (``source:patient_id``, or ``source:sha256:<hex>`` for an image
    without a patient), suffixed ``+k`` when k other keys were merged into it.
    """
    missing = [c for c in ("source", "patient_id", "sha256", "phash") if c not in frame.columns]
    if missing:
        raise DataError(f"assign_groups: table lacks columns {missing} (scan the images first)")
    n = len(frame)
    if n == 0:
        return pd.Series([], index=frame.index, dtype=object, name="group")
    base = _base_keys(frame).to_numpy()
    key_codes = pd.factorize(base)[0]
    first_of_key = pd.Series(np.arange(n)).groupby(key_codes).transform("min").to_numpy()
    edges = [(np.arange(n), first_of_key)] + _duplicate_edges(frame, near_duplicate_threshold, cache_dir)
    comp = _components(n, edges)
    per_comp = pd.DataFrame({"comp": comp, "key": base}).groupby("comp")["key"].agg(["min", "nunique"])
    names = per_comp["min"].where(per_comp["nunique"] == 1, per_comp["min"] + "+" + (per_comp["nunique"] - 1).astype(str))
    return pd.Series(names.loc[comp].to_numpy(), index=frame.index, dtype=object, name="group")


# --------------------------------------------------------------------------- folds


def assign_folds(frame: pd.DataFrame, n_folds: int, seed: int) -> pd.Series:
    """Fold per row from StratifiedGroupKFold(shuffle=True, random_state=seed) on ``target`` and ``group``.

    Deterministic for a seed (independent of row order). Raises DataError if a class has fewer groups than
    folds, since some test fold would then miss that class.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    groups_per_class = frame.groupby("target")["group"].nunique()
    short = groups_per_class[groups_per_class < n_folds]
    if len(short):
        detail = ", ".join(f"{cls!r}: {int(n)}" for cls, n in short.items())
        raise DataError(f"cannot make {n_folds} folds: too few independent groups (patients) in class {detail}")
    folds = np.full(len(frame), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    y = frame["target"].astype(str).to_numpy()
    g = frame["group"].astype(str).to_numpy()
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(frame)), y, g)):
        folds[test] = k
    return pd.Series(folds, index=frame.index, name="fold")


def fold_roles(k: int, n_folds: int) -> dict:
    """Round ``k``: ``{"test": k, "val": (k + 1) % n, "train": [the other folds]}``."""
    if n_folds < 3:
        raise ValueError(f"n_folds must be >= 3 (test, validation and training folds), got {n_folds}")
    if not 0 <= k < n_folds:
        raise ValueError(f"fold {k} is outside 0..{n_folds - 1}")
    val = (k + 1) % n_folds
    return {"test": k, "val": val, "train": [f for f in range(n_folds) if f not in (k, val)]}


def split_of(frame: pd.DataFrame, k: int, n_folds: int) -> pd.Series:
    """Role of every row in round ``k``: 'train', 'val' or 'test'."""
    roles = fold_roles(k, n_folds)
    mapping = {roles["test"]: "test", roles["val"]: "val", **{f: "train" for f in roles["train"]}}
    out = frame["fold"].map(mapping)
    if out.isna().any():
        bad = sorted(set(frame.loc[out.isna(), "fold"]))
        raise DataError(f"split_of: folds {bad} are outside 0..{n_folds - 1}")
    return out.rename("split")


# --------------------------------------------------------------------------- audit


@dataclass
class AuditReport:
    """Outcome of the leakage audit of one splits table."""

    ok: bool
    problems: list[str]  # leakage: a group, content hash or near-duplicate cluster in more than one fold
    notes: list[str]  # not leakage, but worth a look (a class missing from a fold, poor stratification)
    counts: pd.DataFrame  # images per fold (rows) and target (columns)
    max_deviation_pp: float  # largest |fold share - overall share| of a class, percentage points
    summary: str
    unknown_patient_share: float = 0.0  # share of images without a patient id (their patient cannot be checked)

    def __str__(self) -> str:
        return self.summary


def audit(splits: pd.DataFrame, near_duplicate_threshold: float = DEFAULT_NEAR_THRESHOLD) -> AuditReport:
    """Check that no group, patient (``source:patient_id``), sha256 or near-duplicate cluster spans two folds;
    count images per fold and class and the share of images whose patient is unknown."""
    needed = ("path", "source", "patient_id", "group", "fold", "target", "sha256", "phash")
    missing = [c for c in needed if c not in splits.columns]
    if missing:
        raise DataError(f"audit: splits table lacks columns {missing}")
    problems: list[str] = []
    for column, what in (("group", "group"), ("sha256", "identical image (sha256)")):
        problems += _spanning(splits, splits[column].astype(str), what)
    pid = splits["patient_id"].fillna("").astype(str)
    known = pid != ""
    patient = splits["source"].astype(str) + ":" + pid
    problems += _spanning(splits[known], patient[known], "patient")
    if len(splits):
        comp = duplicate_components(splits, near_duplicate_threshold)
        problems += _spanning(splits, pd.Series(comp, index=splits.index), "near-duplicate cluster", exact=False)

    counts = pd.crosstab(splits["fold"], splits["target"]) if len(splits) else pd.DataFrame()
    notes: list[str] = []
    max_dev = 0.0
    if len(splits):
        overall = splits["target"].value_counts(normalize=True)
        shares = counts.div(counts.sum(axis=1), axis=0)
        max_dev = float((shares - overall).abs().to_numpy().max() * 100)
        for fold, row in counts.iterrows():
            for cls in row.index[row == 0]:
                notes.append(f"fold {fold} has no image of class {cls!r}")
        if max_dev > 2.0:
            notes.append(f"class shares deviate up to {max_dev:.1f} pp from the whole in some fold")
    unknown = float((~known).mean()) if len(splits) else 0.0
    if unknown > 0:
        notes.append(f"{unknown:.1%} of images have no patient id: only duplicates keep their patients in one fold")
    ok = not problems
    lines = [
        f"{len(splits)} images, {splits['group'].nunique()} groups, {splits['fold'].nunique()} folds; "
        f"class shares within {max_dev:.1f} pp of the whole; "
        + ("no leakage" if ok else f"{len(problems)} LEAKAGE problem(s)")
    ]
    lines += [f"  LEAK: {p}" for p in problems[:20]] + [f"  note: {n}" for n in notes]
    if len(problems) > 20:
        lines.append(f"  ... and {len(problems) - 20} more")
    return AuditReport(ok, problems, notes, counts, max_dev, "\n".join(lines), unknown)


def _spanning(splits: pd.DataFrame, keys: pd.Series, what: str, exact: bool = True) -> list[str]:
    folds_per_key = splits["fold"].groupby(keys.to_numpy()).nunique()
    out = []
    for key in folds_per_key.index[folds_per_key > 1]:
        rows = splits[keys.to_numpy() == key]
        folds = sorted(int(f) for f in rows["fold"].unique())
        paths = ", ".join(rows["path"].astype(str).head(3))
        label = f"{what} {key}" if exact else what
        out.append(f"{label} is in folds {folds}: {paths}{' ...' if len(rows) > 3 else ''}")
    return out


def check_no_leakage(splits: pd.DataFrame, near_duplicate_threshold: float = DEFAULT_NEAR_THRESHOLD) -> AuditReport:
    """Audit ``splits``; raise LeakageError listing the offenders if anything spans two folds."""
    report = audit(splits, near_duplicate_threshold)
    if not report.ok:
        raise LeakageError("splits leak between folds:\n" + "\n".join(report.problems))
    return report


# --------------------------------------------------------------------------- end to end


@dataclass
class SplitsResult:
    """Everything ``build_splits`` produced for one task."""

    splits: pd.DataFrame  # SPLIT_COLUMNS
    quality: pd.DataFrame  # path, reason: files left out
    dropped: dict[str, int]  # canonical label -> images outside the task
    audit: AuditReport
    data_root: str = ""


def build_splits(cfg, task: str, data_root: str | os.PathLike | None = None, progress: bool = False) -> SplitsResult:
    """Discover, scan, group, fold and audit the images of ``task`` (cfg: a StudyConfig)."""
    from .scan import scan_table
    from .sources import discover

    cfg.task_classes(task)  # ConfigError for an unknown task
    classes = cfg.tasks[task]
    root = str(data_root if data_root is not None else cfg.data.root)
    table = discover(root)
    scanned, quality = scan_table(table, cfg.data.cache_dir, cfg.data.resize, workers=cfg.data.workers, progress=progress)
    threshold = cfg.data.near_duplicate_threshold
    # Groups over every scanned image, so duplicates reached through labels outside the task still join; the
    # pair scores are cached, since every task (and the notebook's preview) groups the same images.
    scanned["group"] = assign_groups(scanned, threshold, cfg.data.cache_dir)
    frame, dropped = task_table(scanned, classes, cfg.data.max_per_class, cfg.split.seed, where=root)
    frame["fold"] = assign_folds(frame, cfg.split.n_folds, cfg.split.seed)
    splits = frame[list(SPLIT_COLUMNS)].reset_index(drop=True)
    report = check_no_leakage(splits, threshold)
    return SplitsResult(splits=splits, quality=quality, dropped=dropped, audit=report, data_root=root)


def write_splits(path: str | os.PathLike, splits: pd.DataFrame) -> Path:
    """Write a splits table atomically as CSV (columns in contract order)."""
    missing = [c for c in SPLIT_COLUMNS if c not in splits.columns]
    if missing:
        raise DataError(f"{path}: splits table lacks columns {missing}")
    return io.write_csv(path, splits[list(SPLIT_COLUMNS)])


def read_splits(path: str | os.PathLike) -> pd.DataFrame:
    """Read a splits CSV; DataError naming the file for missing columns or bad folds."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: splits file not found (make the splits first)") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read splits CSV ({exc})") from exc
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    for col in ("fold", "width", "height"):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            raise DataError(f"{path}: column {col} has non-integer values, e.g. row {int(bad.idxmax()) + 2}")
        frame[col] = values.astype("int64")
    folds = sorted(frame["fold"].unique())
    if len(frame) and (folds[0] < 0 or folds != list(range(folds[-1] + 1))):
        raise DataError(f"{path}: folds must be 0..n-1 with none empty, found {folds}")
    return frame
