"""Every notebook is thin and papermill-ready: a parseable `parameters` cell first, stored without outputs."""

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert "01_data_exploration.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_first_and_fully_parsed_by_papermill(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be tagged parameters"
    assigned = [t.id for node in ast.parse(first.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert assigned, "parameters cell assigns nothing"
    # papermill silently ignores a line it cannot parse (then an injected value is 'unknown'): all must parse
    assert list(papermill.inspect_notebook(str(path))) == assigned


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs_and_with_the_project_kernel(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "clear outputs before committing"
    assert nb.metadata["kernelspec"]["name"] == "cxr-study"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_display_name_is_the_one_make_installs(path):
    makefile = (path.parents[1] / "Makefile").read_text()
    name = nbformat.read(path, as_version=4).metadata["kernelspec"]["display_name"]
    assert f'--display-name "{name}"' in makefile
