"""Macro averages over present classes, cluster-bootstrap headline intervals, undefined resamples, n_folds."""

import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest

from cxrlib import evaluate as ev
from cxrlib.evaluate import pooled as ev_pooled
from cxrlib.evaluate.intervals import Resampler, bootstrap_intervals
from support.fake_run import MULTICLASS, fold_predictions

CLASSES = MULTICLASS  # normal, viral_pneumonia, covid19


def _frame(rows, patients=None):
    recs = []
    for i, (true, p) in enumerate(rows):
        recs.append({"path": f"/x/{i}.png", "split": "test", "true": true, "predicted": CLASSES[int(np.argmax(p))],
                     **{f"prob_{c}": v for c, v in zip(CLASSES, p)}, "source": "ext",
                     "patient_id": "" if patients is None else patients[i], "sha256": f"{i:064d}"})
    return pd.DataFrame(recs)


NO_VIRAL = [("normal", [0.8, 0.1, 0.1]), ("normal", [0.2, 0.1, 0.7]), ("normal", [0.6, 0.3, 0.1]),
            ("covid19", [0.1, 0.1, 0.8]), ("covid19", [0.2, 0.2, 0.6]), ("covid19", [0.1, 0.6, 0.3])]


def test_macro_averages_only_present_classes():
    # an external set without viral pneumonia; one covid image is predicted viral
    m = ev.score_predictions(_frame(NO_VIRAL), CLASSES)
    viral = m["per_class"]["viral_pneumonia"]
    assert math.isnan(viral["recall"]) and math.isnan(viral["f1"]) and viral["support"] == 0
    assert viral["precision"] == 0.0  # predicted once, wrongly
    normal, covid = m["per_class"]["normal"], m["per_class"]["covid19"]
    assert normal["recall"] == pytest.approx(2 / 3) and covid["recall"] == pytest.approx(2 / 3)
    assert m["macro"]["recall"] == pytest.approx(2 / 3)  # not (2/3 + 2/3 + 0) / 3
    assert m["macro"]["precision"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["macro"]["f1"] == pytest.approx((normal["f1"] + covid["f1"]) / 2)
    assert m["macro"]["auc"] == pytest.approx((normal["auc"] + covid["auc"]) / 2)
    # the bootstrap statistic agrees on the full sample
    frame = _frame(NO_VIRAL)
    y, pred, probs = ev.metrics._arrays(frame, CLASSES)
    full = ev_pooled._bootstrap_statistic(y, pred, probs, 3)(np.arange(len(y)))
    for name in ("precision", "recall", "f1", "auc"):
        assert full[f"macro.{name}"] == pytest.approx(m["macro"][name])
    assert math.isnan(full["per_class.1.recall"])
    pooled = ev.pooled_metrics(frame, CLASSES, 0.95, 50, seed=0)
    assert pooled["per_class"]["viral_pneumonia"]["f1"]["undefined_resamples"] == 50
    assert pooled["macro"]["recall"]["value"] == pytest.approx(2 / 3)


def _direct_cluster_percentiles(y, pred, groups, resamples, level, seed):
    """Percentile cluster bootstrap of accuracy written directly with numpy (same draw order as Resampler)."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in names}
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(names), len(names))
        idx = np.concatenate([members[names[j]] for j in pick])
        values.append(float((y[idx] == pred[idx]).mean()))
    alpha = (1 - level) / 2
    return tuple(np.quantile(values, [alpha, 1 - alpha]))


def test_cluster_bootstrap_accuracy_equals_direct_numpy_implementation():
    rng = np.random.default_rng(5)
    n = 60
    patients = [f"p{i // 4}" for i in range(n)]  # 15 patients of 4 images
    rows = []
    for i in range(n):
        true = CLASSES[(i // 4) % 3]
        p = rng.dirichlet([1, 1, 1])
        rows.append((true, list(p)))
    frame = _frame(rows, patients)
    pooled = ev.pooled_metrics(frame, CLASSES, 0.9, 300, seed=11)
    y = frame["true"].map(CLASSES.index).to_numpy()
    pred = frame["predicted"].map(CLASSES.index).to_numpy()
    lo, hi = _direct_cluster_percentiles(y, pred, np.array(patients), 300, 0.9, 11)
    assert pooled["accuracy"]["method"] == "cluster bootstrap (patients)"
    assert (pooled["accuracy"]["low"], pooled["accuracy"]["high"]) == pytest.approx((lo, hi))


def test_two_clusters_enumerated_by_hand():
    # cluster A: 3 images all correct; cluster B: 1 image wrong. Resamples of 2 clusters: AA (acc 1), AB / BA
    # (3/4), BB (0) with probabilities 1/4, 1/2, 1/4. Percentiles of the draws must follow that distribution.
    y = np.array([0, 0, 0, 1])
    pred = np.array([0, 0, 0, 0])
    sampler = Resampler(4, ["A", "A", "A", "B"])
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(4000):
        idx = sampler.draw(rng)
        acc = float((y[idx] == pred[idx]).mean())
        seen[acc] = seen.get(acc, 0) + 1
    assert set(seen) == {1.0, 0.75, 0.0}
    assert seen[0.75] / 4000 == pytest.approx(0.5, abs=0.03) and seen[1.0] / 4000 == pytest.approx(0.25, abs=0.03)
    out = bootstrap_intervals(lambda idx: {"acc": float((y[idx] == pred[idx]).mean())}, 4, ["A", "A", "A", "B"],
                              4000, 0.9, np.random.default_rng(0))
    assert out["acc"]["low"] == 0.0 and out["acc"]["high"] == 1.0 and out["acc"]["undefined_resamples"] == 0
    # every possible resample of the 2 clusters (with its multiplicity) gives only these accuracies
    accs = {float((y[np.r_[tuple({"A": [0, 1, 2], "B": [3]}[c] for c in pair)]] == 0).mean())
            for pair in itertools.product("AB", repeat=2)}
    assert accs == set(seen)


def test_undefined_resamples_are_counted():
    values = np.array([1.0, 2.0, 3.0, 4.0])

    def stat(idx):
        return {"mean": float(values[idx].mean()), "only_if_row0": float(values[idx].mean()) if 0 in idx else math.nan}

    out = bootstrap_intervals(stat, 4, None, 500, 0.95, np.random.default_rng(1))
    assert out["mean"]["undefined_resamples"] == 0
    # P(row 0 missing from 4 draws) = (3/4)^4 ~ 0.316
    assert out["only_if_row0"]["undefined_resamples"] / 500 == pytest.approx(0.316, abs=0.06)


def test_across_folds_counts_the_folds_a_mean_covers():
    per_fold = [ev.score_predictions(fold_predictions(CLASSES, k), CLASSES) for k in range(5)]
    per_fold[0]["per_class"]["covid19"]["auc"] = math.nan
    folds = ev.across_folds(per_fold)
    assert folds["accuracy"]["n_folds"] == 5
    assert folds["per_class"]["covid19"]["auc"]["n_folds"] == 4


def test_pooled_metrics_cost_with_1000_resamples():
    frame = pd.concat([fold_predictions(CLASSES, k) for k in range(5)], ignore_index=True)
    frame = pd.concat([frame] * max(1, 2500 // len(frame) + 1), ignore_index=True).iloc[:2500]
    start = time.perf_counter()
    out = ev.pooled_metrics(frame.assign(split="test"), CLASSES, 0.95, 1000, seed=0)
    seconds = time.perf_counter() - start
    print(f"pooled_metrics, {out['n']} rows, 1000 resamples: {seconds:.1f} s")
    assert out["n"] == 2500 and seconds < 120
