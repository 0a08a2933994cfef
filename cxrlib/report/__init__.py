"""The run's summary: headline numbers per task (``headline``), the tables notebook 05 shows (``tables``) and
``results/<run>/index.html`` (``html``)."""

from .headline import external_failures, headline_sentence, headline_table
from .html import render_index, write_index
from .tables import (
    SHORTCUT_LEGEND, covid_table, errors_table, external_table, figures, job_status, load_run, notebooks,
    read_summary, results_table, run_info, run_tasks, safe_table, shortcut_table, source_audit,
)

__all__ = [
    "SHORTCUT_LEGEND", "covid_table", "errors_table", "external_failures", "external_table", "figures",
    "headline_sentence", "headline_table", "job_status", "load_run", "notebooks", "read_summary", "render_index",
    "results_table", "run_info", "run_tasks", "safe_table", "shortcut_table", "source_audit", "write_index",
]
