"""python -m cxrlib export: the portable ensemble gives predict's probabilities; the model card is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cxrlib.__main__ import main
from cxrlib.export import export_ensemble, head_card
from cxrlib.io import read_json
from cxrlib.layout import RunLayout
from cxrlib.predict.ensemble import load_ensemble
from cxrlib.predict.inputs import load_image
from support.trained_run import TASK, TRAINED_FOLDS


@pytest.fixture(scope="module")
def batch(trained_run):
    paths = sorted((trained_run.parent / "img").glob("*.png"))[:5]
    ens = load_ensemble(trained_run, TASK, device="cpu")
    images = np.stack([load_image(p, ens.resize).resized for p in paths])
    return images, ens.probs(images)


def test_torchscript_round_trip_uint8_and_float(trained_run, batch, capsys):
    assert main(["export", "--run", str(trained_run), "--task", TASK, "--format", "torchscript"]) == 0
    path = RunLayout(trained_run).task(TASK).exported_model("torchscript")
    model = torch.jit.load(str(path))
    images, expected = batch
    x = torch.from_numpy(images)[:, None]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(model(x.float() / 255).numpy(), expected, atol=1e-5)
    card = read_json(RunLayout(trained_run).task(TASK).model_card())
    assert card["classes"] == ["normal", "viral_pneumonia", "covid19"] and card["folds"] == list(TRAINED_FOLDS)
    assert card["preprocessing"]["resize"] == 40 and card["preprocessing"]["image_size"] == 32
    assert card["training_data"]["by_class"] == {"covid19": 3, "normal": 3, "viral_pneumonia": 3}
    assert set(card["training_data"]["confounds"]["single_source_classes"]) == {"normal", "viral_pneumonia", "covid19"}
    assert "not for clinical use" in card["intended_use"]
    ens = load_ensemble(trained_run, TASK, device="cpu")
    assert card["calibration"]["temperature"] == {str(k): ens.temperature(k) for k in TRAINED_FOLDS}
    assert all(t != 1.0 for t in card["calibration"]["temperature"].values())  # applied inside the model
    assert card["cross_validation"] is None  # this run was never evaluated


def test_onnx_round_trip(trained_run, batch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model_path, card_path = export_ensemble(trained_run, TASK, "onnx", out_dir=tmp_path)
    images, expected = batch
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": (images[:, None] / 255.0).astype(np.float32)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert json.loads(card_path.read_text())["format"] == "onnx"


def test_card_carries_the_evaluation(trained_run, tmp_path):
    import shutil

    from cxrlib import io

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    summary = {"pooled": {"accuracy": {"value": 0.9, "low": 0.8, "high": 0.95}}, "across_folds": {}, "ci_level": 0.95,
               "external": {"n": 4}}
    io.write_json(RunLayout(run).task(TASK).summary, summary)
    _, card_path = export_ensemble(run, TASK, "torchscript", folds=[0])
    card = read_json(card_path)
    assert card["cross_validation"]["pooled"]["accuracy"]["low"] == 0.8 and card["external"] == {"n": 4}
    assert card["folds"] == [0]


def test_models_with_a_grouped_head_export_to_the_same_probabilities(tmp_path):
    from cxrlib.export import EnsembleModule, _write_model
    from cxrlib.models import build_model

    torch.manual_seed(0)
    nets = [build_model("resnet10", 2, head_groups=[0, 0, 1]).eval() for _ in range(2)]
    with torch.no_grad():
        nets[0].fc.weight.mul_(200)  # logits in the hundreds: the log-sum-exp must not overflow
    module = EnsembleModule(nets, resize=40, image_size=32, tta_flip=True, temperatures=[0.8, 1.2]).eval()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 1, 40, 40), dtype=np.uint8))
    with torch.no_grad():
        expected = module(x).numpy()
    assert np.isfinite(expected).all() and np.allclose(expected.sum(1), 1, atol=1e-5)
    _write_model(module, "torchscript", tmp_path / "m.pt", 40)
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(tmp_path / "m.pt"))(x).numpy(), expected, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    _write_model(module, "onnx", tmp_path / "m.onnx", 40)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": (x.numpy() / 255.0).astype(np.float32)})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_card_names_grouped_outputs_and_the_models_a_derived_task_reuses(tmp_path):
    from cxrlib import io

    layout = RunLayout(tmp_path)
    io.write_json(layout.fold("binary", 0).train_info, {"fine_classes": ["normal", "viral_pneumonia", "covid19"],
                                                       "derived_from": {"task": "multiclass", "fold": 0}})
    io.write_json(layout.fold("multiclass", 0).train_info, {"classes": ["normal", "viral_pneumonia", "covid19"]})
    card = head_card(tmp_path, "binary", [0])
    assert card["fine_classes"]["by_fold"] == {"0": ["normal", "viral_pneumonia", "covid19"]}
    assert card["derived_from"] == {"0": "multiclass fold 0"}
    assert head_card(tmp_path, "multiclass", [0]) == {}  # a plain head says nothing more
