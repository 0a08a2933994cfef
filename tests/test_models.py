"""Model registry, weights, freezing, checkpoints, transforms and inference (torchvision as the oracle)."""

from __future__ import annotations

import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cxrlib import models
from cxrlib.errors import ArtifactError, ConfigError
from cxrlib.inference import predict_probs
from cxrlib.transforms import eval_batch as eval_tensor
from cxrlib.models import (
    ARCHS, build_model, cam_layers, load_checkpoint, save_checkpoint, set_checkpoint_meta, set_train_mode,
)
from cxrlib.transforms import IMAGENET_MEAN, IMAGENET_STD, Augment, AugParams, check_batch_stats

torch.set_num_threads(1)


def _x(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_builds_with_a_task_head_and_named_cam_layers(arch):
    torch.manual_seed(0)
    model = build_model(arch, 3).eval()
    layers = cam_layers(arch)
    assert len(layers) == 5
    names = dict(model.named_modules())
    assert all(name in names for name in layers.values())
    order = list(names)
    assert [order.index(n) for n in layers.values()] == sorted(order.index(n) for n in layers.values())
    if arch.startswith("resnet"):
        assert list(layers) == ["relu", "layer1", "layer2", "layer3", "layer4"]
    if arch in ("resnet10", "resnet18", "densenet121", "efficientnet_b0"):
        with torch.no_grad():
            assert model(_x()).shape == (2, 3)


def test_resnet10_is_torchvisions_resnet_with_one_block_per_stage_and_has_no_imagenet_weights(tmp_path):
    r10, r18 = build_model("resnet10", 3), build_model("resnet18", 3)
    assert isinstance(r10, torchvision.models.ResNet)
    assert [len(getattr(r10, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    # the same stem, first block of each stage and head as resnet18: its state dict is resnet18's, minus blocks 1
    assert set(r10.state_dict()) == {k for k in r18.state_dict() if not k.startswith(tuple(
        f"layer{i}.1." for i in range(1, 5)))}
    with pytest.raises(ConfigError, match="no ImageNet weights for resnet10"):
        build_model("resnet10", 3, weights="imagenet")
    torch.save(r10.state_dict(), tmp_path / "r10.pt")  # a local file (an offline hospital's own pretraining)
    again = build_model("resnet10", 3, weights=str(tmp_path / "r10.pt"))
    torch.testing.assert_close(again.state_dict(), r10.state_dict())


def test_unknown_arch_and_freeze_are_config_errors():
    with pytest.raises(ConfigError, match="vgg16"):
        build_model("vgg16", 3)
    with pytest.raises(ConfigError, match="layer9.*layer4"):
        build_model("resnet18", 3, freeze="layer9")


def test_freeze_backbone_and_up_to_a_layer():
    model = build_model("resnet18", 3, freeze="backbone")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    set_train_mode(model)
    assert model.fc.training and not model.bn1.training and not model.layer4[0].bn1.training

    model = build_model("resnet18", 3, freeze="layer2")
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2"}
    set_train_mode(model)
    assert model.layer3.training and not model.layer2.training


def test_a_local_state_dict_loads_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(1)
    source = build_model("resnet18", 3).eval()
    path = tmp_path / "mine.pth"
    torch.save(source.state_dict(), path)
    loaded = build_model("resnet18", 3, weights=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), source(_x()))

    # a torchvision ImageNet-style state dict (1000-class head): backbone loaded, new random head
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    model = build_model("resnet18", 2, weights=str(tmp_path / "resnet18.pth"))
    torch.testing.assert_close(model.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert model.fc.out_features == 2

    # our own checkpoint works as weights too
    save_checkpoint(tmp_path / "model.pt", source, {"arch": "resnet18", "classes": ["a", "b", "c"], "resize": 40,
                                                   "image_size": 32, "epoch": 1, "params": {}})
    again = build_model("resnet18", 3, weights=str(tmp_path / "model.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(_x()), source(_x()))


def test_bad_weights_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=f"model.weights.*{missing}.*no such file"):
        build_model("resnet18", 3, weights=str(missing))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a tensor file")
    with pytest.raises(ConfigError, match="junk.pth.*not a readable"):
        build_model("resnet18", 3, weights=str(junk))
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ConfigError, match="r34.pth.*does not fit model.arch=resnet18"):
        build_model("resnet18", 3, weights=str(tmp_path / "r34.pth"))


def test_imagenet_download_failure_names_both_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(models.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as err:
        build_model("resnet50", 3, weights="imagenet")
    assert "model.weights=/path/to/resnet50.pth" in str(err.value)
    assert "model.weights=none" in str(err.value)


def test_imagenet_weights_load_into_the_backbone(monkeypatch):
    reference = torchvision.models.resnet18()
    calls = []

    def fake_download(url, **kwargs):
        calls.append(url)
        return reference.state_dict()

    monkeypatch.setattr(models.hub, "load_state_dict_from_url", fake_download)
    model = build_model("resnet18", 3, weights="imagenet")
    assert calls == [torchvision.models.ResNet18_Weights.DEFAULT.url]
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 3


def test_checkpoint_round_trip_and_missing_checkpoint(tmp_path):
    model = build_model("resnet18", 2).eval()
    meta = {"arch": "resnet18", "classes": ["other", "covid19"], "resize": 40, "image_size": 32, "epoch": 4,
            "params": {"train": {"lr": 0.1}}}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    loaded, got = load_checkpoint(tmp_path / "m.pt")
    assert got == meta and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), model(_x()))
    with pytest.raises(ArtifactError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")

    set_checkpoint_meta(tmp_path / "m.pt", temperature=0.7)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # replaced atomically, no temporary left
    again, got = load_checkpoint(tmp_path / "m.pt")
    assert got == {**meta, "temperature": 0.7}
    torch.testing.assert_close(again.state_dict(), loaded.state_dict())
    with pytest.raises(ValueError, match="classes"):
        set_checkpoint_meta(tmp_path / "m.pt", classes=["a", "b"])
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="other.pt: not a cxrlib checkpoint"):
        set_checkpoint_meta(tmp_path / "other.pt", temperature=0.7)


def _images(n=4, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def test_eval_tensor_matches_torchvision_per_image():
    images = _images()
    oracle = v2.Compose([v2.CenterCrop(32), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))])
    expected = torch.stack([oracle(torch.from_numpy(im)[None].repeat(3, 1, 1)) for im in images])
    torch.testing.assert_close(eval_tensor(images, 32), expected)


def test_training_augmentation_matches_torchvision_functional_ops():
    images = _images(3)
    aug = Augment(32, random_crop=True, hflip=True, rotation=10, brightness=0.3)
    params = aug.draw(3, 40, torch.Generator().manual_seed(5))
    got = aug.apply(images, params)
    for i, im in enumerate(images):
        x = F.crop(torch.from_numpy(im)[None], int(params.top[i]), int(params.left[i]), 32, 32)
        if params.flip[i]:
            x = F.horizontal_flip(x)
        x = F.rotate(x, float(params.angle[i]), interpolation=v2.InterpolationMode.BILINEAR)
        x = F.to_dtype(x, torch.float32, scale=True)
        x = F.adjust_contrast(F.adjust_brightness(x, float(params.brightness[i])), float(params.contrast[i]))
        x = F.normalize(x.repeat(3, 1, 1), list(IMAGENET_MEAN), list(IMAGENET_STD))
        torch.testing.assert_close(got[i], x, atol=1e-5, rtol=0)
    same = aug(images, torch.Generator().manual_seed(5))
    torch.testing.assert_close(same, got)
    assert not torch.equal(aug(images, torch.Generator().manual_seed(6)), got)


def test_no_crop_no_flip_is_the_eval_transform():
    images = _images()
    aug = Augment(32, random_crop=False, hflip=False)
    assert aug.draw(4, 40, torch.Generator()) == AugParams(None, None, None, None, None, None)
    torch.testing.assert_close(aug(images, torch.Generator()), eval_tensor(images, 32))


def test_batch_statistics_warn_on_gross_mismatch():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_batch_stats(eval_tensor(_images(), 32))
    with pytest.warns(RuntimeWarning, match="constant"):
        check_batch_stats(torch.full((2, 3, 8, 8), 200.0))
    with pytest.warns(RuntimeWarning, match="std=0"):
        check_batch_stats(eval_tensor(np.zeros((2, 40, 40), np.uint8), 32))


def test_predict_probs_rows_are_probabilities_and_batch_size_invariant():
    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    images = _images(5)
    a = predict_probs(model, images, 32, batch_size=2)
    b = predict_probs(model, images, 32, batch_size=5)
    assert a.shape == (5, 3) and model.training  # the caller's mode is restored
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_grouped_head_predicts_each_class_as_the_sum_of_its_labels_probabilities(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet10", 2, head_groups=[0, 0, 1]).eval()
    assert isinstance(model.fc, models.GroupedLinear) and model.fc.out_features == 3
    with torch.no_grad():
        coarse = model(_x(4))
        model.fc.train()  # the head alone: the backbone's BatchNorm stays in eval mode
        fine = model(_x(4))
        model.eval()
    assert coarse.shape == (4, 2) and fine.shape == (4, 3)
    p = torch.softmax(fine, 1)  # the oracle: summing the labels' softmax probabilities
    torch.testing.assert_close(torch.softmax(coarse, 1), torch.stack([p[:, 0] + p[:, 1], p[:, 2]], 1))

    meta = {"arch": "resnet10", "classes": ["other", "covid19"], "resize": 40, "image_size": 32, "epoch": 1,
            "params": {}, "head_groups": [0, 0, 1], "fine_classes": ["normal", "viral_pneumonia", "covid19"]}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, got = load_checkpoint(tmp_path / "m.pt")
    assert got == meta and isinstance(loaded.fc, models.GroupedLinear)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.testing.assert_close(loaded(_x(4)), coarse)
        torch.testing.assert_close(torch.jit.script(loaded)(_x(4)), coarse)
    with pytest.raises(ValueError, match="head_groups"):
        set_checkpoint_meta(tmp_path / "m.pt", head_groups=[0, 1, 1])


@pytest.mark.parametrize("groups", [[0, 0, 0], [0, 2, 2], [], [1, 1, 2]])
def test_grouped_head_groups_must_name_every_class(groups):
    with pytest.raises(ValueError, match="groups"):
        models.GroupedLinear(8, groups)


def test_head_groups_must_match_the_class_count():
    with pytest.raises(ValueError, match="do not name 3 classes"):
        build_model("resnet10", 3, head_groups=[0, 0, 1])
