"""Batch orchestration of the study: a deterministic job table of papermill notebooks and python steps,
run with resume, failure isolation and a local process pool (``python run_all.py``)."""

from .checks import KernelMissingError, check_data_root, check_kernel
from .cli import main
from .execute import KERNEL_NAME, JobContext, execute_job, export_html
from .jobs import Job, RunSpec, build_jobs, is_complete, is_stale, stage_ranges
from .schedule import Outcome, RunResult, run_jobs
from .state import RunRecord, data_fingerprint, params_diff

__all__ = [
    "KERNEL_NAME", "Job", "JobContext", "KernelMissingError", "Outcome", "RunRecord", "RunResult", "RunSpec",
    "build_jobs", "check_data_root", "check_kernel", "data_fingerprint", "execute_job", "export_html",
    "is_complete", "is_stale", "main", "params_diff", "run_jobs", "stage_ranges",
]
