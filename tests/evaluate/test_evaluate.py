import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from cxrlib import evaluate as ev
from cxrlib.evaluate import metrics as ev_metrics, pooled as ev_pooled
from cxrlib.config import load_config
from cxrlib.errors import ArtifactError
from cxrlib.evaluate.intervals import bootstrap, wilson
from support.fake_run import BINARY, MULTICLASS, fold_predictions, make_fake_run
from support.nbval_helper import run_notebook_under_nbval

CLASSES = MULTICLASS


def hand_frame() -> pd.DataFrame:
    """Ten hand-written test predictions (plus one val row that must be ignored)."""
    rows = [
        ("normal", [0.80, 0.15, 0.05]), ("normal", [0.60, 0.30, 0.10]), ("normal", [0.30, 0.60, 0.10]),
        ("normal", [0.70, 0.10, 0.20]), ("viral_pneumonia", [0.20, 0.70, 0.10]),
        ("viral_pneumonia", [0.45, 0.40, 0.15]), ("viral_pneumonia", [0.10, 0.50, 0.40]),
        ("covid19", [0.05, 0.05, 0.90]), ("covid19", [0.10, 0.20, 0.70]), ("covid19", [0.20, 0.45, 0.35]),
    ]
    recs = []
    for i, (true, p) in enumerate(rows):
        recs.append({"path": f"/x/{i}.png", "split": "test", "true": true, "predicted": CLASSES[int(np.argmax(p))],
                     **{f"prob_{c}": v for c, v in zip(CLASSES, p)}, "source": "a" if i < 5 else "b",
                     "patient_id": "", "sha256": f"{i:064d}"})
    recs.append({**recs[0], "path": "/x/val.png", "split": "val", "true": "covid19", "predicted": "normal"})
    return pd.DataFrame(recs)


def test_fold_metrics_equal_sklearn():
    frame = hand_frame()
    m = ev.score_predictions(frame, CLASSES)
    test = frame[frame["split"] == "test"]
    y, pred = test["true"], test["predicted"]
    probs = test[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred)) == pytest.approx(0.7)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=CLASSES, zero_division=0)
    for i, c in enumerate(CLASSES):
        assert m["per_class"][c]["precision"] == pytest.approx(p[i])
        assert m["per_class"][c]["recall"] == pytest.approx(r[i])
        assert m["per_class"][c]["f1"] == pytest.approx(f[i])
        assert m["per_class"][c]["support"] == s[i]
        assert m["per_class"][c]["auc"] == pytest.approx(roc_auc_score(y == c, probs[:, i]))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert (m[avg]["precision"], m[avg]["recall"], m[avg]["f1"]) == pytest.approx((p, r, f))
    codes = y.map({c: i for i, c in enumerate(CLASSES)})
    assert m["macro"]["auc"] == pytest.approx(roc_auc_score(codes, probs, multi_class="ovr"))
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=CLASSES).tolist()
    # COVID-19: 2 of 3 found; 0 false alarms among 7 non-COVID images
    assert m["covid19"] == {"sensitivity": pytest.approx(2 / 3), "specificity": pytest.approx(1.0)}


def test_binary_fold_metrics_auc():
    frame = fold_predictions(BINARY, 0)
    m = ev.score_predictions(frame, BINARY)
    test = frame[frame["split"] == "test"]
    auc = roc_auc_score(test["true"] == "covid19", test["prob_covid19"])
    assert m["per_class"]["covid19"]["auc"] == pytest.approx(auc)
    assert m["macro"]["auc"] == pytest.approx(auc)
    assert m["covid19"]["specificity"] == pytest.approx(m["per_class"]["other"]["recall"])


def test_ece_against_hand_computation():
    conf = [0.92, 0.96, 0.81, 0.55, 0.60]
    correct = [1, 0, 1, 1, 0]
    # bins (0.9,1]: conf .94 acc .5 -> .44 * 2/5; (0.8,0.9]: .19 * 1/5; (0.5,0.6]: conf .575 acc .5 -> .075 * 2/5
    expected = 0.44 * 2 / 5 + 0.19 / 5 + 0.075 * 2 / 5
    assert ev.expected_calibration_error(conf, correct, n_bins=10) == pytest.approx(expected)
    bins = ev.reliability_bins(conf, correct, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 1, 2]
    assert bins.loc[9, "accuracy"] == pytest.approx(0.5)
    assert bins.loc[5, "confidence"] == pytest.approx(0.575)
    assert math.isnan(bins.loc[0, "accuracy"])
    assert ev.expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0


