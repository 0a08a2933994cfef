"""A derived task's splits (``derived_tasks``): its source task's rows and folds under the derived task's classes."""

from __future__ import annotations

import pandas as pd

from ..errors import DataError


def relabel_splits(splits: pd.DataFrame, cfg, task: str, where: str = "") -> pd.DataFrame:
    """A derived task's splits (``derived_tasks``): the source task's ``splits`` with each target replaced by the
    ``task`` class holding it; rows and folds unchanged. DataError naming ``where`` (the source's splits file)
    for a target the source task does not have."""
    source = cfg.source_task(task)
    names = cfg.task_classes(task)
    to_class = {cls: names[i] for cls, i in zip(cfg.task_classes(source), cfg.class_map(task))}
    unknown = sorted(set(splits["target"]) - set(to_class))
    if unknown:
        raise DataError(f"{where or f'splits of task {source}'}: targets {unknown} are not classes of {source} "
                        f"({sorted(to_class)}); remake its splits")
    out = splits.copy()
    out["target"] = out["target"].map(to_class)
    return out
