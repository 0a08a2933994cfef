"""Per-fold training on tiny synthetic data: artifacts, skip/force, resume, determinism, frozen fast path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib import io
from cxrlib.errors import CxrError
from cxrlib.models import load_checkpoint
from cxrlib.train import HISTORY_COLUMNS, epoch_indices, split_batches, train_fold
from support.train_helpers import CLASSES, REPO, SMOKE, make_run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("synth"))


def _history(result) -> pd.DataFrame:
    return pd.read_csv(result.fold_dir / "history.csv")


def test_fold_writes_every_artifact_and_is_not_recomputed(run_dir, tmp_path, smoke_cfg):
    cfg = smoke_cfg("train.epochs=3", "train.patience=3")
    result = train_fold(cfg, run_dir, "multiclass", 0, progress=False)
    out = run_dir / "multiclass" / "fold0"
    assert result.fold_dir == out and not result.skipped
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.pt", "predictions.csv", "train.json"]

    history = _history(result)
    assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1, 2, 3]
    assert np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    info = io.read_json(out / "train.json")
    assert info["best_epoch"] == best == result.best_epoch
    assert {"params", "seed", "timings", "versions", "device"} <= set(info)

    model, meta = load_checkpoint(out / "model.pt")
    assert meta["epoch"] == best and meta["classes"] == list(CLASSES) and meta["arch"] == "resnet18"
    assert (meta["resize"], meta["image_size"]) == (40, 32) and meta["params"]["train"]["epochs"] == 3

    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["path", "split", "true", "predicted", *[f"prob_{c}" for c in CLASSES],
                                   "source", "patient_id", "sha256"]
    splits = pd.read_csv(run_dir / "multiclass" / "splits.csv")
    assert sorted(preds["path"]) == sorted(splits.loc[splits["fold"].isin([0, 1]), "path"])
    assert set(preds.loc[preds["path"].isin(splits.loc[splits["fold"] == 0, "path"]), "split"]) == {"test"}
    np.testing.assert_allclose(preds.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    test = preds[preds["split"] == "test"]
    assert info["test_accuracy"] == pytest.approx((test["true"] == test["predicted"]).mean())

    stamp = (out / "model.pt").stat().st_mtime_ns
    again = train_fold(cfg, run_dir, "multiclass", 0, progress=False)
    assert again.skipped and (out / "model.pt").stat().st_mtime_ns == stamp
    assert again.history.equals(history)
    forced = train_fold(smoke_cfg("train.epochs=1"), run_dir, "multiclass", 0, force=True,
                        progress=False)
    assert not forced.skipped and _history(forced)["epoch"].tolist() == [1]


def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(tmp_path, smoke_cfg):
    run = make_run(tmp_path / "a")
    cfg = smoke_cfg("train.epochs=3", "train.patience=5", "train.checkpoint_every_s=0")
    whole = _history(train_fold(cfg, run, "multiclass", 1, progress=False))

    run_b = make_run(tmp_path / "b")

    def crash(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        train_fold(cfg, run_b, "multiclass", 1, progress=False, callback=crash)
    out = run_b / "multiclass" / "fold1"
    assert (out / "checkpoint_last.pt").exists() and not (out / "train.json").exists()
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [1, 2]

    with pytest.raises(CxrError, match="other params.*force=True"):
        train_fold(smoke_cfg("train.epochs=3", "train.lr=0.5", "train.checkpoint_every_s=0"), run_b, "multiclass", 1,
                   progress=False)
    seen = []
    resumed = train_fold(cfg, run_b, "multiclass", 1, progress=False, callback=lambda r: seen.append(r["epoch"]))
    assert seen == [3] and resumed.info["resumed_from_epoch"] == 2 and not (out / "checkpoint_last.pt").exists()
    pd.testing.assert_frame_equal(_history(resumed).drop(columns=["seconds", "images_per_s"]),
                                  whole.drop(columns=["seconds", "images_per_s"]), rtol=1e-5)

    # Same seed, fresh run: the same history; another seed: a different one (the check can fail).
    again = _history(train_fold(cfg, make_run(tmp_path / "c"), "multiclass", 1, progress=False))
    pd.testing.assert_frame_equal(again[["train_loss", "val_loss"]], whole[["train_loss", "val_loss"]], rtol=1e-6)
    other = _history(train_fold(smoke_cfg("train.epochs=3", "train.seed=7"), make_run(tmp_path / "d"),
                                "multiclass", 1, progress=False))
    assert not np.allclose(other["train_loss"], whole["train_loss"], rtol=1e-6)


def test_frozen_backbone_fast_path_matches_the_slow_path(tmp_path, smoke_cfg):
    common = ["model.freeze=backbone", "train.random_crop=false", "train.hflip=true", "train.optimizer=sgd",
              "train.lr=0.05", "train.epochs=3", "train.patience=5", "train.batch_size=4"]
    runs = {}
    for cached in (True, False):
        run = make_run(tmp_path / str(cached))
        result = train_fold(smoke_cfg(*common, f"train.feature_cache={str(cached).lower()}"), run,
                            "multiclass", 2, progress=False)
        assert result.info["feature_cache"] is cached
        runs[cached] = (_history(result), load_checkpoint(result.fold_dir / "model.pt")[0])
    (fast_h, fast_m), (slow_h, slow_m) = runs[True], runs[False]
    for col in ("train_loss", "train_acc", "val_loss", "val_acc"):
        np.testing.assert_allclose(fast_h[col], slow_h[col], atol=1e-5, err_msg=col)
    assert fast_h["train_loss"].iloc[0] != fast_h["train_loss"].iloc[-1]  # the head did learn
    for name, value in fast_m.fc.state_dict().items():
        torch.testing.assert_close(value, slow_m.fc.state_dict()[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_m.layer1[0].conv1.weight, slow_m.layer1[0].conv1.weight, atol=0, rtol=0)


def test_weighted_sampler_balances_classes_and_ranks_share_one_order():
    targets = np.array([0] * 900 + [1] * 100)
    order = epoch_indices(targets, seed=3, epoch=1, sampler="weighted")
    assert len(order) == 1000 and abs((targets[order.numpy()] == 1).mean() - 0.5) < 0.06
    assert torch.equal(order, epoch_indices(targets, seed=3, epoch=1))
    assert not torch.equal(order, epoch_indices(targets, seed=3, epoch=2))
    perm = epoch_indices(targets, seed=3, epoch=1, sampler="none")
    assert sorted(perm.tolist()) == list(range(1000))
    slices = [epoch_indices(targets[:999], seed=3, epoch=1, rank=r, world=2) for r in range(2)]
    assert len(slices[0]) == len(slices[1]) == 500
    whole = epoch_indices(targets[:999], seed=3, epoch=1)
    assert torch.equal(torch.stack(slices, 1).reshape(-1)[:999], whole)


def test_balanced_sampler_draws_classes_equally_without_replacement_within_a_class():
    targets = np.array([0] * 10 + [1] * 4 + [2] * 1)
    order = epoch_indices(targets, seed=3, epoch=1, sampler="balanced").numpy()
    assert len(order) == 15 and np.bincount(targets[order]).tolist() == [5, 5, 5]
    large, small, single = (order[targets[order] == c] for c in range(3))
    assert len(set(large.tolist())) == 5  # a subset of the large class, no image twice
    assert set(small.tolist()) == {10, 11, 12, 13}  # every image of the small class, one of them twice
    assert single.tolist() == [14] * 5
    seen = set().union(*(epoch_indices(targets, seed=3, epoch=e, sampler="balanced").tolist() for e in range(1, 6)))
    assert seen == set(range(15))  # the large class's images vary between epochs
    assert not np.array_equal(order, epoch_indices(targets, seed=3, epoch=2, sampler="balanced").numpy())
    odd = np.array([0, 1, 2] * 40 + [0])  # 121 draws: the one left over goes to a class drawn at random
    counts = np.bincount(odd[epoch_indices(odd, seed=3, epoch=1, sampler="balanced").numpy()]).tolist()
    assert sorted(counts) == [40, 40, 41]
    balanced = epoch_indices(np.array([0, 1] * 50), seed=3, epoch=1, sampler="balanced")
    assert sorted(balanced.tolist()) == list(range(100))  # balanced classes: a permutation of every image


def test_a_trailing_batch_of_one_joins_the_previous():
    sizes = [len(b) for b in split_batches(torch.arange(9), 4)]
    assert sizes == [4, 5]
    assert [len(b) for b in split_batches(torch.arange(10), 4)] == [4, 4, 2]


def test_train_notebook_runs_under_nbval(tmp_path):
    from support.nbval_helper import run_notebook_under_nbval

    run_dir = make_run(tmp_path, per_class=6)
    run_notebook_under_nbval(REPO / "notebooks" / "02_train_fold.ipynb", tmp_path / "nb", {
        "run_dir": str(run_dir), "params_file": str(SMOKE), "task": "multiclass", "fold": 1,
        "overrides": [f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu"],
    })
    fold = run_dir / "multiclass" / "fold1"
    assert all((fold / name).is_file() for name in ("model.pt", "history.csv", "predictions.csv", "train.json"))


def test_a_kill_between_the_last_checkpoint_and_model_pt_is_repaired_on_resume(tmp_path, monkeypatch, smoke_cfg):
    """model.pt must always hold the best epoch's weights, whichever write a kill interrupts."""
    import cxrlib.train.checkpoint as train

    run = make_run(tmp_path)
    cfg = smoke_cfg("train.epochs=3", "train.patience=5", "train.checkpoint_every_s=0")
    out = run / "multiclass" / "fold0"
    real_save = train.save_checkpoint

    def killed_at_epoch_2(path, model, meta):
        if meta["epoch"] == 2:
            raise KeyboardInterrupt("killed after checkpoint_last, before model.pt")
        return real_save(path, model, meta)

    monkeypatch.setattr(train, "save_checkpoint", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_fold(cfg, run, "multiclass", 0, progress=False)
    monkeypatch.undo()
    last = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    if last["best_epoch"] != 2:
        pytest.skip("epoch 2 did not improve on this platform; the kill window did not arise")
    assert load_checkpoint(out / "model.pt")[1]["epoch"] == 1  # the kill left an older model.pt
    result = train_fold(cfg, run, "multiclass", 0, progress=False)
    model, meta = load_checkpoint(out / "model.pt")
    assert meta["epoch"] == result.best_epoch
    if result.best_epoch == 2:
        for k, v in model.state_dict().items():
            assert torch.equal(v, last["model"][k])


def test_a_calibrated_fold_keeps_its_temperature_in_model_pt_and_predicts_with_it(tmp_path, smoke_cfg):
    from cxrlib.inference import predict_probs
    from cxrlib.train.fold_data import load_fold_data

    run = make_run(tmp_path, per_class=6)
    cfg = smoke_cfg("train.epochs=2", "evaluate.calibration=temperature", "evaluate.tta_flip=true")
    train_fold(cfg, run, "multiclass", 0, progress=False)
    out = run / "multiclass" / "fold0"
    info = io.read_json(out / "train.json")["calibration"]
    model, meta = load_checkpoint(out / "model.pt")
    assert info["method"] == "temperature" and meta["temperature"] == info["temperature"] != 1.0
    assert info["val_nll_after"] <= info["val_nll_before"] and info["fitted_on"] == 3  # the val fold

    data = load_fold_data(cfg, run, "multiclass", 0)
    preds = pd.read_csv(out / "predictions.csv")
    held = np.isin(data.split, ["val", "test"])
    probs = predict_probs(model, data.images[held], 32, tta_flip=True, temperature=meta["temperature"])
    np.testing.assert_allclose(preds.filter(like="prob_").to_numpy(), probs, atol=1e-5)
    plain = predict_probs(model, data.images[held], 32, tta_flip=True)
    assert not np.allclose(plain, probs, atol=1e-3)

    uncalibrated = make_run(tmp_path / "plain", per_class=6)
    train_fold(smoke_cfg("train.epochs=2"), uncalibrated, "multiclass", 0, progress=False)
    fold = uncalibrated / "multiclass" / "fold0"
    assert "temperature" not in load_checkpoint(fold / "model.pt")[1]
    assert io.read_json(fold / "train.json")["calibration"] == {"method": "none", "temperature": 1.0}


def test_a_kill_after_the_temperature_is_written_resumes_to_the_same_calibration(tmp_path, monkeypatch, smoke_cfg):
    import cxrlib.train.fold as fold_module

    run = make_run(tmp_path, per_class=6)
    cfg = smoke_cfg("train.epochs=2", "evaluate.calibration=temperature")
    out = run / "multiclass" / "fold0"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after model.pt got its temperature, before predictions.csv")

    monkeypatch.setattr(fold_module, "predictions_frame", killed)
    with pytest.raises(KeyboardInterrupt):
        train_fold(cfg, run, "multiclass", 0, progress=False)
    monkeypatch.undo()
    first = load_checkpoint(out / "model.pt")[1]["temperature"]
    assert not (out / "train.json").exists() and not (out / "predictions.csv").exists()
    result = train_fold(cfg, run, "multiclass", 0, progress=False)
    assert not result.skipped
    assert load_checkpoint(out / "model.pt")[1]["temperature"] == pytest.approx(first, rel=1e-4)
    assert io.read_json(out / "train.json")["calibration"]["temperature"] == pytest.approx(first, rel=1e-4)


def test_balanced_by_source_shares_a_class_among_its_sources_without_replacement():
    targets = np.array([0] * 12 + [1] * 6)
    sources = np.array(["a"] * 9 + ["b"] * 3 + ["c"] * 6)  # class 0: a large and a small source
    order = epoch_indices(targets, seed=3, epoch=1, sampler="balanced_by_source", sources=sources).numpy()
    assert len(order) == 18 and np.bincount(targets[order]).tolist() == [9, 9]
    a, b = order[sources[order] == "a"], order[sources[order] == "b"]
    assert len(a) in (4, 5) and len(a) + len(b) == 9 and len(set(a.tolist())) == len(a)  # a subset of a
    assert set(b.tolist()) == {9, 10, 11}  # every image of the small source, cycled
    single = np.bincount(order[targets[order] == 1], minlength=18)[12:]  # one source: the balanced sampler's draws
    assert single.min() == 1 and single.max() == 2
    with pytest.raises(ValueError, match="sources"):
        epoch_indices(targets, seed=3, epoch=1, sampler="balanced_by_source")
    few = epoch_indices(np.array([0, 0, 0, 1]), seed=3, epoch=1, sampler="balanced_by_source",
                        sources=np.array(["a", "b", "c", "a"]))  # 2 draws for class 0 among 3 sources
    assert len(few) == 4 and np.bincount(np.array([0, 0, 0, 1])[few.numpy()]).tolist() == [2, 2]


def _balanced_order_before_strata(targets, g):  # the balanced sampler as the published profile results drew it
    classes = np.unique(targets)
    quota = np.full(len(classes), len(targets) // len(classes))
    quota[torch.randperm(len(classes), generator=g)[:len(targets) % len(classes)].numpy()] += 1
    drawn = []
    for c, q in zip(classes, quota.tolist()):
        members = torch.as_tensor(np.flatnonzero(targets == c))
        cycles = -(-q // len(members))
        drawn.append(torch.cat([members[torch.randperm(len(members), generator=g)] for _ in range(cycles)])[:q])
    order = torch.cat(drawn)
    return order[torch.randperm(len(order), generator=g)]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_balanced_sampler_draws_what_it_drew_before_strata(seed):
    from cxrlib.train.sampling import balanced_order

    targets = np.random.default_rng(seed).integers(0, 3, 101)
    expected = _balanced_order_before_strata(targets, torch.Generator().manual_seed(seed))
    assert torch.equal(balanced_order(targets, torch.Generator().manual_seed(seed)), expected)