def test_bootstrap_statistic_matches_sklearn_on_full_sample():
    frame = pd.concat([fold_predictions(CLASSES, k) for k in range(3)], ignore_index=True)
    m = ev.score_predictions(frame, CLASSES)
    y, pred, probs = ev_metrics._arrays(ev.scored_rows(frame), CLASSES)
    stat = ev_pooled._bootstrap_statistic(y, pred, probs, len(CLASSES))(np.arange(len(y)))
    for avg in ("macro", "weighted"):
        for name in ("precision", "recall", "f1"):
            assert stat[f"{avg}.{name}"] == pytest.approx(m[avg][name])
    for i, c in enumerate(CLASSES):
        assert stat[f"per_class.{i}.f1"] == pytest.approx(m["per_class"][c]["f1"])
        assert stat[f"per_class.{i}.auc"] == pytest.approx(m["per_class"][c]["auc"])
    assert stat["macro.auc"] == pytest.approx(m["macro"]["auc"])
    assert stat["ece"] == pytest.approx(m["ece"])


def test_pooled_intervals_wilson_and_bootstrap():
    frame = pd.concat([fold_predictions(CLASSES, k) for k in range(5)], ignore_index=True)
    a = ev.pooled_metrics(frame, CLASSES, 0.95, 200, seed=3)
    b = ev.pooled_metrics(frame, CLASSES, 0.95, 200, seed=3)
    c = ev.pooled_metrics(frame, CLASSES, 0.95, 200, seed=4)
    assert a == b
    assert a["macro"]["f1"]["low"] != c["macro"]["f1"]["low"]
    n = a["n"]
    correct = round(a["accuracy"]["value"] * n)
    assert (a["accuracy"]["low"], a["accuracy"]["high"]) == pytest.approx(wilson(correct, n, 0.95))
    assert a["accuracy"]["method"] == "wilson"
    cm = np.array(a["confusion_matrix"])
    tp = cm[2, 2]
    assert (a["covid19"]["sensitivity"]["low"], a["covid19"]["sensitivity"]["high"]) == pytest.approx(
        wilson(tp, cm[2].sum(), 0.95))
    for entry in (a["macro"]["f1"], a["weighted"]["f1"], a["per_class"]["normal"]["auc"], a["ece"]):
        assert entry["low"] <= entry["value"] <= entry["high"]
        assert entry["method"].startswith("bootstrap")


def test_cluster_bootstrap_by_patient_when_known():
    frame = pd.concat([fold_predictions(CLASSES, k) for k in range(5)], ignore_index=True)
    test = ev.scored_rows(frame)
    ids, unit = ev.cluster_ids(test)
    assert unit == "patient"
    # source a images share patients (3 per patient); source b images stand alone
    a = test["source"].to_numpy() == "a"
    assert len(set(ids[a])) == a.sum() / 3 and len(set(ids[~a])) == (~a).sum()
    pooled = ev.pooled_metrics(frame, CLASSES, 0.95, 100, seed=0)
    assert pooled["bootstrap"]["unit"] == "patient"
    assert pooled["bootstrap"]["clusters"] == len(set(ids)) < pooled["n"]
    assert pooled["macro"]["f1"]["method"] == "bootstrap (patients)"
    # the same draws as a direct cluster bootstrap with the patient ids
    y, pred, probs = ev_metrics._arrays(test, CLASSES)
    direct = bootstrap(ev_pooled._bootstrap_statistic(y, pred, probs, 3), len(y), ids, 100, 0.95, np.random.default_rng(0))
    assert (pooled["macro"]["f1"]["low"], pooled["macro"]["f1"]["high"]) == pytest.approx(direct["macro.f1"])
    no_ids = ev.pooled_metrics(frame.assign(patient_id=""), CLASSES, 0.95, 100, seed=0)
    assert no_ids["bootstrap"] == {"unit": "image", "clusters": pooled["n"], "resamples": 100, "seed": 0}


def test_missing_folds_named(tmp_path):
    run = make_fake_run(tmp_path, skip=("fold1/predictions.csv", "fold3/predictions.csv", "fold4/history.csv"))
    with pytest.raises(ArtifactError) as err:
        ev.load_fold_predictions(run, "multiclass", 5)
    msg = str(err.value)
    assert "fold1/predictions.csv" in msg and "fold3/predictions.csv" in msg and "fold0" not in msg
    assert "2 of 5 folds" in msg
    with pytest.raises(ArtifactError, match="fold4/history.csv"):
        ev.load_histories(run, "multiclass", 5)


