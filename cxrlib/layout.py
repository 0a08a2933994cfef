"""Where every file of a run lives: the one place that names a run's folders and files.

``RunLayout(run_dir)`` → ``.task(name)`` → ``.fold(k)``; each level has a property per artifact::

    results/<run>/                      run.json, index.html, logs/, exploration/, 01_…, 05_… notebooks
      <task>/                           splits.csv, quality.csv, summary.json, cam_stats.csv, cam_road.csv,
                                        figures/,
                                        03_evaluate / 04_gradcam_gallery / 06_shortcut_controls notebooks,
                                        external/
        controls/                       controls.json; <control>/fold<k>/ (as a fold: model.pt, predictions.csv, …),
                                        <control>/external_predictions.csv
        export/                         ensemble.pt|.onnx, model_card.json (python -m cxrlib export)
        predict/                        predictions.csv, cam_*.png (python -m cxrlib predict, default --out)
        fold<k>/                        model.pt, history.csv, predictions.csv, train.json, metrics.json,
                                        checkpoint_last.pt, 02_train_fold notebook

``RunLayout("")`` gives the same paths relative to the run folder (the runner's job table uses them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

NB_EXPLORE = "01_data_exploration.ipynb"
NB_TRAIN = "02_train_fold.ipynb"
NB_EVALUATE = "03_evaluate.ipynb"
NB_GRADCAM = "04_gradcam_gallery.ipynb"
NB_SUMMARY = "05_summary.ipynb"
NB_CONTROLS = "06_shortcut_controls.ipynb"
NB_COMPARE = "07_compare.ipynb"

_FOLD = re.compile(r"^fold(\d+)$")


def fold_name(k: int | str) -> str:
    """``fold<k>``: the fold's folder name, and the prefix of its per-model columns, job ids and figure tags
    (``foldall`` for the figures made from every fold)."""
    return "foldall" if k == "all" else f"fold{int(k)}"


def parse_fold_name(name: str) -> int | None:
    """``k`` for ``fold<k>``, else None."""
    m = _FOLD.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class FoldLayout:
    """The files of one cross-validation round."""

    dir: Path
    index: int

    @property
    def model(self) -> Path:
        return self.dir / "model.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.dir / "checkpoint_last.pt"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.csv"

    @property
    def train_info(self) -> Path:
        """``train.json``: written last by training, it marks the fold finished."""
        return self.dir / "train.json"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def notebook(self) -> Path:
        return self.dir / NB_TRAIN

    @property
    def artifacts(self) -> tuple[Path, ...]:
        """What a finished training leaves (``train.json`` last)."""
        return (self.model, self.history, self.predictions, self.train_info)


@dataclass(frozen=True)
class TaskLayout:
    """The files of one task: its splits, folds, evaluation, Grad-CAM, external validation and controls."""

    dir: Path
    name: str

    def fold(self, k: int) -> FoldLayout:
        return FoldLayout(self.dir / fold_name(k), int(k))

    def folds(self, n_folds: int) -> list[FoldLayout]:
        return [self.fold(k) for k in range(n_folds)]

    def trained_folds(self) -> list[int]:
        """Fold numbers that hold a ``model.pt``, sorted."""
        found = (parse_fold_name(p.parent.name) for p in self.dir.glob(f"fold*/{self.fold(0).model.name}"))
        return sorted(k for k in found if k is not None)

    @property
    def splits(self) -> Path:
        return self.dir / "splits.csv"

    @property
    def quality(self) -> Path:
        return self.dir / "quality.csv"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def cam_stats(self) -> Path:
        return self.dir / "cam_stats.csv"

    @property
    def cam_road(self) -> Path:
        """ROAD per sampled test image and percentile (cxrlib.cam.road.road_table)."""
        return self.dir / "cam_road.csv"

    @property
    def figures(self) -> Path:
        return self.dir / "figures"

    @property
    def evaluate_notebook(self) -> Path:
        return self.dir / NB_EVALUATE

    @property
    def gradcam_notebook(self) -> Path:
        return self.dir / NB_GRADCAM

    @property
    def external_dir(self) -> Path:
        return self.dir / "external"

    @property
    def external_predictions(self) -> Path:
        return self.external_dir / "predictions.csv"

    @property
    def external_report(self) -> Path:
        return self.external_dir / "external.json"

    @property
    def controls_dir(self) -> Path:
        return self.dir / "controls"

    @property
    def controls(self) -> Path:
        return self.controls_dir / "controls.json"

    @property
    def controls_notebook(self) -> Path:
        return self.dir / NB_CONTROLS

    @property
    def control_models(self) -> Path:
        """Everything the controls train (``controls/models/<control>/…``): removed when the job is redone."""
        return self.controls_dir / "models"

    def control_fold(self, control: str, k: int) -> FoldLayout:
        """One shortcut control's round ``k``: the same files as a study fold, under ``controls/models/<control>/``."""
        return FoldLayout(self.control_models / control / fold_name(k), int(k))

    def control_external_predictions(self, control: str) -> Path:
        """The control models' predictions on the external data."""
        return self.control_models / control / "external_predictions.csv"

    @property
    def export_dir(self) -> Path:
        """``export/``: the portable fold ensemble (``python -m cxrlib export``) and its model card."""
        return self.dir / "export"

    def exported_model(self, fmt: str, out_dir: str | os.PathLike | None = None) -> Path:
        """The exported ensemble of format ``torchscript`` (``ensemble.pt``) or ``onnx`` (``ensemble.onnx``)."""
        suffix = {"torchscript": ".pt", "onnx": ".onnx"}[fmt]
        return Path(out_dir or self.export_dir) / f"ensemble{suffix}"

    def model_card(self, out_dir: str | os.PathLike | None = None) -> Path:
        return Path(out_dir or self.export_dir) / "model_card.json"

    @property
    def predict_dir(self) -> Path:
        """``predict/``: where ``python -m cxrlib predict`` writes unless given ``--out``."""
        return self.dir / "predict"


