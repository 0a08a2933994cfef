"""``train.fine_labels``: a task class trained as its canonical labels, predicted as the sum of their probabilities."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib import io
from cxrlib.data.splits import read_splits, write_splits
from cxrlib.errors import CxrError
from cxrlib.controls.run import masked_data, probe_data
from cxrlib.models import GroupedLinear, load_checkpoint
from cxrlib.train import train_fold
from cxrlib.train.epoch import EpochRunner
from cxrlib.train.fold_data import fine_labels, load_fold_data
from support.train_helpers import make_run

torch.set_num_threads(1)
TASK = {"other": ["normal", "viral_pneumonia"], "covid19": ["covid19"]}


def test_fine_labels_are_the_task_classes_labels_present_in_task_order():
    frame = pd.DataFrame({"label": ["covid19", "viral_pneumonia", "normal", "covid19"]})
    assert fine_labels(frame, TASK) == ["normal", "viral_pneumonia", "covid19"]
    assert fine_labels(frame[frame["label"] != "normal"], TASK) is None  # one label per class: nothing to split
    assert fine_labels(frame, {"normal": ["normal"], "viral": ["viral_pneumonia"], "covid19": ["covid19"]}) is None


def test_a_binary_fold_loads_its_labels_and_groups(tmp_path, smoke_cfg):
    run = make_run(tmp_path, per_class=5, task="binary")
    data = load_fold_data(smoke_cfg("train.fine_labels=true"), run, "binary", 0)
    assert data.classes == ["other", "covid19"] and data.fine_classes == ["normal", "viral_pneumonia", "covid19"]
    assert data.head_groups == [0, 0, 1]
    labels = data.frame["label"].to_numpy()
    np.testing.assert_array_equal(np.asarray(data.fine_classes)[data.fine_targets], labels)
    np.testing.assert_array_equal(np.asarray(data.classes)[data.targets],
                                  np.where(labels == "covid19", "covid19", "other"))
    plain = load_fold_data(smoke_cfg(), run, "binary", 0)
    assert plain.fine_targets is None and plain.head_groups is None
    np.testing.assert_array_equal(plain.training_targets, plain.targets)

    masked = masked_data(data, "border_only", smoke_cfg("train.fine_labels=true"))
    np.testing.assert_array_equal(masked.fine_targets, data.fine_targets)
    probe = probe_data(dataclasses.replace(data, frame=data.frame.assign(
        source=np.where(np.arange(len(data.frame)) % 2, "a", "b"))), "other")
    assert probe.classes == ["a", "b"] and probe.fine_targets is None and probe.head_groups is None


def test_the_loss_takes_the_labels_while_the_sampler_balances_the_classes(tmp_path, smoke_cfg, monkeypatch):
    run = make_run(tmp_path, per_class=8, task="binary")
    cfg = smoke_cfg("train.fine_labels=true", "train.epochs=2", "train.sampler=balanced")
    seen = []
    step = EpochRunner._step_once

    def spy(self, net, opt, x, y):
        out = step(self, net, opt, x, y)
        seen.append((tuple(net(x).shape), y.clone()))
        return out

    monkeypatch.setattr(EpochRunner, "_step_once", spy)
    train_fold(cfg, run, "binary", 0, progress=False)
    ys = torch.cat([y for _, y in seen])
    assert {shape[1] for shape, _ in seen} == {3}  # fine logits in training mode
    counts = torch.bincount(ys, minlength=3).tolist()
    assert counts[0] > 0 and counts[1] > 0  # normal and viral pneumonia apart
    assert counts[0] + counts[1] == counts[2]  # the balanced sampler: "other" as often as covid19

    out = run / "binary" / "fold0"
    model, meta = load_checkpoint(out / "model.pt")
    assert isinstance(model.fc, GroupedLinear)
    assert meta["head_groups"] == [0, 0, 1] and meta["fine_classes"] == ["normal", "viral_pneumonia", "covid19"]
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.filter(like="prob_").columns) == ["prob_other", "prob_covid19"]
    np.testing.assert_allclose(preds[["prob_other", "prob_covid19"]].sum(axis=1), 1.0, atol=1e-5)
    assert set(preds["true"]) == {"other", "covid19"}
    info = io.read_json(out / "train.json")
    assert info["classes"] == ["other", "covid19"] and info["fine_classes"] == meta["fine_classes"]
    history = pd.read_csv(out / "history.csv")
    assert np.isfinite(history["val_loss"]).all()


def test_fine_labels_off_trains_the_classes(tmp_path, smoke_cfg):
    run = make_run(tmp_path, per_class=5, task="binary")
    train_fold(smoke_cfg("train.epochs=1"), run, "binary", 0, progress=False)
    model, meta = load_checkpoint(run / "binary" / "fold0" / "model.pt")
    assert not isinstance(model.fc, GroupedLinear) and "head_groups" not in meta
    assert "fine_classes" not in io.read_json(run / "binary" / "fold0" / "train.json")


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_fine_labels_must_be_a_boolean(smoke_cfg, value):
    from cxrlib.errors import ConfigError

    with pytest.raises(ConfigError, match="train.fine_labels"):
        smoke_cfg(f"train.fine_labels={value}")


def test_fine_labels_with_a_weight_average_predict_finite_probabilities(tmp_path, smoke_cfg):
    run = make_run(tmp_path, per_class=5, task="binary")
    train_fold(smoke_cfg("train.fine_labels=true", "train.ema_decay=0.5", "train.epochs=2"), run, "binary", 0,
               progress=False)
    out = run / "binary" / "fold0"
    assert np.isfinite(pd.read_csv(out / "history.csv")["val_loss"]).all()  # validated on the average
    probs = pd.read_csv(out / "predictions.csv")[["prob_other", "prob_covid19"]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_a_row_whose_label_is_outside_its_class_is_named_with_its_file(tmp_path, smoke_cfg):
    run = make_run(tmp_path, per_class=5, task="binary")
    path = run / "binary" / "splits.csv"
    frame = read_splits(path)
    frame.loc[3, "label"] = "covid19"  # a hand-edited row: target other, label covid19
    write_splits(path, frame)
    with pytest.raises(CxrError, match=r"splits.csv: row 5 has label 'covid19', which is not one of class 'other'"):
        load_fold_data(smoke_cfg("train.fine_labels=true"), run, "binary", 0)
    assert load_fold_data(smoke_cfg(), run, "binary", 0).fine_targets is None  # without fine labels it trains
