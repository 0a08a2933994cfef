"""notebooks/06_predict.ipynb under nbval, with an image injected through ``image_path``."""

from pathlib import Path

import nbformat

from support.nbval_helper import run_notebook_under_nbval

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "06_predict.ipynb"


def test_notebook_shows_probabilities_and_cam_for_an_injected_image(trained_run, tmp_path):
    image = sorted((trained_run.parent / "img").glob("*.png"))[0]
    run_notebook_under_nbval(NOTEBOOK, tmp_path, {"run_dir": str(trained_run), "task": "multiclass",
                                                  "image_path": str(image)})
    # nbval does not keep outputs: execute the prepared copy once more to count the figures
    import papermill

    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(tmp_path / NOTEBOOK.name), str(out), kernel_name="cxr-study", cwd=str(tmp_path),
                               progress_bar=False)
    outputs = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
