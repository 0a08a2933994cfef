"""``derived_tasks``: binary's rounds are multiclass's fold models with "other" = P(normal) + P(viral pneumonia)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib import io
from cxrlib.controls.run import ControlRunner
from cxrlib.data.relabel import relabel_splits
from cxrlib.data.splits import read_splits, write_splits
from cxrlib.errors import ArtifactError, DataError
from cxrlib.layout import RunLayout
from cxrlib.models import GroupedLinear, load_checkpoint
from cxrlib.train import round_sentence, train_fold
from cxrlib.train.derive import grouped_head, is_derived
from support.train_helpers import make_run

torch.set_num_threads(1)
DERIVED = "derived_tasks={binary: multiclass}"


def test_grouped_head_composes_the_source_groups():
    plain = {"classes": ["normal", "viral_pneumonia", "covid19"]}
    assert grouped_head(plain, ["other", "covid19"], [0, 0, 1]) == {
        "classes": ["other", "covid19"], "head_groups": [0, 0, 1],
        "fine_classes": ["normal", "viral_pneumonia", "covid19"]}
    # a source that was itself trained on finer labels: fine output -> source class -> derived class
    fine = {"classes": ["a", "b", "c"], "head_groups": [0, 0, 1, 2], "fine_classes": ["w", "x", "y", "z"]}
    assert grouped_head(fine, ["ab", "c"], [0, 0, 1]) == {
        "classes": ["ab", "c"], "head_groups": [0, 0, 0, 1], "fine_classes": ["w", "x", "y", "z"]}
    # a probe (classes are sources): kept as it is
    assert grouped_head({"classes": ["s1", "s2"]}, ["s1", "s2"], None) == {"classes": ["s1", "s2"]}
    with pytest.raises(ValueError, match="differ from the source"):
        grouped_head({"classes": ["s1", "s2"]}, ["s2", "s1"], None)
    with pytest.raises(ValueError, match="using every one"):
        grouped_head(plain, ["other", "covid19"], [0, 0, 0])
    with pytest.raises(ValueError, match="using every one"):
        grouped_head(plain, ["other", "covid19"], [0, 1])


def test_relabel_splits_keeps_rows_and_folds(tmp_path, smoke_cfg):
    run = make_run(tmp_path, per_class=5)
    cfg = smoke_cfg(DERIVED)
    source = read_splits(RunLayout(run).task("multiclass").splits)
    out = relabel_splits(source, cfg, "binary")
    pd.testing.assert_frame_equal(out.drop(columns="target"), source.drop(columns="target"))
    assert out["target"].tolist() == ["other" if t != "covid19" else "covid19" for t in source["target"]]
    with pytest.raises(DataError, match="targets \\['lung'\\] are not classes of multiclass"):
        relabel_splits(source.assign(target="lung"), cfg, "binary")
    with pytest.raises(DataError, match="^/x/splits.csv: targets"):
        relabel_splits(source.assign(target="lung"), cfg, "binary", where="/x/splits.csv")


def test_the_derived_splits_step_relabels_the_sources_and_copies_its_quality(tmp_path):
    from cxrlib.runner import steps
    from cxrlib.runner.execute import JobContext
    from cxrlib.runner.jobs import Job

    run = make_run(tmp_path, per_class=4)
    layout = RunLayout(run)
    io.write_text(layout.task("multiclass").quality, "path,reason\nx.png,unreadable\n")
    ctx = JobContext(run_dir=run, notebooks_dir=tmp_path, overrides=(DERIVED,))
    steps.derive_splits(Job(id="splits:binary", kind="splits", stage=0, outputs=(), task="binary"), ctx)
    out = read_splits(layout.task("binary").splits)
    assert len(out) == 12 and sorted(set(out["target"])) == ["covid19", "other"]
    assert layout.task("binary").quality.read_text() == "path,reason\nx.png,unreadable\n"
    layout.task("multiclass").quality.unlink()
    with pytest.raises(ArtifactError, match="multiclass/quality.csv: missing beside splits.csv"):
        steps.derive_splits(Job(id="splits:binary", kind="splits", stage=0, outputs=(), task="binary"), ctx)


def _derived_run(tmp_path, smoke_cfg, *overrides):
    run = make_run(tmp_path, per_class=8)
    cfg = smoke_cfg(DERIVED, "train.epochs=2", *overrides)
    layout = RunLayout(run)
    source = read_splits(layout.task("multiclass").splits)
    write_splits(layout.task("binary").splits, relabel_splits(source, cfg, "binary"))
    return run, cfg, layout


def test_a_derived_round_predicts_the_summed_probabilities_of_its_source(tmp_path, smoke_cfg):
    run, cfg, layout = _derived_run(tmp_path, smoke_cfg)
    trained = train_fold(cfg, run, "multiclass", 0, progress=False)
    derived = train_fold(cfg, run, "binary", 0, progress=False)
    assert not derived.skipped and derived.info["derived_from"]["task"] == "multiclass"
    assert derived.info["timings"]["fit_s"] == 0 and is_derived(layout.fold("binary", 0).train_info)
    assert not is_derived(layout.fold("multiclass", 0).train_info)
    assert derived.best_epoch == trained.best_epoch
    pd.testing.assert_frame_equal(derived.history, trained.history)  # the source's curves
    assert "Derived from `multiclass` round 0" in round_sentence(derived)
    src = pd.read_csv(layout.fold("multiclass", 0).predictions)
    out = pd.read_csv(layout.fold("binary", 0).predictions)
    assert out["path"].tolist() == src["path"].tolist() and out["split"].tolist() == src["split"].tolist()
    # the oracle: the multiclass softmax summed over normal + viral pneumonia (calibration none: T = 1)
    np.testing.assert_allclose(out["prob_other"], src["prob_normal"] + src["prob_viral_pneumonia"], atol=1e-5)
    np.testing.assert_allclose(out["prob_covid19"], src["prob_covid19"], atol=1e-5)
    assert set(out["true"]) <= {"other", "covid19"}
    model, meta = load_checkpoint(layout.fold("binary", 0).model)
    assert isinstance(model.fc, GroupedLinear) and meta["classes"] == ["other", "covid19"]
    assert meta["head_groups"] == [0, 0, 1] and meta["fine_classes"] == ["normal", "viral_pneumonia", "covid19"]
    source_model, _ = load_checkpoint(layout.fold("multiclass", 0).model)
    for (name, a), (_, b) in zip(model.state_dict().items(), source_model.state_dict().items()):
        assert torch.equal(a, b), name
    again = train_fold(cfg, run, "binary", 0, progress=False)
    assert again.skipped  # finished: not derived again


def test_a_derived_round_refits_the_temperature_on_its_own_classes(tmp_path, smoke_cfg):
    run, cfg, layout = _derived_run(tmp_path, smoke_cfg, "evaluate.calibration=temperature")
    train_fold(cfg, run, "multiclass", 0, progress=False)
    derived = train_fold(cfg, run, "binary", 0, progress=False)
    cal = derived.info["calibration"]
    assert cal["method"] == "temperature" and cal["val_nll_after"] <= cal["val_nll_before"] + 1e-9
    _, meta = load_checkpoint(layout.fold("binary", 0).model)
    assert meta["temperature"] == pytest.approx(cal["temperature"])
    source_t = io.read_json(layout.fold("multiclass", 0).train_info)["calibration"]["temperature"]
    assert cal["temperature"] != pytest.approx(source_t)  # fitted on binary targets, not copied


def test_deriving_from_an_unfinished_round_names_it(tmp_path, smoke_cfg):
    run, cfg, layout = _derived_run(tmp_path, smoke_cfg)
    with pytest.raises(ArtifactError, match="multiclass/fold0: the round this one is derived from is not finished"):
        train_fold(cfg, run, "binary", 0, progress=False)
    assert not layout.fold("binary", 0).train_info.exists()


def test_a_derived_tasks_controls_reuse_the_source_control_models(tmp_path, smoke_cfg):
    source = lambda ci, i: "a" if i % 2 else "b"  # noqa: E731 - two sources in every class: probes in both tasks
    run = make_run(tmp_path, per_class=10, source=source)
    cfg = smoke_cfg(DERIVED, "train.epochs=1", "controls.folds=[0]")
    layout = RunLayout(run)
    source = read_splits(layout.task("multiclass").splits)
    write_splits(layout.task("binary").splits, relabel_splits(source, cfg, "binary"))
    train_fold(cfg, run, "multiclass", 0, progress=False)
    train_fold(cfg, run, "binary", 0, progress=False)
    mc = ControlRunner(cfg, run, "multiclass").run()
    assert mc["border_only"]["skipped"] is None
    bi = ControlRunner(cfg, run, "binary").run()
    border = layout.task("binary").control_fold("border_only", 0)
    assert is_derived(border.train_info) and bi["border_only"]["skipped"] is None
    src = pd.read_csv(layout.task("multiclass").control_fold("border_only", 0).predictions)
    out = pd.read_csv(border.predictions)
    np.testing.assert_allclose(out["prob_covid19"], src["prob_covid19"], atol=1e-5)
    # covid19 holds the same labels in both tasks: its source probe is the same model; "other" has none to reuse
    assert is_derived(layout.task("binary").control_fold("source_probe_covid19", 0).train_info)
    other = layout.task("binary").control_fold("source_probe_other", 0)
    assert other.train_info.exists() and not is_derived(other.train_info)
    assert set(bi["source_probe"]["by_class"]) == {"covid19", "other"}
