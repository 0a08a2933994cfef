"""Speed and accuracy options of training: precision, torch.compile fallback, device-side augmentation,
label smoothing and test-time flips (CPU here; the CUDA paths share the code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlib.config import TrainConfig
from cxrlib.errors import ConfigError
from cxrlib.inference import predict_probs
from cxrlib.models import build_model, unwrap
from cxrlib.train import train_fold
from cxrlib.train.epoch import EpochRunner, downscaled, epoch_image_size
from cxrlib.train.speed import CompiledOrEager, augment_on_device, maybe_compile, resolve_precision
from support.train_helpers import make_run


def test_precision_and_device_policies():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu).dtype is None and resolve_precision("bf16", cpu).dtype == torch.bfloat16
    assert resolve_precision("fp16", cuda).scaled and not resolve_precision("bf16", cuda).scaled
    assert augment_on_device("auto", cuda) and not augment_on_device("auto", cpu) and augment_on_device("device", cpu)


def _history(result):
    return result.history[["train_loss", "val_loss"]].to_numpy()


def test_augmenting_where_the_images_live_trains_exactly_like_the_dataloader(tmp_path, smoke_cfg):
    """Same seeds, same batches, same augmentation: the device-resident path is the DataLoader path's twin."""
    a = train_fold(smoke_cfg("train.epochs=2", "train.augment_on=host"), make_run(tmp_path / "a"),
                   "multiclass", 0, progress=False)
    b = train_fold(smoke_cfg("train.epochs=2", "train.augment_on=device"), make_run(tmp_path / "b"),
                   "multiclass", 0, progress=False)
    np.testing.assert_allclose(_history(a), _history(b), rtol=1e-5)


def test_label_smoothing_changes_the_loss_and_is_validated(tmp_path, smoke_cfg):
    plain = train_fold(smoke_cfg("train.epochs=1"), make_run(tmp_path / "a"), "multiclass", 0, progress=False)
    smooth = train_fold(smoke_cfg("train.epochs=1", "train.label_smoothing=0.2"), make_run(tmp_path / "b"),
                        "multiclass", 0, progress=False)
    assert smooth.history["train_loss"].iloc[0] != pytest.approx(plain.history["train_loss"].iloc[0])
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        smoke_cfg("train.label_smoothing=1.5")


def test_a_compile_that_fails_falls_back_to_eager(tmp_path, smoke_cfg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda model: broken)
    lines = []
    net = maybe_compile(build_model("resnet18", 3), smoke_cfg("train.compile=true").train, lines.append)
    assert isinstance(net, CompiledOrEager) and unwrap(net) is net.eager
    out = net(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 3) and net.failed and "training eagerly" in lines[0]
    result = train_fold(smoke_cfg("train.epochs=1", "train.compile=true"), make_run(tmp_path), "multiclass", 0,
                        progress=False)
    assert len(result.history) == 1


def test_tta_flip_averages_an_image_and_its_mirror():
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    images = np.random.default_rng(0).integers(0, 255, (4, 40, 40), dtype=np.uint8)
    plain = predict_probs(model, images, 32)
    mirrored = predict_probs(model, images[:, :, ::-1].copy(), 32)
    both = predict_probs(model, images, 32, tta_flip=True)
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(both.sum(axis=1), 1, atol=1e-5)


def test_predicting_in_channels_last_leaves_the_model_usable_for_grad_cam():
    """predict_probs converts the model to channels_last (CPU, >= 96 px) outside inference mode, so a Grad-CAM
    backward on the same model still works (the predict command does exactly this)."""
    from cxrlib.cam import make_cam
    from cxrlib.models import cam_layers
    from cxrlib.transforms import eval_batch

    model = build_model("resnet18", 3).eval()
    images = np.random.default_rng(1).integers(0, 255, (2, 112, 112), dtype=np.uint8)
    predict_probs(model, images, 96)
    with make_cam("gradcam", model, cam_layers("resnet18")) as cam:
        result = cam(eval_batch(images, 96), targets="predicted")
    assert result.maps["layer4"].shape == (2, 96, 96)


def test_progressive_resizing_ramps_the_training_crop_and_validates_at_full_size(tmp_path, smoke_cfg, monkeypatch):
    t = TrainConfig(image_size=112, epochs=10, progressive_from=64)
    sizes = [epoch_image_size(t, e) for e in range(1, 11)]
    assert sizes[0] == 64 and sizes[-1] == 112 and sizes == sorted(sizes) and all(s % 8 == 0 for s in sizes)
    assert [epoch_image_size(TrainConfig(image_size=112, epochs=3), e) for e in (1, 2, 3)] == [112] * 3
    x = torch.randn(2, 3, 40, 40)
    assert downscaled(x, 40) is x and downscaled(x, 24).shape == (2, 3, 24, 24)
    seen = []
    original = EpochRunner._step

    def spy(self, net, opt, x, y):
        seen.append(tuple(x.shape[-2:]))
        return original(self, net, opt, x, y)

    monkeypatch.setattr(EpochRunner, "_step", spy)
    cfg = smoke_cfg("train.epochs=3", "train.progressive_from=16")
    result = train_fold(cfg, make_run(tmp_path), "multiclass", 0, progress=False)
    full = cfg.train.image_size
    assert result.history["image_size"].tolist() == [16, epoch_image_size(cfg.train, 2), full]
    assert {s for s in seen[:len(seen) // 3]} == {(16, 16)} and seen[-1] == (full, full)
    with pytest.raises(ConfigError, match="train.progressive_from"):
        smoke_cfg(f"train.progressive_from={full + 8}")


@pytest.mark.parametrize("progressive_from, epochs_run", [(16, 5), (0, 2)])
def test_epochs_of_a_resizing_ramp_do_not_count_against_patience(tmp_path, monkeypatch, smoke_cfg,
                                                                  progressive_from, epochs_run):
    """Validation is at full size; a network still training on smaller crops scores worse there without
    stagnating. A validation loss that only rises stops a fixed-size fit after ``patience`` epochs, and a ramp's
    fit only once full-size epochs fail to improve."""
    losses = iter(range(1, 100))
    monkeypatch.setattr(EpochRunner, "validate", lambda self, model=None: (float(next(losses)), 1.0, 1))
    cfg = smoke_cfg("train.epochs=5", "train.patience=1", f"train.progressive_from={progressive_from}")
    result = train_fold(cfg, make_run(tmp_path), "multiclass", 0, progress=False)
    assert len(result.history) == epochs_run and result.best_epoch == 1
