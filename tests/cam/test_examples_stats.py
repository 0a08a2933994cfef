"""Galleries and cam_stats.csv on a fake run (tiny resnet18 checkpoint, synthetic images); the notebook under nbval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib.cam import examples as gallery_examples, stats as gallery_stats
from cxrlib.data.phash import HEX_LEN
from cxrlib.plots import cam as gallery_plots
from cxrlib.plots import save_figure
from cxrlib.plots.browser import CamBrowser
from cxrlib.data.images import file_sha256, load_images
from cxrlib.errors import ArtifactError, ConfigError
from cxrlib.inference import predict_probs
from cxrlib.models import build_model, save_checkpoint

torch.set_num_threads(1)

CLASSES = ["normal", "viral_pneumonia", "covid19"]
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04_gradcam_gallery.ipynb"
RESIZE, CROP = 72, 64


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    """results/run/multiclass with splits.csv, fold0/model.pt and fold0/predictions.csv over 12 synthetic images."""
    root = tmp_path_factory.mktemp("cam")
    img_dir, run = root / "images", root / "run"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    paths, masks = [], []
    for i in range(12):
        img = rng.integers(0, 60, (80, 80)).astype(np.uint8)
        r, c = rng.integers(10, 50, 2)
        img[r:r + 20, c:c + 20] = 200 + i * 4
        path = img_dir / f"img{i:02d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
        mask_path = ""
        if i % 2 == 0:
            mask = np.zeros((80, 80), np.uint8)
            mask[15:65, 10:35] = mask[15:65, 45:70] = 255
            mask_path = str(img_dir / f"img{i:02d}_mask.png")
            Image.fromarray(mask).save(mask_path)
        masks.append(mask_path)
    sha = [file_sha256(p) for p in paths]
    torch.manual_seed(0)
    model = build_model("resnet18", 3, weights="none").eval()
    images = load_images(paths, sha, RESIZE, root / "cache")
    probs = predict_probs(model, images, CROP)
    pred = probs.argmax(1)
    true = np.where(np.arange(12) % 3 == 0, (pred + 1) % 3, pred)  # every third image misclassified
    true[:3] = [2, 2, 0]
    pred[:3] = [2, 2, 1]  # at least two correct covid19 and one wrong; the map target follows `predicted`
    fold_dir = run / "multiclass" / "fold0"
    fold_dir.mkdir(parents=True)
    save_checkpoint(fold_dir / "model.pt", model, {"arch": "resnet18", "classes": CLASSES, "resize": RESIZE,
                                                   "image_size": CROP, "epoch": 1, "params": {}})
    pd.DataFrame({
        "path": paths, "split": "test", "true": [CLASSES[t] for t in true],
        "predicted": [CLASSES[p] for p in pred], **{f"prob_{c}": probs[:, j] for j, c in enumerate(CLASSES)},
        "source": "synthetic", "patient_id": "", "sha256": sha,
    }).to_csv(fold_dir / "predictions.csv", index=False)
    pd.DataFrame({
        "path": paths, "label": [CLASSES[t] for t in true], "source": "synthetic", "patient_id": "",
        "group": paths, "fold": 0, "target": [CLASSES[t] for t in true], "sha256": sha, "phash": "0" * HEX_LEN,
        "width": 80, "height": 80, "mask_path": masks,
    }).to_csv(run / "multiclass" / "splits.csv", index=False)
    return root


@pytest.fixture(scope="module")
def examples(fake_run):
    return gallery_examples.build_examples(fake_run / "run", "multiclass", 0, 2, fake_run / "cache")


def test_select_examples_takes_correct_and_wrong_per_class():
    frame = pd.DataFrame({
        "split": ["test"] * 6 + ["val"], "true": ["a", "a", "a", "b", "b", "b", "a"],
        "predicted": ["a", "a", "b", "b", "a", "a", "a"], "sha256": list("fedcbag"),
    })
    chosen = gallery_examples.select_examples(frame, ["a", "b"], 1)
    assert list(zip(chosen["true"], chosen["correct"], chosen["sha256"])) == [
        ("a", True, "e"), ("a", False, "d"), ("b", True, "c"), ("b", False, "a")]


def test_build_examples(examples, fake_run):
    ex = examples
    assert ex.classes == CLASSES and list(ex.layers) == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert ex.gray.shape == (len(ex), CROP, CROP) and ex.inputs.shape == (len(ex), 3, CROP, CROP)
    assert (ex.frame.groupby(["true", "correct"]).size() <= 2).all()
    assert [m is not None for m in ex.masks] == [p != "" for p in ex.frame["mask_path"]]
    assert gallery_examples.fold_ids(fake_run / "run", "multiclass", "all") == [0]
    with pytest.raises(ArtifactError, match="no trained fold model"):
        gallery_examples.fold_ids(fake_run / "run", "binary", "all")
    with pytest.raises(ConfigError, match="unknown"):
        gallery_examples.resolve_layer_labels("resnet18", ["layer7"])


def test_maps_by_class_equal_the_maps_of_each_class(fake_run):
    ex = gallery_examples.build_examples(fake_run / "run", "multiclass", 0, 2, fake_run / "cache")
    fresh = gallery_examples.build_examples(fake_run / "run", "multiclass", 0, 2, fake_run / "cache")
    by_class = ex.maps_by_class("gradcam")
    assert list(by_class) == CLASSES
    for c in CLASSES:
        assert ex.maps("gradcam", c) is by_class[c]  # cached under the same key
        for layer, maps in fresh.maps("gradcam", c).items():
            np.testing.assert_array_equal(by_class[c][layer], maps)
    picked = ex.maps("gradcam", "predicted")["layer4"]
    rows = [CLASSES.index(p) for p in ex.frame["predicted"]]
    np.testing.assert_array_equal(picked, np.stack([by_class[CLASSES[r]]["layer4"][i] for i, r in enumerate(rows)]))


def test_cam_stats_rows_and_road(examples, fake_run):
    stats = gallery_stats.cam_stats(examples, "gradcam", border=0.12, road_samples=3, seed=0)
    assert len(stats) == len(examples) * len(CLASSES) * 5
    assert stats["border_share"].between(0, 1).all()
    np.testing.assert_allclose(stats["border_share"] + stats["center_share"], 1.0)
    has_mask = stats["path"].isin(examples.frame.loc[examples.frame["mask_path"] != "", "path"])
    assert stats.loc[has_mask, "lung_share"].between(0, 1).all() and stats.loc[~has_mask, "lung_share"].isna().all()
    road = stats.dropna(subset=["road_cam"])
    assert len(road) == 3 and (road["layer"] == "layer4").all() and road["is_predicted"].all()
    assert road["road_random"].notna().all()
    again = gallery_stats.cam_stats(examples, "gradcam", border=0.12, road_samples=3, seed=0)
    pd.testing.assert_frame_equal(stats, again)
    path = gallery_stats.write_cam_stats(fake_run / "run", "multiclass", stats)
    back = pd.read_csv(path)
    assert list(back.columns) == gallery_stats.STATS_COLUMNS and len(back) == len(stats)
    summary = gallery_stats.shortcut_summary(stats)
    assert set(summary.index) == set(examples.frame["true"]) and summary["road_n"].sum() == 3
    cells = stats.groupby("layer", sort=False)["grid_cells"].first()
    assert list(cells) == sorted(cells, reverse=True)  # each ResNet stage halves the grid
    expected = [layer for layer, c in cells.items() if c >= gallery_stats.MIN_GRID_CELLS][-1]
    assert (summary["layer"] == expected).all() and gallery_stats.shortcut_layer(stats) == expected


def test_a_two_by_two_map_cannot_tell_border_from_centre():
    """Why the shortcut summary skips layers under MIN_GRID_CELLS: any upsampled 2x2 map has the band's area as share."""
    import torch

    from cxrlib.cam.base import scale_maps
    from cxrlib.cam.shortcuts import border_area, border_share

    gen = torch.Generator().manual_seed(0)
    coarse = scale_maps(torch.rand((6, 2, 2), generator=gen), (64, 64)).numpy()
    np.testing.assert_allclose(border_share(coarse, 0.12), border_area(64, 64, 0.12), atol=1e-6)
    finer = scale_maps(torch.rand((6, 4, 4), generator=gen), (64, 64)).numpy()
    assert np.abs(border_share(finer, 0.12) - border_area(64, 64, 0.12)).max() > 0.02