def test_bad_predictions_named(tmp_path):
    frame = hand_frame()
    frame.loc[0, "true"] = "pneumonia"
    path = tmp_path / "predictions.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ArtifactError, match=r"predictions.csv: column true has classes \['pneumonia'\]"):
        ev.read_predictions(path, CLASSES)
    hand_frame().drop(columns="prob_covid19").to_csv(path, index=False)
    with pytest.raises(ArtifactError, match="missing columns.*prob_covid19"):
        ev.read_predictions(path, CLASSES)


def test_empty_patient_ids_stay_strings(tmp_path):
    path = tmp_path / "p.csv"
    hand_frame().assign(patient_id=["NA"] + [""] * 10).to_csv(path, index=False)
    frame = ev.read_predictions(path, CLASSES)
    assert frame["patient_id"].tolist()[:2] == ["NA", ""]


@pytest.mark.parametrize("task", ["multiclass", "binary"])
def test_summarize_writes_fold_metrics_and_summary(tmp_path, task):
    run = make_fake_run(tmp_path, task)
    cfg = load_config(None, ["evaluate.bootstrap=50", "evaluate.seed=1"])
    summary = ev.summarize_task(run, task, cfg)
    classes = cfg.task_classes(task)
    accs = []
    for k in range(5):
        metrics = json.loads((run / task / f"fold{k}" / "metrics.json").read_text())
        assert metrics["fold"] == k and metrics["n"] == 24
        accs.append(metrics["accuracy"])
    assert summary["across_folds"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert summary["across_folds"]["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert summary["pooled"]["n"] == 120
    assert summary["pooled"]["bootstrap"]["unit"] == "group"  # taken from splits.csv
    assert set(summary["covid19"]) == {"sensitivity", "specificity"}
    text = (run / task / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    assert json.loads(text) == summary
    table = ev.paper_table(summary, task)
    names = [ev.DISPLAY_NAMES[c] for c in classes]
    assert list(table.index.get_level_values(0).unique()) == ["Overall"] + names
    assert table.loc[("Overall", "accuracy"), "published"] == ev.PUBLISHED[task]["overall"]["accuracy"]
    assert table.loc[("COVID-19", "recall"), "published"] == ev.PUBLISHED[task]["covid19"]["recall"]
    assert table.loc[("COVID-19", "recall"), "mean"] == pytest.approx(summary["covid19"]["sensitivity"]["mean"])
    assert math.isnan(table.loc[("Overall", "precision"), "published"])


def test_published_numbers():
    assert ev.PUBLISHED["multiclass"]["overall"]["accuracy"] == 0.94
    assert ev.PUBLISHED["multiclass"]["viral_pneumonia"] == {"precision": 0.95, "recall": 0.89}
    assert ev.PUBLISHED["binary"]["other"] == {"precision": 0.98, "recall": 0.99}


def test_errors_by_source():
    frame = hand_frame()
    rates = ev.errors_by_source(frame, classes=CLASSES)
    # test rows: source a = rows 0-4 (normal x4, viral x1), source b = rows 5-9
    assert list(rates.index) == CLASSES + ["all"]
    assert rates.loc["normal", "a"] == pytest.approx(0.25)
    assert rates.loc["viral_pneumonia", "b"] == pytest.approx(0.5)
    assert rates.loc["covid19", "b"] == pytest.approx(1 / 3)
    assert rates.loc["all", "all"] == pytest.approx(0.3)
    assert math.isnan(rates.loc["covid19", "a"])
    n = ev.errors_by_source(frame, value="n")
    assert n.loc["all", "all"] == 10


def test_fold_table(tmp_path):
    run = make_fake_run(tmp_path)
    summary = ev.summarize_task(run, "multiclass", load_config(None, ["evaluate.bootstrap=10"]))
    table = ev.fold_table(summary)
    assert list(table.index) == ["0", "1", "2", "3", "4", "mean", "sd"]
    accs = [m["accuracy"] for m in summary["folds"]]
    assert table.loc["mean", "accuracy"] == pytest.approx(summary["across_folds"]["accuracy"]["mean"])
    assert table.loc["sd", "accuracy"] == pytest.approx(np.std(accs, ddof=1))
    assert table.loc["2", "n"] == 24


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_evaluate.ipynb"


# The notebook's full run (with external validation) is tested in test_external.py.


def test_evaluate_notebook_names_missing_fold(tmp_path):
    run = make_fake_run(tmp_path / "run", "binary", skip=("fold3/predictions.csv",))
    params = {"run_dir": str(run), "task": "binary", "params_file": None, "overrides": []}
    with pytest.raises(AssertionError, match="fold3/predictions.csv"):
        run_notebook_under_nbval(NOTEBOOK, tmp_path / "nb", params)
