"""Multi-layer Grad-CAM against pytorch-grad-cam as the oracle; hooks, batching, frozen models, overlays."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM as LibGradCAM
from pytorch_grad_cam import GradCAMPlusPlus, HiResCAM, LayerCAM, EigenCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxrlib.cam import GradCAM, LibraryCAM, make_cam, resolve_targets
from cxrlib.cam.overlay import blank_map, denormalise_gray, overlay
from cxrlib.errors import ConfigError
from cxrlib.transforms import eval_batch as eval_tensor
from cxrlib.models import build_model, cam_layers

torch.set_num_threads(1)

LAYERS = cam_layers("resnet18")  # relu (the in-place stem ReLU), layer1 .. layer4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 3, weights="none").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def library_maps(cls, model, module, x, targets):
    cam = cls(model=model, target_layers=[module])
    try:
        return cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        cam.activations_and_grads.release()


def all_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_each_layer_equals_library_gradcam(model, images):
    result = GradCAM(model, LAYERS)(images, targets="predicted")
    assert list(result.maps) == list(LAYERS)
    for label, name in LAYERS.items():
        ours = result.maps[label]
        theirs = library_maps(LibGradCAM, model, model.get_submodule(name), images, result.targets)
        assert ours.shape == theirs.shape == (3, 64, 64)
        assert np.abs(ours - theirs).max() <= 1e-5, label
        assert ours.std() > 0.01, f"{label}: degenerate map makes the comparison vacuous"


def test_in_place_stem_relu_is_hooked_correctly(model, images):
    assert model.relu.inplace
    ours = GradCAM(model, {"relu": "relu"})(images, targets=[0, 1, 2]).maps["relu"]
    theirs = library_maps(LibGradCAM, model, model.relu, images, [0, 1, 2])
    assert np.abs(ours - theirs).max() <= 1e-5


def test_batch_equals_per_image(model, images):
    batch = GradCAM(model, LAYERS)(images, targets=[2, 0, 1])
    for i, t in enumerate([2, 0, 1]):
        one = GradCAM(model, LAYERS)(images[i:i + 1], targets=[t])
        for label in LAYERS:
            np.testing.assert_allclose(batch.maps[label][i], one.maps[label][0], atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_many_targets_give_the_maps_of_separate_calls(model, images, method):
    """GradCAM shares one forward pass between the targets; other methods loop: the same maps either way."""
    specs = [0, 1, [2, 0, 1], "predicted"]
    with make_cam(method, model, LAYERS) as cam:
        together = cam.many(images, specs)
        apart = [cam(images, targets=t) for t in specs]
    assert len(together) == len(specs)
    for a, b in zip(together, apart):
        np.testing.assert_array_equal(a.targets, b.targets)
        for label in LAYERS:
            np.testing.assert_array_equal(a.maps[label], b.maps[label])
    assert not np.allclose(together[0].maps["layer4"], together[1].maps["layer4"])  # the targets do differ
    assert all_hooks(model) == 0


def test_target_choices(model, images):
    logits = model(images).detach()
    assert resolve_targets("predicted", logits).tolist() == logits.argmax(1).tolist()
    assert resolve_targets("true", logits, true=["covid19", "normal", "normal"],
                           classes=["normal", "viral_pneumonia", "covid19"]).tolist() == [2, 0, 0]
    assert resolve_targets(1, logits).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="one class per image"):
        resolve_targets([0, 1], logits)
    with pytest.raises(ValueError, match="outside"):
        resolve_targets(5, logits)
    with pytest.raises(ValueError, match="true classes"):
        resolve_targets("true", logits)
    # Different targets give different maps: the target really drives the backward pass.
    cam = GradCAM(model, {"layer3": "layer3"})
    assert not np.allclose(cam(images, targets=0).maps["layer3"], cam(images, targets=1).maps["layer3"])


@pytest.mark.parametrize("method,cls", [
    ("gradcam++", GradCAMPlusPlus), ("hirescam", HiResCAM), ("layercam", LayerCAM), ("eigencam", EigenCAM),
])
def test_library_methods_behind_same_signature(model, images, method, cls):
    layers = {"layer3": "layer3", "layer4": "layer4"}
    with make_cam(method, model, layers) as cam:
        result = cam(images, targets="true", true=[0, 1, 2])
    assert result.method == method and list(result.maps) == list(layers)
    assert result.targets.tolist() == [0, 1, 2]
    for label, name in layers.items():
        theirs = library_maps(cls, model, model.get_submodule(name), images, [0, 1, 2])
        np.testing.assert_allclose(result.maps[label], theirs, atol=1e-6)
        assert result.maps[label].min() >= 0 and result.maps[label].max() <= 1 + 1e-6
    assert all_hooks(model) == 0


def test_scorecam_adapter_runs(model):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    result = make_cam("scorecam", model, {"layer4": "layer4"}, batch_size=64)(x, targets=[1])
    theirs = library_maps(ScoreCAM, model, model.layer4, x, [1])
    np.testing.assert_allclose(result.maps["layer4"], theirs, atol=1e-6)


def test_adapter_gradcam_equals_ours(model, images):
    ours = make_cam("gradcam", model, LAYERS)(images)
    lib = LibraryCAM(model, LAYERS, "gradcam")(images)
    for label in LAYERS:
        assert np.abs(ours.maps[label] - lib.maps[label]).max() <= 1e-5
    with pytest.raises(ConfigError, match="cam.method"):
        LibraryCAM(model, LAYERS, "nonsense")


def test_frozen_model_under_no_grad_still_gives_maps(images):
    torch.manual_seed(0)
    frozen = build_model("resnet18", 3, weights="none", freeze="backbone").eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        result = GradCAM(frozen, LAYERS)(images, targets=[0, 1, 2])
        lib = LibraryCAM(frozen, {"layer4": "layer4"}, "gradcam++")(images, targets=[0, 1, 2])
    torch.manual_seed(0)
    trainable = build_model("resnet18", 3, weights="none").eval()
    reference = GradCAM(trainable, LAYERS)(images, targets=[0, 1, 2])
    for label in LAYERS:
        np.testing.assert_allclose(result.maps[label], reference.maps[label], atol=1e-6)
    assert lib.maps["layer4"].std() > 0.01
    assert all(p.grad is None for p in trainable.parameters()), "our Grad-CAM must not write .grad"


def test_hooks_removed_on_exit_and_after_an_exception(model, images):
    cam = GradCAM(model, LAYERS)
    with cam:
        assert all_hooks(model) == len(LAYERS)
        cam(images[:1])
    assert all_hooks(model) == 0 and not cam._handles and not cam._outputs
    with pytest.raises(KeyError, match="boom"):
        with GradCAM(model, LAYERS) as cam:
            cam(images[:1])
            raise KeyError("boom")
    assert all_hooks(model) == 0
    with pytest.raises(IndexError):  # pytorch-grad-cam's own __exit__ would swallow this one
        with GradCAM(model, LAYERS):
            raise IndexError("not swallowed")
    assert all_hooks(model) == 0
    cam(images[:1])  # outside a with-block: hooks opened and closed around the call
    assert all_hooks(model) == 0


def test_no_growth_over_100_calls():
    torch.manual_seed(0)
    small = build_model("resnet18", 2, weights="none").eval()
    x = torch.randn(1, 3, 32, 32)

    def tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, torch.nn.Parameter))

    with GradCAM(small, cam_layers("resnet18")) as cam:
        for _ in range(5):
            cam(x)
        objects, live = len(gc.get_objects()), tensors()
        for _ in range(100):
            cam(x)
        assert all_hooks(small) == 5 and not cam._outputs
        assert tensors() == live
        assert len(gc.get_objects()) - objects < 50
    assert all_hooks(small) == 0


def test_bad_layers_and_modes(model, images):
    with pytest.raises(ConfigError, match="no module 'layer9'"):
        GradCAM(model, {"deep": "layer9"})
    with pytest.raises(ValueError, match="ran 2 times"):  # a BasicBlock applies its ReLU twice
        GradCAM(model, ["layer1.0.relu"])(images)
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            GradCAM(model, LAYERS)(images)
    finally:
        model.eval()
    assert all_hooks(model) == 0


def test_denormalise_gray_recovers_the_centre_crop():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (2, 40, 40), dtype=np.uint8)
    x = eval_tensor(gray, 32)
    np.testing.assert_array_equal(denormalise_gray(x), gray[:, 4:36, 4:36])


def test_overlay_blank_maps_show_the_plain_image():
    gray = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    plain = np.repeat(gray[..., None], 3, axis=2)
    for cam in (np.full((16, 16), np.nan), np.ones((16, 16)), np.zeros((16, 16))):
        assert blank_map(cam)
        np.testing.assert_array_equal(overlay(gray, cam), plain)
    cam = np.zeros((16, 16), np.float32)
    cam[4:8, 4:8] = 1.0
    out = overlay(gray, cam, colormap="jet", alpha=0.5)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[5, 5, 0] > out[5, 5, 2]  # the hot spot is red in jet ...
    assert out[12, 12, 2] > out[12, 12, 0]  # ... the cold background blue
    np.testing.assert_array_equal(overlay(gray, cam, alpha=0.0), plain)
    with pytest.raises(ValueError, match="same 2-D shape"):
        overlay(gray, cam[:8])


def test_every_configured_method_is_available():
    import typing

    from cxrlib.cam import METHODS
    from cxrlib.cam.library import library_class
    from cxrlib.config import CamConfig

    assert set(typing.get_args(typing.get_type_hints(CamConfig)["method"])) == set(METHODS)
    assert all(callable(library_class(m)) for m in METHODS)
