import json
import os
from pathlib import Path
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib import evaluate as ev
from cxrlib.config import load_config
from cxrlib.data.images import file_sha256
from cxrlib.errors import ArtifactError, DataError
from cxrlib.evaluate.external import (
    evaluable_external, external_validate, model_frame, predict_external, training_hashes,
)
from cxrlib.evaluate.tables import external_table
from cxrlib.inference import probs_from_logits
from cxrlib.models import build_model, save_checkpoint, set_checkpoint_meta
from support.fake_run import MULTICLASS, make_fake_run
from support.nbval_helper import run_notebook_under_nbval
from support.images import xray_like

LABELS = ["normal", "viral_pneumonia", "covid19"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An external manifest root (2 sources, one image also in training, one label outside the task) and a run
    with five tiny resnet18 fold models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("external")
    ext = base / "ext"
    ext.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(18):
        label = LABELS[i % 3]
        name = f"img{i:02d}.png"
        Image.fromarray(xray_like(rng, 40, brightness=20 * (i % 3))).save(ext / name)
        rows.append({"path": name, "label": label, "source": "site_a" if i < 10 else "site_b",
                     "patient_id": f"q{i // 2}"})
    Image.fromarray(xray_like(rng, 40)).save(ext / "bact.png")
    rows.append({"path": "bact.png", "label": "bacterial_pneumonia", "source": "site_a", "patient_id": "q99"})
    pd.DataFrame(rows).to_csv(ext / "manifest.csv", index=False)

    run = make_fake_run(base / "run")
    splits = pd.read_csv(run / "multiclass" / "splits.csv", dtype=str, keep_default_na=False)
    leaked = {**splits.iloc[0].to_dict(), "path": "/elsewhere/copy.png", "sha256": file_sha256(ext / "img03.png")}
    pd.concat([splits, pd.DataFrame([leaked])]).to_csv(run / "multiclass" / "splits.csv", index=False)
    model = build_model("resnet18", 3, weights="none")
    for k in range(5):
        with torch.no_grad():
            model.fc.bias.copy_(torch.tensor([0.3 * k, -0.2 * k, 0.1]))
        meta = {"arch": "resnet18", "classes": MULTICLASS, "resize": 32, "image_size": 32, "epoch": 1, "params": {}}
        save_checkpoint(run / "multiclass" / f"fold{k}" / "model.pt", model, meta)
    overrides = [f"data.cache_dir={base / 'cache'}", "data.resize=32", "train.image_size=32", "evaluate.bootstrap=40",
                 "train.device=cpu", "data.workers=1", "train.batch_size=8", f"evaluate.external={ext}"]
    cfg = load_config(None, overrides)
    report = external_validate(run, "multiclass", cfg)
    yield run, ext, cfg, report, overrides
    torch.set_num_threads(threads)


def test_counts_and_training_images_excluded(setup):
    run, ext, cfg, report, _ = setup
    counts = report["counts"]
    assert counts["discovered"] == 19
    assert counts["outside_task"] == {"bacterial_pneumonia": 1}
    assert counts["excluded_in_training"] == 1
    assert counts["evaluated"] == 17
    preds = pd.read_csv(run / "multiclass" / "external" / "predictions.csv")
    assert len(preds) == 17
    assert not preds["path"].str.endswith("img03.png").any()
    assert file_sha256(ext / "img03.png") in training_hashes(run, "multiclass")
    assert report["sources"] == ["site_a", "site_b"]


def test_ensemble_is_mean_of_fold_models(setup):
    run, _, _, report, _ = setup
    preds = pd.read_csv(run / "multiclass" / "external" / "predictions.csv")
    for c in MULTICLASS:
        folds = preds[[f"fold{k}_prob_{c}" for k in range(5)]].to_numpy()
        assert np.allclose(preds[f"prob_{c}"], folds.mean(axis=1))
    probs = preds[[f"prob_{c}" for c in MULTICLASS]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (preds["predicted"] == np.array(MULTICLASS)[probs.argmax(axis=1)]).all()
    # different fold models really differ, and each model's metrics come from its own probabilities
    assert not np.allclose(preds["fold0_prob_normal"], preds["fold4_prob_normal"])
    for k in (0, 4):
        own = ev.score_predictions(model_frame(preds, MULTICLASS, k), MULTICLASS)
        assert report["models"][f"fold{k}"]["all"]["accuracy"]["value"] == pytest.approx(own["accuracy"])


def test_a_calibrated_fold_model_scores_external_images_at_its_temperature(setup, tmp_path):
    run, ext, cfg, _, _ = setup
    plain = pd.read_csv(run / "multiclass" / "external" / "predictions.csv")
    hot = tmp_path / "model.pt"
    shutil.copy(run / "multiclass" / "fold4" / "model.pt", hot)
    set_checkpoint_meta(hot, temperature=3.0)
    frame = evaluable_external(run, "multiclass", cfg, ext)[0]
    got = predict_external(frame, [hot], MULTICLASS, cfg, torch.device("cpu"))
    assert got["path"].tolist() == plain["path"].tolist()
    logits = np.log(plain[[f"fold4_prob_{c}" for c in MULTICLASS]].to_numpy())[:, None, :]  # one view: log p = z - c
    np.testing.assert_allclose(got[[f"prob_{c}" for c in MULTICLASS]].to_numpy(), probs_from_logits(logits, 3.0),
                               atol=1e-5)


def test_report_intervals_per_source_and_files(setup):
    run, _, _, report, _ = setup
    ens = report["ensemble"]
    assert ens["all"]["n"] == 17
    assert ens["by_source"]["site_a"]["n"] + ens["by_source"]["site_b"]["n"] == 17
    # two images per patient: headline intervals resample source-qualified patients (merged with duplicates)
    assert ens["all"]["accuracy"]["method"] == "cluster bootstrap (patients and duplicate clusters)"
    assert ens["all"]["bootstrap"]["unit"] == "group" and ens["all"]["bootstrap"]["clusters"] < 17
    assert report["failed"] == [] and report["dropped"] == {"labels": {"bacterial_pneumonia": 1}, "images": 1}
    assert "covid19" in ens["all"] and "sensitivity" in ens["all"]["covid19"]
    stored = json.loads((run / "multiclass" / "external" / "external.json").read_text())
    assert stored == report


def test_summary_and_side_by_side_table(setup):
    run, _, cfg, report, _ = setup
    summary = ev.summarize_task(run, "multiclass", cfg, external=report)
    assert summary["external"] == report
    table = external_table(report, summary)
    assert list(table.columns[:4]) == ["cross-validation", "external ensemble", "ensemble: site_a", "ensemble: site_b"]
    assert [c for c in table.columns if c.startswith("fold")] == [f"fold{k}" for k in range(5)]
    assert table.loc["n images", "cross-validation"] == "120"
    assert table.loc["n images", "external ensemble"] == "17"
    acc = report["ensemble"]["all"]["accuracy"]
    assert table.loc["accuracy", "external ensemble"] == f"{acc['value']:.3f} [{acc['low']:.3f}, {acc['high']:.3f}]"


def test_missing_model_and_root_errors(setup, tmp_path):
    run, ext, cfg, _, _ = setup
    copy = tmp_path / "run"
    shutil.copytree(run, copy, copy_function=os.link)
    (copy / "multiclass" / "fold2" / "model.pt").unlink()
    with pytest.raises(ArtifactError, match="fold2/model.pt"):
        external_validate(copy, "multiclass", cfg)
    plain = load_config(None, [f"data.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(DataError, match="evaluate.external is not set"):
        external_validate(run, "multiclass", plain)


def test_evaluate_notebook_with_external_validation(setup, tmp_path):
    run, _, _, report, overrides = setup
    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "03_evaluate.ipynb"
    params = {"run_dir": str(run), "task": "multiclass", "params_file": None,
              "overrides": [*overrides, "evaluate.bootstrap=10"]}
    run_notebook_under_nbval(notebook, tmp_path / "nb", params)
    summary = json.loads((run / "multiclass" / "summary.json").read_text())
    assert summary["external"]["counts"] == report["counts"]
    assert summary["external"]["ensemble"]["all"]["bootstrap"]["resamples"] == 10
    assert summary["pooled"]["n"] == 120
    for name in ("loss_curves", "confusion_counts", "confusion_percent", "roc", "precision_recall", "reliability"):
        assert (run / "multiclass" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_external_root_with_one_class(setup, tmp_path):
    shared, _, cfg, _, _ = setup
    run = tmp_path / "run"
    shutil.copytree(shared, run, copy_function=os.link)  # outputs go to fresh files; the models are shared
    root = tmp_path / "covid_only"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(xray_like(rng, 40)).save(root / f"c{i}.png")
    pd.DataFrame({"path": [f"c{i}.png" for i in range(4)], "label": "covid19"}).to_csv(root / "list.csv", index=False)
    report = external_validate(run, "multiclass", cfg, root=root)
    assert report["counts"]["absent_classes"] == ["normal", "viral_pneumonia"]
    ens = report["ensemble"]["all"]
    assert ens["n"] == 4
    assert ens["per_class"]["covid19"]["auc"]["value"] is None  # undefined without negatives
    assert ens["covid19"]["sensitivity"]["value"] == pytest.approx(
        (pd.read_csv(run / "multiclass" / "external" / "predictions.csv")["predicted"] == "covid19").mean())


def test_overlap_with_training_names_identical_near_duplicate_and_same_patient():
    from cxrlib.data.phash import fingerprint
    from cxrlib.evaluate.external import overlap_with_training

    rng = np.random.default_rng(3)
    imgs = [xray_like(rng, 64) for _ in range(4)]
    training = pd.DataFrame({"sha256": ["s0", "s1"], "phash": [fingerprint(imgs[0]), fingerprint(imgs[1])],
                             "source": ["site_a", "site_a"], "patient_id": ["p1", ""]})
    brighter = np.clip(imgs[1].astype(int) + 6, 0, 255).astype(np.uint8)  # a re-exported copy of a training image
    frame = pd.DataFrame({"sha256": ["s0", "x1", "x2", "x3"],
                          "phash": [fingerprint(imgs[0]), fingerprint(brighter), fingerprint(imgs[2]), fingerprint(imgs[3])],
                          "source": ["site_b", "site_b", "site_a", "site_b"], "patient_id": ["", "", "p1", "p1"]})
    reason = overlap_with_training(frame, training, near_duplicate_threshold=0.995)
    assert reason.tolist() == ["identical", "near_duplicate", "same_patient", ""]  # p1 of another source is another patient


def test_a_bad_external_root_costs_only_the_external_section(setup, tmp_path):
    from cxrlib.evaluate.external import external_validate_or_error

    run, _, cfg, _, overrides = setup
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert (copy / "multiclass" / "external" / "external.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = load_config(None, [*overrides, f"evaluate.external={empty}"])
    report = external_validate_or_error(copy, "multiclass", bad)
    assert report["data_root"] == str(empty) and str(empty) in report["error"]
    written = json.loads((copy / "multiclass" / "external" / "external.json").read_text())
    assert written == report  # the stale results are replaced by the error
    assert ev.summarize_task(copy, "multiclass", bad, external=report)["external"]["error"] == report["error"]
