"""Evaluation of a trained run: metrics per fold and across folds, intervals, tables beside the published
numbers, the task summary, and external validation on data the study never trained on.

Modules follow the data: ``artifacts`` (read and check each fold's predictions and history), ``metrics``
(scikit-learn metrics of one set of test predictions; mean / SD across folds), ``intervals`` (Wilson, cluster
bootstrap), ``pooled`` (all folds' test predictions with intervals), ``tables`` (the original study's tables
beside ours, errors by class x source, external beside cross-validation), ``summary`` (``metrics.json`` and
``summary.json``) and ``external``.
"""

from .artifacts import (
    PREDICTION_COLUMNS, attach_groups, check_predictions, load_fold_predictions, load_histories, read_predictions,
    scored_rows,
)
from .metrics import across_folds, expected_calibration_error, reliability_bins, score_predictions, top_confidence
from .pooled import cluster_ids, pooled_metrics
from .summary import read_summary, summarize_task, write_fold_metrics
from .tables import (
    DISPLAY_NAMES, PUBLISHED, calibration_note, errors_by_source, external_table, fold_table, paper_table,
)

__all__ = [
    "DISPLAY_NAMES", "PREDICTION_COLUMNS", "PUBLISHED", "across_folds", "attach_groups", "calibration_note",
    "check_predictions",
    "cluster_ids", "errors_by_source", "expected_calibration_error", "external_table", "fold_table",
    "load_fold_predictions", "load_histories", "paper_table", "pooled_metrics", "read_predictions", "read_summary",
    "reliability_bins", "score_predictions", "scored_rows", "summarize_task", "top_confidence",
    "write_fold_metrics",
]
