"""Run a project notebook with papermill-injected parameters and check its outputs (shared by the notebook tests)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat

KERNEL = "cxr-study"

#: A code cell whose source matches this draws a figure, so it must leave an ``image/png`` output.
FIGURE_CALL = re.compile(r"\b(show_figure|figure_\w+|plot_\w+|Image)\(")


def figure_problems(nb) -> list[str]:
    """Why the executed notebook ``nb`` fails "every figure is a picture": a figure cell without an
    ``image/png`` output, or an output that reads ``<Figure size`` (a Figure shown as text)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        texts = [o.get("text", "") for o in outputs] + [o.get("data", {}).get("text/plain", "") for o in outputs]
        if any("<Figure size" in "".join(t) for t in texts):
            problems.append(f"cell {i}: a Figure printed as text")
        if FIGURE_CALL.search(cell.source) and not any("image/png" in o.get("data", {}) for o in outputs):
            problems.append(f"cell {i}: draws a figure but has no image/png output: {cell.source[:80]!r}")
    return problems


def run_notebook_under_nbval(notebook, tmp_path, parameters: dict, timeout: int = 600):
    """Execute ``notebook`` with ``parameters`` (papermill) in ``tmp_path`` and return the executed notebook.

    Fails the calling test when a cell raises, or when a figure is not a PNG output (``figure_problems``).
    The kernel runs with one BLAS/OpenMP thread unless OMP_NUM_THREADS is already set (tests share two cores).
    """
    import papermill

    notebook = Path(notebook).resolve()
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    dst = tmp_path / notebook.name
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        papermill.execute_notebook(
            str(notebook), str(dst), parameters=parameters, kernel_name=KERNEL, language="python",
            progress_bar=False, cwd=str(tmp_path), execution_timeout=timeout,
        )
    except papermill.PapermillExecutionError as exc:
        raise AssertionError(f"{notebook.name} failed: {exc}") from None
    nb = nbformat.read(dst, as_version=4)
    problems = figure_problems(nb)
    assert not problems, f"{notebook.name}: figures that are not pictures:\n" + "\n".join(problems)
    return nb