@dataclass(frozen=True)
class PredictLayout:
    """The files ``python -m cxrlib predict`` writes into its output folder."""

    dir: Path

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.csv"

    def overlay(self, index: int, image_path: str | os.PathLike) -> Path:
        """``cam_<index>_<image stem>.png``: the CAM overlay of one scored image (the index keeps names unique)."""
        return self.dir / f"cam_{index:04d}_{Path(image_path).stem}.png"


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (``results/<run>``)."""

    root: Path

    def __init__(self, run_dir: str | os.PathLike):
        object.__setattr__(self, "root", Path(run_dir))

    def task(self, name: str) -> TaskLayout:
        return TaskLayout(self.root / name, name)

    def fold(self, task: str, k: int) -> FoldLayout:
        return self.task(task).fold(k)

    def tasks_with_splits(self) -> list[str]:
        """Subfolders holding a splits file, sorted."""
        name = self.task("_").splits.name
        return sorted(p.parent.name for p in self.root.glob(f"*/{name}"))

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run folder, with forward slashes."""
        return Path(path).relative_to(self.root).as_posix()

    @property
    def record(self) -> Path:
        """``run.json``: params, versions, invocations and job states."""
        return self.root / "run.json"

    @property
    def record_lock(self) -> Path:
        """The lock file that serialises updates of the record across processes and machines."""
        return self.root / ".run.json.lock"  # hidden: not a result

    @property
    def index_html(self) -> Path:
        return self.root / "index.html"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def exploration(self) -> Path:
        return self.root / "exploration"

    @property
    def exploration_figures(self) -> Path:
        return self.exploration / "figures"

    @property
    def source_audit(self) -> Path:
        """``source_audit.csv``: images per class x source, written by the exploration notebook."""
        return self.exploration / "source_audit.csv"

    @property
    def explore_notebook(self) -> Path:
        return self.root / NB_EXPLORE

    @property
    def summary_notebook(self) -> Path:
        return self.root / NB_SUMMARY

    @property
    def sweep_dir(self) -> Path:
        """Sub-runs of a ``--sweep``, one folder per parameter combination."""
        return self.root / "sweep"

    def sweep_runs(self) -> list[Path]:
        """The sweep's sub-run folders that hold a record, sorted."""
        name = self.record.name
        return sorted(p.parent for p in self.sweep_dir.glob(f"*/{name}"))

    @property
    def compare_notebook(self) -> Path:
        return self.root / NB_COMPARE
