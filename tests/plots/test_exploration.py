from pathlib import Path

import pandas as pd

from cxrlib.data import describe as explore
from cxrlib.layout import RunLayout
from support.synthetic import make_class_folders
from support.nbval_helper import run_notebook_under_nbval

ROOT = Path(__file__).resolve().parents[2]


def table():
    return pd.DataFrame({
        "label": ["normal", "normal", "covid19", "covid19", "covid19"],
        "source": ["a", "b", "b", "b", "b"],
        "patient_id": ["p1", "", "p2", "p2", "p3"],
        "width": [10, 10, 20, 20, 20],
        "height": [10, 10, 30, 30, 30],
    })


def test_class_source_counts_has_totals():
    t = explore.class_source_counts(table())
    assert t.loc["covid19", "b"] == 3 and t.loc["normal", "a"] == 1 and t.loc["total", "total"] == 5


def test_images_per_patient():
    t = explore.images_per_patient(table())
    assert t.loc["b", "patients"] == 2 and t.loc["b", "images_without_patient"] == 1
    assert t.loc["b", "images_per_patient_max"] == 2 and t.loc["a", "images_per_patient_mean"] == 1


def test_size_table_counts_sizes_per_source():
    t = explore.size_table(table())
    assert t[(t.source == "b") & (t["size"] == "20x30")]["images"].item() == 3


def test_fold_composition_deviation():
    splits = pd.DataFrame({"fold": [0, 0, 1, 1], "target": ["a", "b", "a", "a"], "group": ["g1", "g2", "g3", "g4"]})
    t = explore.fold_composition(splits)
    # overall share of a = 75 %; fold 0 has 50 %, fold 1 has 100 %: 25 pp both
    assert t.loc[0, "a %"] == 50.0 and t.loc[1, "max deviation (pp)"] == 25.0 and t.loc[0, "groups"] == 2


def test_exploration_notebook_runs_on_synthetic_root(tmp_path):
    data = make_class_folders(tmp_path / "data", {"normal": 12, "viral_pneumonia": 12, "covid19": 12, "bacterial_pneumonia": 3})
    (data / "covid19" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = RunLayout(tmp_path / "run").exploration
    run_notebook_under_nbval(
        ROOT / "notebooks" / "01_data_exploration.ipynb", tmp_path,
        {"run_dir": str(tmp_path / "run"), "task": "multiclass", "params_file": str(ROOT / "params" / "smoke.yaml"),
         "overrides": [f"data.cache_dir={tmp_path / 'cache'}", f"data.root={data}", "data.resize=32", "split.seed=1"]},
    )
    audit = pd.read_csv(out / "source_audit.csv")
    assert set(audit["label"]) >= {"normal", "covid19", "bacterial_pneumonia", "total"}
    quality = pd.read_csv(out / "data_quality.csv")
    assert quality["path"].str.endswith("broken.png").tolist() == [True]
    comp = pd.read_csv(out / "fold_composition_multiclass.csv")
    assert comp["images"].sum() == 36
    assert (out / "figures" / "samples.png").stat().st_size > 1000