def test_feature_grid_reports_each_layers_size():
    import torch
    from torchvision.models import resnet18

    from cxrlib.cam.base import feature_grid
    from cxrlib.models import cam_layers

    model = resnet18(num_classes=3).eval()
    grid = feature_grid(model, cam_layers("resnet18"), torch.zeros(1, 3, 64, 64))
    assert grid == {"relu": (32, 32), "layer1": (16, 16), "layer2": (8, 8), "layer3": (4, 4), "layer4": (2, 2)}
    assert not any(m._forward_hooks for m in model.modules())  # hooks released


def test_figures_are_saved(examples, tmp_path):
    featured = gallery_examples.featured_indices(examples)
    assert featured and all(examples.frame["true"].iloc[i] == "covid19" for i in featured)
    figs = {
        "layers.png": gallery_plots.figure_layers(examples, featured[0]),
        "grid.png": gallery_plots.figure_grid(examples, featured, "layer4"),
        "empty.png": gallery_plots.figure_grid(examples, [], "layer4"),
        "cw.png": gallery_plots.figure_correct_vs_wrong(examples, "layer4", per_class=2),
    }
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path / "figures" / name)
        assert Image.open(path).size[0] > 100
    assert len(figs["layers.png"].axes) == 6


def test_browser_follows_its_controls(examples):
    browser = CamBrowser(examples)
    first = browser.figure
    assert first is not None and browser.current() == 0
    browser.layer.value = "layer2"
    assert browser.figure is not first
    browser.method.value = "eigencam"
    browser.target.value = "true"
    browser.overlay.value = False
    browser.class_filter.value = "covid19"
    assert all(examples.frame["true"].iloc[i] == "covid19" for i in browser.indices())
    browser.slider.value = browser.slider.max
    assert browser.current() == browser.indices()[-1]
    # every layer of the example in one pass: switching layers afterwards computes nothing
    assert ("eigencam", "true", (browser.current(),), tuple(examples.layers)) in examples._cache
    cached = len(examples._cache)
    for layer in examples.layers:
        browser.layer.value = layer
    assert len(examples._cache) == cached
    browser.class_filter.value = "all"
    browser.outcome_filter.value = "misclassified"
    assert all(not examples.frame["correct"].iloc[i] for i in browser.indices())
    assert browser.slider.continuous_update is False and browser.opacity.continuous_update is False
    browser.opacity.value, browser.colormap.value = 0.8, "inferno"
    assert browser.figure is not None or not browser.indices()


