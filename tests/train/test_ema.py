"""train.ema_decay: the moving average of the weights is what is validated, kept in model.pt and resumed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlib.config import ConfigError
from cxrlib.errors import ArtifactError
from cxrlib.models import load_checkpoint, unwrap
from cxrlib.train import train_fold
from cxrlib.train.epoch import EpochRunner
from support.train_helpers import make_run

torch.set_num_threads(1)
DECAY = 0.6


def _record_steps(monkeypatch) -> list[dict]:
    """The raw weights after every optimiser step of the fits that follow."""
    steps: list[dict] = []
    real = EpochRunner._step_once

    def spy(self, net, opt, x, y):
        out = real(self, net, opt, x, y)
        steps.append({k: v.detach().clone() for k, v in unwrap(self.model).state_dict().items()})
        return out

    monkeypatch.setattr(EpochRunner, "_step_once", spy)
    return steps


def _manual_ema(steps: list[dict]) -> dict:
    avg = {k: v.clone() for k, v in steps[0].items()}
    for weights in steps[1:]:
        for k, v in weights.items():
            if v.is_floating_point():
                avg[k] = DECAY * avg[k] + (1 - DECAY) * v
    return avg


def test_model_pt_holds_the_average_of_the_best_epoch(tmp_path, monkeypatch, smoke_cfg):
    steps = _record_steps(monkeypatch)
    ends: dict[int, int] = {}  # epoch -> steps taken by its end
    cfg = smoke_cfg("train.epochs=3", "train.patience=5", "train.checkpoint_every_s=0", f"train.ema_decay={DECAY}")
    result = train_fold(cfg, make_run(tmp_path), "multiclass", 0, progress=False,
                        callback=lambda row: ends.__setitem__(row["epoch"], len(steps)))
    model, meta = load_checkpoint(result.fold_dir / "model.pt")
    assert meta["epoch"] == result.best_epoch and len(steps) > 3
    expected = _manual_ema(steps[:ends[result.best_epoch]])
    raw = steps[ends[result.best_epoch] - 1]
    floats = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    for k in floats:
        torch.testing.assert_close(model.state_dict()[k], expected[k], atol=1e-6, rtol=1e-5, msg=k)
    assert any(not torch.allclose(model.state_dict()[k], raw[k]) for k in floats)  # not the raw weights

    # the recorded validation loss of the best epoch is the average's (predictions.csv: model.pt, no flip)
    preds = pd.read_csv(result.fold_dir / "predictions.csv")
    val = preds[preds["split"] == "val"]
    prob_true = val.apply(lambda r: r[f"prob_{r['true']}"], axis=1)
    best_val_loss = result.history.set_index("epoch").loc[result.best_epoch, "val_loss"]
    assert float(-np.log(prob_true).mean()) == pytest.approx(best_val_loss, rel=1e-4)


def test_an_interrupted_fit_resumes_with_its_average(tmp_path, smoke_cfg):
    cfg = smoke_cfg("train.epochs=3", "train.patience=5", "train.checkpoint_every_s=0", f"train.ema_decay={DECAY}")
    whole = train_fold(cfg, make_run(tmp_path / "a"), "multiclass", 1, progress=False)

    def crash(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt("simulated interruption")

    run = make_run(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train_fold(cfg, run, "multiclass", 1, progress=False, callback=crash)
    resumed = train_fold(cfg, run, "multiclass", 1, progress=False)
    assert resumed.info["resumed_from_epoch"] == 2
    cols = ["train_loss", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(resumed.history[cols], whole.history[cols], rtol=1e-5)
    a, b = (load_checkpoint(r.fold_dir / "model.pt")[0].state_dict() for r in (whole, resumed))
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, atol=1e-6, rtol=1e-5, msg=k)


def test_a_checkpoint_without_the_average_is_refused_by_name(tmp_path, smoke_cfg):
    run = make_run(tmp_path)
    base = ("train.epochs=3", "train.patience=5", "train.checkpoint_every_s=0")

    def crash(row):
        raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        train_fold(smoke_cfg(*base, f"train.ema_decay={DECAY}"), run, "multiclass", 0, progress=False,
                   callback=crash)
    last = run / "multiclass" / "fold0" / "checkpoint_last.pt"
    state = torch.load(last, weights_only=True)
    torch.save({**state, "ema": None}, last)
    with pytest.raises(ArtifactError, match="checkpoint_last.pt.*moving average"):
        train_fold(smoke_cfg(*base, f"train.ema_decay={DECAY}"), run, "multiclass", 0, progress=False)


@pytest.mark.parametrize("decay", ["1", "-0.1"])
def test_ema_decay_is_validated(smoke_cfg, decay):
    with pytest.raises(ConfigError, match="train.ema_decay"):
        smoke_cfg(f"train.ema_decay={decay}")
