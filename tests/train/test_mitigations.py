"""The shortcut mitigations: data.crop_border, data.equalize, train.sampler source_balanced, params/robust.yaml."""

from __future__ import annotations

import numpy as np
import pytest

from cxrlib.config import load_config
from cxrlib.data.images import ImageCache, cache_variant, crop_centre, equalize, load_images
from cxrlib.train import load_fold_data, train_fold
from cxrlib.train.sampling import epoch_indices, sampling_weights
from support import images
from support.train_helpers import REPO, make_run


def test_crop_border_keeps_the_centre_at_the_same_size():
    img = np.zeros((40, 40), dtype=np.uint8)
    img[:4, :] = img[-4:, :] = img[:, :4] = img[:, -4:] = 255  # a bright frame 4 px wide (10 %)
    img[18:22, 18:22] = 128
    out = crop_centre(img, 0.1)
    assert out.shape == (40, 40) and out[:2].max() < 255 and out[:, :2].max() < 255  # the frame is gone
    assert out[18:22, 18:22].mean() == pytest.approx(128, abs=30)  # the centre stays (scaled 1.25x)
    assert crop_centre(img, 0.0) is img


def test_equalize_spreads_a_narrow_histogram_and_keeps_the_order():
    rng = np.random.default_rng(0)
    img = rng.integers(100, 140, (32, 32)).astype(np.uint8)
    out = equalize(img)
    assert int(out.max()) - int(out.min()) > 3 * (int(img.max()) - int(img.min()))  # limited, so not 0..255
    order = np.argsort(img.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()  # monotone mapping


def test_preprocessed_images_have_their_own_cache_entries(tmp_path):
    path = images.write(tmp_path / "a.png", images.xray_like(np.random.default_rng(1), 48))
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    plain = load_images([str(path)], [sha], 40, tmp_path / "c")
    eq = load_images([str(path)], [sha], 40, tmp_path / "c", equalize=True)
    both = load_images([str(path)], [sha], 40, tmp_path / "c", crop_border=0.1, equalize=True)
    assert not np.array_equal(plain, eq) and not np.array_equal(eq, both)
    roots = {ImageCache(tmp_path / "c", 40, *o).path_for(sha) for o in ((0.0, False), (0.0, True), (0.1, True))}
    assert len(roots) == 3 and all(p.exists() for p in roots)
    assert cache_variant() == "" and cache_variant(0.1, True) == "-crop0.1-eq"
    assert np.array_equal(load_images([str(path)], [sha], 40, tmp_path / "c", equalize=True), eq)  # from cache


def test_source_balanced_weights_are_one_over_the_class_source_cell():
    targets = np.array([0, 0, 0, 0, 1, 1])
    sources = np.array(["a", "a", "a", "b", "a", "b"])
    w = sampling_weights(targets, "source_balanced", sources)
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1, 1, 1])
    assert sampling_weights(targets, "weighted").tolist() == pytest.approx([1 / 4] * 4 + [1 / 2] * 2)
    draws = np.concatenate([epoch_indices(targets, 0, e, "source_balanced", sources=sources).numpy()
                            for e in range(400)])
    share_b0 = np.mean(draws == 3)  # cell (0, b) holds one image: a quarter of the draws
    assert share_b0 == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="sources"):
        sampling_weights(targets, "source_balanced")


def test_robust_params_load_and_train_a_tiny_run(tmp_path):
    cfg = load_config(REPO / "params" / "robust.yaml")
    assert cfg.data.crop_border == 0.1 and cfg.data.equalize and cfg.train.sampler == "source_balanced"
    run = make_run(tmp_path, per_class=6, n_folds=3, source=lambda ci, i: "ab"[i % 2])
    small = load_config(REPO / "params" / "robust.yaml", [
        f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu", "data.resize=40", "train.image_size=32",
        "train.epochs=1", "train.batch_size=8", "split.n_folds=3"])
    data = load_fold_data(small, run, "multiclass", 0)
    assert data.images.shape[1:] == (40, 40) and set(data.sources) == {"a", "b"}
    result = train_fold(small, run, "multiclass", 0)
    assert result.info["params"]["data"]["equalize"] and np.isfinite(result.history["train_loss"]).all()