def test_notebook_runs_under_nbval(fake_run, tmp_path):
    from support.nbval_helper import run_notebook_under_nbval

    run_dir = fake_run / "run"
    run_notebook_under_nbval(NOTEBOOK, tmp_path, {
        "run_dir": str(run_dir), "task": "multiclass", "fold": "all", "params_file": None,  # as the runner calls it
        "overrides": [f"data.cache_dir={fake_run / 'cache'}", "cam.road_samples=2", "train.device=cpu",
                      "cam.n_examples=2", "cam.method=gradcam", "cam.layers=[layer3, layer4]"],
    })
    stats = pd.read_csv(run_dir / "multiclass" / "cam_stats.csv")
    assert set(stats["layer"]) == {"layer3", "layer4"}
    road = pd.read_csv(run_dir / "multiclass" / "cam_road.csv")  # ROAD on a random sample, per percentile
    assert road["path"].nunique() == 2 and sorted(road["percentile"].unique()) == [20, 40, 60, 80]
    pngs = sorted(p.name for p in (run_dir / "multiclass" / "figures").glob("*.png"))
    assert pngs == sorted(f"{n}_gradcam_foldall.png" for n in ("cam_layers", "cam_covid_grid", "cam_correct_vs_wrong",
                                                              "cam_browser_first"))


def test_road_table_on_a_random_sample_per_percentile(fake_run):
    from cxrlib.cam.road import ROAD_COLUMNS, road_table

    ex = gallery_examples.build_examples(fake_run / "run", "multiclass", 0, 5, fake_run / "cache",
                                         selection="random", seed=0)
    again = gallery_examples.build_examples(fake_run / "run", "multiclass", 0, 5, fake_run / "cache",
                                            selection="random", seed=0)
    assert len(ex) == 5 and list(ex.frame["path"]) == list(again.frame["path"])
    road = road_table(ex, "gradcam", samples=4, seed=0, percentiles=(20, 80))
    assert list(road.columns) == ROAD_COLUMNS and len(road) == 8
    assert sorted(road["removed_share"].unique().round(2)) == [0.2, 0.8] and road["road_cam"].notna().all()
    path = gallery_stats.write_road_table(fake_run / "run", "multiclass", road)
    assert path.name == "cam_road.csv" and len(pd.read_csv(path)) == 8
    per = gallery_stats.road_per_percentile(road)
    assert list(per.index) == [20, 80] and (per["road_cam_n"] == 4).all()
    with pytest.raises(ValueError, match="selection"):
        gallery_examples.build_examples(fake_run / "run", "multiclass", 0, 5, fake_run / "cache", selection="x")
