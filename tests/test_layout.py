"""RunLayout names every run file; the package keeps to it (no run file named elsewhere, small modules)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from cxrlib.layout import RunLayout, fold_name, parse_fold_name

ROOT = Path(__file__).resolve().parents[1]
RUN_FILE = re.compile(r"(splits\.csv|predictions\.csv|metrics\.json|history\.csv|summary\.json|model\.pt)|fold\{")


def test_paths_of_a_run():
    run = RunLayout("/r")
    fold = run.task("binary").fold(2)
    assert fold.dir == Path("/r/binary/fold2") and fold.model == Path("/r/binary/fold2/model.pt")
    assert fold.train_info.name == "train.json" and fold.artifacts[-1] == fold.train_info
    assert run.task("binary").external_report == Path("/r/binary/external/external.json")
    assert RunLayout("").task("t").splits.as_posix() == "t/splits.csv"  # relative paths for the job table
    assert fold_name(3) == "fold3" and fold_name("all") == "foldall" and parse_fold_name("fold12") == 12
    assert parse_fold_name("folder") is None


def test_trained_folds_and_tasks_are_found_on_disk(tmp_path):
    run = RunLayout(tmp_path)
    for k in (0, 2):
        run.fold("multiclass", k).dir.mkdir(parents=True)
        run.fold("multiclass", k).model.write_bytes(b"x")
    run.task("multiclass").splits.write_text("")
    assert run.task("multiclass").trained_folds() == [0, 2] and run.tasks_with_splits() == ["multiclass"]


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            out.add(id(body[0].value))
    return out


def _package_files():
    return sorted(p for p in (ROOT / "cxrlib").rglob("*.py") if p.name != "layout.py")


@pytest.mark.parametrize("path", _package_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_names_a_run_file_or_grows_past_400_lines(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name}: split it (one job per module)"
    tree = ast.parse(text)
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            assert not RUN_FILE.search(node.value), f"{path.name}:{node.lineno} names a run file; use cxrlib.layout"
        if isinstance(node, ast.JoinedStr):
            assert not RUN_FILE.search(ast.unparse(node)), f"{path.name}:{node.lineno} builds a run path by hand"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_code_uses_the_layout(notebook):
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "code":
            code = "\n".join(line.split("#", 1)[0] for line in "".join(cell["source"]).splitlines())
            assert not RUN_FILE.search(code), f"{notebook.name}: a code cell names a run file"
