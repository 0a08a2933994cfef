"""Run a project notebook under nbval with papermill-injected parameters (shared by the notebook tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KERNEL = "cxr-study"


def run_notebook_under_nbval(notebook, tmp_path, parameters: dict, timeout: int = 600) -> Path:
    """Inject ``parameters`` into ``notebook`` (papermill, not executed), then run it with ``pytest --nbval-lax``.

    The prepared copy is written to ``tmp_path`` and executed there (cwd = tmp_path). Fails the calling test
    with nbval's output when any cell raises. Returns the prepared notebook's path. The kernel runs with one
    BLAS/OpenMP thread unless OMP_NUM_THREADS is already set (tests share two cores).
    """
    import papermill

    notebook = Path(notebook).resolve()
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    dst = tmp_path / notebook.name
    papermill.execute_notebook(
        str(notebook), str(dst), parameters=parameters, prepare_only=True, kernel_name=KERNEL, language="python",
        progress_bar=False,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", str(dst), "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{notebook.name} failed under nbval:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    return dst
