"""Shortcut controls on tiny synthetic runs: masks, a corner-painted label, a source probe, controls.json."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrlib import io
from cxrlib.cam.shortcuts import mask_in_cached_frame
from cxrlib.controls import CONTROLS, cramers_v, run_controls
from cxrlib.controls.masks import apply_mask, centre_box, fill_value, hidden_region
from cxrlib.controls.report import control_sentences, controls_table
from cxrlib.layout import RunLayout
from cxrlib.train import train_fold
from support.train_helpers import make_run


def test_centre_box_is_the_middle_of_the_centre_crop():
    box = centre_box(40, 32, 0.125)  # crop rows/cols 4..35, band 4 px: centre 8..31
    rows, cols = np.where(box)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 31, 8, 31) and box.sum() == 24 * 24


def test_border_only_leaves_only_the_band_and_centre_only_only_the_centre():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 40, 40)).astype(np.uint8)
    box = centre_box(40, 32, 0.125)
    border = apply_mask(imgs, hidden_region("border_only", 40, 32, 0.125), 77)
    centre = apply_mask(imgs, hidden_region("centre_only", 40, 32, 0.125), 0)
    assert (border[:, box] == 77).all() and (border[:, ~box] == imgs[:, ~box]).all()
    assert (centre[:, ~box] == 0).all() and (centre[:, box] == imgs[:, box]).all()
    assert fill_value(imgs, "zero") == 0 and fill_value(imgs, "mean") == round(imgs.mean())


def test_lung_masks_follow_the_border_crop():
    mask = np.zeros((80, 80), dtype=np.uint8)
    mask[20:60, 20:40] = 255  # a 'lung' on the left half
    plain = mask_in_cached_frame(mask, 40) > 127
    cropped = mask_in_cached_frame(mask, 40, crop_border=0.25) > 127  # centre 40x40 of 80 blown up to 40
    assert plain[10:30, 10:20].all() and not plain[:, 21:].any()
    assert cropped[:, :19].all() and not cropped[:, 21:].any()


def test_cramers_v_matches_a_hand_computed_table():
    # [[10, 0], [5, 5]]: n 20, expected [[7.5, 2.5], [7.5, 2.5]], chi2 = 2*(2.5²/7.5) + 2*(2.5²/2.5) = 6.667
    assert cramers_v(np.array([[10, 0], [5, 5]])) == pytest.approx(np.sqrt(6.6667 / 20), rel=1e-4)
    assert cramers_v(np.array([[10, 0], [0, 10]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[3, 6], [1, 2]])) == pytest.approx(0.0)
    assert cramers_v(np.array([[4], [5]])) is None


def corner(rng, size, ci, i):
    """Noise everywhere; the class is the brightness of the top-left corner (inside the 6 px border band)."""
    img = rng.integers(40, 200, (size, size)).astype(np.uint8)
    img[:6, :12] = img[:12, :6] = (10, 130, 250)[ci]
    return img


def source_of(ci, i):
    return "a" if (i // 4) % 2 == 0 else "b"  # make_run's fold is i % 4: every fold gets both sources


def two_sources(rng, size, ci, i):
    """Source a: gentle noise; source b: harsh noise (:func:`source_of`), the same for every class."""
    spread = 10 if source_of(ci, i) == "a" else 90
    return np.clip(rng.normal(128, spread, (size, size)), 0, 255).astype(np.uint8)


@pytest.fixture
def controls_cfg(smoke_cfg):
    # 32 px images fed whole (no crop margin, no flips): the corner stays where it was painted
    return lambda *more: smoke_cfg("split.n_folds=4", "data.resize=32", "train.random_crop=false", "train.hflip=false",
                                   "train.epochs=3", "train.patience=3", "controls.folds=[0]", "controls.border=0.2",
                                   *more)


def test_border_only_learns_a_corner_label_and_centre_only_does_not(tmp_path, controls_cfg):
    cfg = controls_cfg()
    run = make_run(tmp_path, per_class=16, n_folds=4, size=32, paint=corner)
    train_fold(cfg, run, "multiclass", 0)
    report = run_controls(cfg, run, "multiclass")
    border, centre = report["border_only"]["accuracy"]["value"], report["centre_only"]["accuracy"]["value"]
    assert border >= 0.75 and centre <= 0.6, (border, centre)
    assert report["lungs_masked"]["skipped"] == "no source has lung masks"
    assert report["source_probe"]["skipped"] == "no class has images from two or more sources"
    assert report["cramers_v"] is None and report["contingency"] == {c: {"synth": 16} for c in
                                                                    ("covid19", "normal", "viral_pneumonia")}
    # schema of controls.json
    saved = io.read_json(RunLayout(run).task("multiclass").controls)
    assert set(CONTROLS) <= set(saved) and {"contingency", "cramers_v"} <= set(saved)
    for name in CONTROLS:
        entry = saved[name]
        assert {"accuracy", "chance", "n", "folds", "external", "skipped"} <= set(entry) and entry["folds"] == [0]
        if entry["skipped"] is None:
            assert set(entry["accuracy"]) == {"value", "low", "high", "method"} and entry["n"] == 12
            assert entry["accuracy"]["low"] <= entry["accuracy"]["value"] <= entry["accuracy"]["high"]
            assert entry["chance"] == pytest.approx(1 / 3)
    table = controls_table(saved)
    assert list(table.index) == list(CONTROLS) and "skipped" in table.loc["lungs_masked", "accuracy (95 % CI)"]
    sentences = control_sentences(saved)
    assert "shortcut" in sentences["border_only"] and "not run" in sentences["lungs_masked"]
    assert saved["params"]["derived_from"] is None and "control models" not in sentences["border_only"]
    derived = control_sentences({**saved, "params": {**saved["params"], "derived_from": "multiclass"}})
    assert derived["border_only"].startswith(sentences["border_only"].split(":")[0] + " (multiclass's control models")
    assert "control models" not in derived["full"]
    # a second call reuses the trained control rounds
    model = RunLayout(run).task("multiclass").control_fold("border_only", 0).model
    before = model.stat().st_mtime_ns
    run_controls(cfg, run, "multiclass")
    assert model.stat().st_mtime_ns == before


def test_source_probe_tells_two_noise_sources_apart(tmp_path, controls_cfg):
    cfg = controls_cfg()
    run = make_run(tmp_path, per_class=16, n_folds=4, size=32, paint=two_sources,
                   source=source_of)
    splits = RunLayout(run).task("multiclass").splits
    frame = pd.read_csv(splits)
    keep = frame["target"] == "covid19"  # one class with two sources; the others from one
    frame.loc[~keep, "source"] = "a"
    frame.to_csv(splits, index=False)
    from cxrlib.controls.run import ControlRunner

    runner = ControlRunner(cfg, run, "multiclass")
    probe = runner.source_probe()
    assert set(probe["by_class"]) == {"covid19"} and probe["n"] == 4
    assert probe["accuracy"]["value"] >= 0.75 and probe["chance"] == pytest.approx(0.5)
