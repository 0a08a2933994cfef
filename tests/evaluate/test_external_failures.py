"""External validation: a bad source costs only itself, total failures are recorded, the broad binary analysis
(COVID-19 against every other finding) and macro averages on a set lacking a class."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib import evaluate as ev
from cxrlib.config import load_config
from cxrlib.evaluate.external import external_validate, external_validate_or_error
from cxrlib.models import build_model, save_checkpoint
from support.fake_run import BINARY, MULTICLASS, make_fake_run
from support.images import xray_like


def _manifest_source(folder: Path, labels: list[str], rng, prefix: str, patients: bool = True) -> None:
    folder.mkdir(parents=True)
    rows = []
    for i, label in enumerate(labels):
        name = f"{prefix}{i:02d}.png"
        Image.fromarray(xray_like(rng, 40, brightness=7 * i)).save(folder / name)
        rows.append({"path": name, "label": label, "patient_id": f"{prefix}{i // 2}" if patients else ""})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)


def _models(run: Path, task: str, classes: list[str]) -> None:
    model = build_model("resnet18", len(classes), weights="none")
    for k in range(5):
        meta = {"arch": "resnet18", "classes": classes, "resize": 32, "image_size": 32, "epoch": 1, "params": {}}
        save_checkpoint(run / task / f"fold{k}" / "model.pt", model, meta)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("ext_fail")
    root = base / "ext"
    rng = np.random.default_rng(3)
    # a good source without viral pneumonia, with findings outside the narrow tasks
    _manifest_source(root / "good", ["normal", "covid19"] * 4 + ["bacterial_pneumonia", "lung_opacity", "other"],
                     rng, "g")
    # a Cohen-style folder whose metadata.csv lacks its columns: the reader fails
    (root / "cohen_bad" / "images").mkdir(parents=True)
    (root / "cohen_bad" / "metadata.csv").write_text("foo,bar\n1,2\n")
    # a manifest whose images cannot be decoded: the scan fails for the whole source
    broken = root / "broken"
    broken.mkdir()
    for i in range(2):
        (broken / f"b{i}.png").write_bytes(b"not an image")
    pd.DataFrame({"path": ["b0.png", "b1.png"], "label": "covid19"}).to_csv(broken / "list.csv", index=False)
    run = base / "run"
    make_fake_run(run, "multiclass")
    make_fake_run(run, "binary")
    _models(run, "multiclass", MULTICLASS)
    _models(run, "binary", BINARY)
    overrides = [f"data.cache_dir={base / 'cache'}", "data.resize=32", "train.image_size=32", "evaluate.bootstrap=30",
                 "train.device=cpu", "data.workers=1", "train.batch_size=8", f"evaluate.external={root}"]
    cfg = load_config(None, overrides)
    yield run, root, cfg, overrides
    torch.set_num_threads(threads)


def test_a_bad_source_costs_only_itself(world):
    run, root, cfg, _ = world
    report = external_validate(run, "multiclass", cfg)
    failed = {Path(f["source"]).name: f["reason"] for f in report["failed"]}
    assert set(failed) == {"cohen_bad", "broken"}
    assert "none of its 2 images could be read" in failed["broken"]
    assert report["counts"]["evaluated"] == 8
    assert report["dropped"] == {"labels": {"bacterial_pneumonia": 1, "lung_opacity": 1, "other": 1}, "images": 3}
    assert report["counts"]["absent_classes"] == ["viral_pneumonia"]
    assert isinstance(report["warnings"], list)
    assert "broad" not in report  # three classes: no COVID-19-against-the-rest analysis
    # macro averages cover the two classes present only
    ens = report["ensemble"]["all"]
    per = ens["per_class"]
    assert per["viral_pneumonia"]["recall"]["value"] is None
    assert ens["macro"]["recall"]["value"] == pytest.approx(
        (per["normal"]["recall"]["value"] + per["covid19"]["recall"]["value"]) / 2)
    stored = json.loads((run / "multiclass" / "external" / "external.json").read_text())
    assert stored["failed"] == report["failed"]


def test_binary_task_adds_the_broad_analysis(world):
    run, root, cfg, _ = world
    report = external_validate(run, "binary", cfg)
    assert report["ensemble"]["all"]["n"] == 8  # narrow: normal (= other) and covid19
    broad = report["broad"]
    assert broad["negative_label"] == "any other finding (bacterial_pneumonia, lung_opacity, normal, other)"
    assert broad["negative_counts"] == {"bacterial_pneumonia": 1, "lung_opacity": 1, "normal": 4, "other": 1}
    assert broad["ensemble"]["all"]["n"] == 11 and set(broad["models"]) == {f"fold{k}" for k in range(5)}
    assert broad["ensemble"]["all"]["per_class"]["other"]["support"] == 7
    table = ev.external_table(report)
    assert "ensemble: covid19 vs any other finding" in table.columns


def test_total_failure_is_recorded_for_the_summary(world, tmp_path):
    run, _, cfg, overrides = world
    missing = load_config(None, [*overrides, f"evaluate.external={tmp_path / 'nowhere'}"])
    report = external_validate_or_error(run, "multiclass", missing)
    assert report["data_root"] == str(tmp_path / "nowhere") and "does not exist" in report["error"]
    assert json.loads((run / "multiclass" / "external" / "external.json").read_text()) == report
    summary = ev.summarize_task(run, "multiclass", missing, external=report)
    assert summary["external"] == report
    # missing fold models are a total failure too
    no_models = tmp_path / "run"
    make_fake_run(no_models, "multiclass")
    report = external_validate_or_error(no_models, "multiclass", cfg)
    assert "fold models missing" in report["error"]
