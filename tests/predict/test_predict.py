"""python -m cxrlib predict on a tiny trained run: the study's own numbers, DICOM = PNG, skipping, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.__main__ import main
from cxrlib.errors import ArtifactError
from cxrlib.evaluate.external import model_column
from cxrlib.layout import PredictLayout, RunLayout
from cxrlib.predict.ensemble import load_ensemble
from cxrlib.predict.inputs import find_images, out_of_distribution
from cxrlib.predict.scoring import predict_paths
from support.fake_dicom import write_dicom
from support.trained_run import TASK, TRAINED_FOLDS

CLASSES = ["normal", "viral_pneumonia", "covid19"]
PROBS = [f"prob_{c}" for c in CLASSES]


@pytest.fixture(scope="module")
def ens(trained_run):
    return load_ensemble(trained_run, TASK, device="cpu")


def test_fold_probabilities_equal_the_studys_own_test_predictions(trained_run, ens):
    assert all(abs(ens.temperature(k) - 1) > 0.01 for k in TRAINED_FOLDS)  # the run is calibrated: T is applied
    for k in TRAINED_FOLDS:
        own = pd.read_csv(RunLayout(trained_run).fold(TASK, k).predictions)
        own = own[own["split"] == "test"]
        frame = predict_paths(ens, own["path"].tolist()).frame
        assert frame["path"].tolist() == own["path"].tolist()
        got = frame[[model_column(k, c) for c in CLASSES]].to_numpy()
        np.testing.assert_allclose(got, own[PROBS].to_numpy(), atol=1e-5)
        np.testing.assert_allclose(frame[PROBS].sum(axis=1), 1.0, atol=1e-6)
        fold_mean = np.mean([frame[[model_column(j, c) for c in CLASSES]].to_numpy() for j in TRAINED_FOLDS], axis=0)
        np.testing.assert_allclose(frame[PROBS].to_numpy(), fold_mean, atol=1e-6)
        assert (frame["disagreement"] >= 0).all()


def _png(trained_run, i=0) -> str:
    return sorted((trained_run.parent / "img").glob("*.png"))[i]


def test_dicom_of_the_same_pixels_gives_the_same_prediction(trained_run, ens, tmp_path):
    png = _png(trained_run)
    pixels = np.asarray(Image.open(png))
    mono2 = write_dicom(tmp_path / "a.dcm", pixels)
    mono1 = write_dicom(tmp_path / "b.dcm", (255 - pixels).astype(np.uint8), photometric="MONOCHROME1")
    frame = predict_paths(ens, [png, mono2, mono1]).frame
    np.testing.assert_allclose(frame[PROBS].to_numpy()[1:], np.repeat(frame[PROBS].to_numpy()[:1], 2, axis=0),
                               atol=1e-6)


def test_warnings_for_odd_images():
    rng = np.random.default_rng(0)
    chest = rng.integers(0, 255, (300, 250)).astype(np.uint8)
    assert out_of_distribution(chest) == []
    assert "aspect" in out_of_distribution(chest[:, :40].repeat(2, axis=0))[0]
    assert any("small" in w for w in out_of_distribution(chest[:40, :40]))
    assert any("constant" in w for w in out_of_distribution(np.full((300, 300), 7, np.uint8)))
    assert any("lateral" in w for w in out_of_distribution(chest, "LL"))


def test_cli_walks_a_folder_skips_corrupt_files_and_writes_overlays(trained_run, tmp_path, capsys):
    folder = tmp_path / "in" / "sub"
    folder.mkdir(parents=True)
    for i in range(2):
        (folder / f"x{i}.png").write_bytes(_png(trained_run, i).read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    rc = main(["predict", "--run", str(trained_run), "--task", TASK, "--cam", "gradcam", "--layer", "layer4",
               "--out", str(out), "--json", str(tmp_path / "in")])
    assert rc == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert len(report["predictions"]) == 2 and [s["path"] for s in report["skipped"]] == [str(folder / "broken.png")]
    assert "broken.png" in captured.err
    frame = pd.read_csv(PredictLayout(out).predictions)
    assert list(frame.columns[:5]) == ["path", "predicted", *PROBS]
    assert {model_column(k, c) for k in TRAINED_FOLDS for c in CLASSES} <= set(frame.columns)
    assert frame["warning"].str.contains("small").all()  # 40 px synthetic images
    assert len(list(out.glob("*.png"))) == 2


def test_cli_table_and_nothing_scored(trained_run, tmp_path, capsys):
    assert main(["predict", "--run", str(trained_run), "--folds", "1", "--out", str(tmp_path), str(_png(trained_run))]) == 0
    assert "prob_covid19" in capsys.readouterr().out
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert main(["predict", "--run", str(trained_run), "--out", str(tmp_path / "o"), str(bad)]) == 2
    assert "no image could be scored" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--run", "/no/such/run"], "run folder not found"),
    (["--task", "binary"], "no task 'binary'"),
    (["--folds", "2"], "no trained model"),
])
def test_bad_run_task_or_fold_is_one_error_line(trained_run, tmp_path, capsys, args, message):
    base = {"--run": str(trained_run), "--task": TASK}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["predict", *[x for kv in base.items() for x in kv], "--out", str(tmp_path), str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_folds_that_disagree_on_preprocessing_are_refused(trained_run, tmp_path):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    path = RunLayout(run).fold(TASK, 1).model
    ckpt = torch.load(path, weights_only=True)
    ckpt["image_size"] = 28
    torch.save(ckpt, path)
    with pytest.raises(ArtifactError, match="image_size"):
        load_ensemble(run, TASK, device="cpu")


def test_find_images_keeps_named_files_and_walks_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/3.dcm", "a/skip.txt", "named.bin"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path / "a", tmp_path / "named.bin"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/1.png", "a/b/2.JPG", "a/b/3.dcm", "named.bin"]


def test_predict_applies_the_runs_crop_and_equalisation(tmp_path):
    """A run trained on cropped, equalised images is scored on cropped, equalised images (from its checkpoints)."""
    from cxrlib.data.images import preprocess, resize_square
    from cxrlib.predict.inputs import load_image
    from support import images

    path = images.write(tmp_path / "x.png", images.xray_like(np.random.default_rng(3), 64))
    plain = load_image(path, 48)
    treated = load_image(path, 48, crop_border=0.1, equalize=True)
    assert np.array_equal(plain.resized, resize_square(plain.gray, 48))
    assert np.array_equal(treated.resized, preprocess(resize_square(plain.gray, 48), 0.1, True))
    assert not np.array_equal(plain.resized, treated.resized)
