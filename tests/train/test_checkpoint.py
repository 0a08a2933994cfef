"""The checkpoint cadence (train.checkpoint_every_s): what is on disk after each epoch, and the repair of a kill
between the last checkpoint and model.pt when the best epoch is older than the checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cxrlib.train.checkpoint as checkpoint
from cxrlib.layout import FoldLayout
from cxrlib.models import load_checkpoint
from cxrlib.train.checkpoint import Checkpointer, Progress

META = {"arch": "resnet18", "classes": ["a", "b", "c"], "resize": 40, "image_size": 32, "params": {"p": 1}}


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    from cxrlib.models import build_model

    return build_model("resnet18", 3, "none")


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "lr": 0.1,
            "seconds": 1.0, "images_per_s": 1.0, "image_size": 32}


def _fit(fold: FoldLayout, every_s: float, best_at: tuple[int, ...], epochs: int = 3, kill_model_write=None,
         snapshots=None):
    """Fake epochs: the weights change every epoch (``snapshots[epoch]``), the best is the last of ``best_at``
    reached."""
    model = _model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = Checkpointer(fold, META, every_s=every_s)
    progress, best_state, written = Progress([]), None, []
    snapshots = {} if snapshots is None else snapshots
    for epoch in range(1, epochs + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * epoch)
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        progress.history.append(_row(epoch))
        if epoch in best_at:
            progress.best_epoch, best_state = epoch, snapshots[epoch]
        if kill_model_write == epoch:
            real = checkpoint.save_checkpoint

            def killed(path, weights, meta):
                raise KeyboardInterrupt("killed after checkpoint_last, before model.pt")

            checkpoint.save_checkpoint = killed
            try:
                saver.save(model, opt, None, torch.amp.GradScaler("cpu", enabled=False), progress, best_state,
                           final=epoch == epochs)
            finally:
                checkpoint.save_checkpoint = real
        written.append(saver.save(model, opt, None, torch.amp.GradScaler("cpu", enabled=False), progress,
                                  best_state, final=epoch == epochs))
    return snapshots, written


def _assert_weights(path, expected: dict) -> None:
    model, meta = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_every_epoch_but_the_last_writes_the_checkpoint_and_model_pt_only_when_the_best_changes(tmp_path):
    fold = FoldLayout(tmp_path / "fold0", 0)
    snapshots, written = _fit(fold, every_s=0, best_at=(1, 2))
    assert written == [True, True, False]  # the final epoch's state is not needed: model.pt holds the best
    last = torch.load(fold.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2 and last["best_epoch"] == 2 and last["best"] is None
    assert load_checkpoint(fold.model)[1]["epoch"] == 2
    _assert_weights(fold.model, snapshots[2])


def test_a_long_interval_writes_only_history_until_the_end_then_both_files(tmp_path):
    fold = FoldLayout(tmp_path / "fold0", 0)
    snapshots, written = _fit(fold, every_s=1e9, best_at=(1, 2))
    assert written == [False, False, True]
    last = torch.load(fold.last_checkpoint, weights_only=True)
    assert last["epoch"] == 3 and last["best_epoch"] == 2
    for k, v in last["best"].items():  # the checkpoint carries the best weights until model.pt holds them
        assert torch.equal(v, snapshots[2][k])
    _assert_weights(fold.model, snapshots[2])


def test_a_finished_fit_whose_model_pt_is_current_writes_nothing_more(tmp_path):
    fold = FoldLayout(tmp_path / "fold0", 0)
    _, written = _fit(fold, every_s=0, best_at=(1,), epochs=1)
    assert written == [True]
    fold2 = FoldLayout(tmp_path / "fold1", 1)
    _, written = _fit(fold2, every_s=1e9, best_at=(), epochs=2)  # never improved: nothing to keep
    assert written == [False, False] and not fold2.model.exists() and fold2.history.exists()


@pytest.mark.parametrize("best_at", [(1, 2), (1, 2, 3)])
def test_a_kill_before_model_pt_is_repaired_from_the_checkpoint_on_resume(tmp_path, best_at):
    fold = FoldLayout(tmp_path / "fold0", 0)
    snapshots = {}
    with pytest.raises(KeyboardInterrupt):
        _fit(fold, every_s=1e9, best_at=best_at, kill_model_write=3, snapshots=snapshots)
    assert fold.last_checkpoint.exists() and not fold.model.exists()
    best = best_at[-1]
    model = _model(1)
    progress = Checkpointer(fold, META).resume(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    assert progress.best_epoch == best and progress.next_epoch == 4
    assert load_checkpoint(fold.model)[1]["epoch"] == best
    _assert_weights(fold.model, snapshots[best])
    assert not torch.equal(snapshots[2]["fc.weight"], snapshots[3]["fc.weight"])  # the check can fail


def test_a_checkpoint_without_the_best_weights_is_refused_by_name(tmp_path):
    fold = FoldLayout(tmp_path / "fold0", 0)
    _fit(fold, every_s=0, best_at=(1,))
    fold.model.unlink()  # model.pt lost: the checkpoint of epoch 2 does not hold epoch 1's weights
    model = _model(1)
    with pytest.raises(checkpoint.ArtifactError, match=r"checkpoint_last.pt: best epoch 1 .*force=True"):
        Checkpointer(fold, META).resume(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
