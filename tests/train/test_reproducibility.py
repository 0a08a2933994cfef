"""Pinned ImageNet weights, deterministic GPU training and what the frozen-feature cache cannot replay."""

import pytest
import torch
import torchvision

from cxrlib import models
from cxrlib.config import TrainConfig, load_config
from cxrlib.errors import ConfigError
from cxrlib.models import build_model
from cxrlib.train import train_fold
from cxrlib.train.epoch import cache_ignored_augmentations
from cxrlib.train.seeding import set_deterministic
from support.train_helpers import make_run, smoke_config


@pytest.mark.parametrize("name,member", [("imagenet", "DEFAULT"), ("imagenet_v1", "IMAGENET1K_V1")])
def test_imagenet_weight_names_select_torchvision_releases(monkeypatch, name, member):
    reference = torchvision.models.resnet50()
    calls = []
    monkeypatch.setattr(models.hub, "load_state_dict_from_url", lambda url, **kw: calls.append(url) or reference.state_dict())
    build_model("resnet50", 3, weights=name)
    assert calls == [getattr(torchvision.models.ResNet50_Weights, member).url]
    # resnet50's DEFAULT is the 2021 V2 recipe: only imagenet_v1 gives the weights a 2020 study used
    assert models.imagenet_weights("resnet50", "imagenet_v1") == torchvision.models.ResNet50_Weights.IMAGENET1K_V1


def test_config_accepts_imagenet_v1_and_rejects_unknown_imagenet_names():
    assert load_config(None, ["model.weights=imagenet_v1"]).model.weights == "imagenet_v1"
    assert load_config(None, ["model.weights=imagenet_resnet50.pth"]).model.weights == "imagenet_resnet50.pth"
    with pytest.raises(ConfigError, match="model.weights.*imagenet_v2"):
        load_config(None, ["model.weights=imagenet_v2"])
    assert load_config(None, ["train.deterministic=true"]).train.deterministic is True


def test_deterministic_applies_on_gpu_only(monkeypatch):
    cpu = set_deterministic(True, torch.device("cpu"))
    assert cpu["requested"] and not cpu["applied"]
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        gpu = set_deterministic(True, torch.device("cuda"))  # sets flags only; no CUDA call is made
        assert gpu == {"requested": True, "applied": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
                       "deterministic_algorithms": True}
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_cache_ignored_augmentations_listed():
    assert cache_ignored_augmentations(TrainConfig(random_crop=False, rotation=0, brightness=0)) == []
    assert cache_ignored_augmentations(TrainConfig(random_crop=True, rotation=10, brightness=0.2,
                                                   progressive_from=64)) == [
        "random_crop", "rotation=10", "brightness=0.2", "progressive_from=64"]


def test_train_json_records_cache_ignored_and_deterministic(tmp_path):
    run = make_run(tmp_path / "run")
    cfg = smoke_config(tmp_path, "model.freeze=backbone", "train.random_crop=true", "train.rotation=5",
                       "train.epochs=1", "train.deterministic=true")
    result = train_fold(cfg, run, "multiclass", 0, progress=False)
    info = result.info
    assert info["feature_cache"] is True
    assert info["feature_cache_ignored"] == ["random_crop", "rotation=5"]
    assert info["deterministic"]["requested"] is True and info["deterministic"]["applied"] is False  # CPU
