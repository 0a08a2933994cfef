"""ROAD with tied maps: each percentile removes exactly its share of pixels; per-percentile scores; intervals."""

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst

from cxrlib.cam.road import rank_maps, road_by_percentile
from cxrlib.cam.targets import ClassProbability
from cxrlib.models import build_model
from cxrlib.cam.road import road_scores
from cxrlib.cam.stats import mean_interval, road_per_percentile, shortcut_summary


def _removed(perturbation_cls, percentile, cam):
    """The share of pixels the library's ROAD perturbation removes (its imputer fills mask == 0)."""
    captured = {}

    def imputer(img, mask):
        captured["mask"] = mask.numpy()
        return img

    perturbation_cls(percentile, imputer)(torch.zeros(1, *cam.shape), torch.from_numpy(cam))
    return 1.0 - captured["mask"].mean()


def tied_map(size=20, seed=0):
    """Zero on 70 % of the pixels (as Grad-CAM maps are), positive and distinct elsewhere."""
    rng = np.random.default_rng(seed)
    cam = np.zeros(size * size, np.float32)
    hot = rng.permutation(size * size)[: int(0.3 * size * size)]
    cam[hot] = rng.uniform(0.1, 1.0, len(hot))
    return cam.reshape(size, size)


def test_raw_tied_maps_remove_the_wrong_share():
    cam = tied_map()
    # the flaw being fixed: at percentile 60 (remove the 40 % most relevant) the threshold is 0, so everything goes
    assert _removed(RemoveMostRelevantFirst, 60, cam) == 1.0
    assert _removed(RemoveLeastRelevantFirst, 80, cam) == pytest.approx(0.7)  # 20 % intended


@pytest.mark.parametrize("percentile", [20, 40, 60, 80])
def test_ranked_maps_remove_exactly_the_intended_share(percentile):
    ranked = rank_maps(tied_map())
    share = 1 - percentile / 100
    assert _removed(RemoveMostRelevantFirst, percentile, ranked) == pytest.approx(share)
    assert _removed(RemoveLeastRelevantFirst, percentile, ranked) == pytest.approx(share)
    # removing the top 20 % removes the 20 % largest values: every hot pixel left is below the removed ones
    cam = tied_map()
    kept = ranked < np.percentile(ranked, 80)
    assert cam[~kept].min() >= cam[kept].max()


def test_rank_maps_keep_order_and_break_ties_deterministically():
    cam = tied_map()
    a, b, c = rank_maps(cam, seed=0), rank_maps(cam, seed=0), rank_maps(cam, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a.ravel().tolist()) == pytest.approx(np.linspace(0, 1, cam.size).tolist())
    hot = cam > 0
    assert a[hot].min() > a[~hot].max()  # ties only among equal values
    assert rank_maps(np.stack([cam, cam])).shape == (2, 20, 20)


class LeftHalfModel(torch.nn.Module):
    """Class 0 logit = mean of the left half (the evidence), class 1 = 0."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        left = x[:, 0, :, : x.shape[-1] // 2].mean(dim=(1, 2)) * 8
        return torch.stack([left, torch.zeros_like(left)], dim=1)


def test_road_by_percentile_with_tied_maps():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, :, :8] = 1.0
    left = np.zeros((2, 16, 16), np.float32)
    left[:, :, :4] = 1.0  # tied: 75 % of the map is zero, 25 % is one
    per = road_by_percentile(LeftHalfModel(), x, left, [0, 0], (20, 40, 60, 80), seed=0)
    assert per.shape == (2, 4) and np.isfinite(per).all()
    np.testing.assert_allclose(road_scores(LeftHalfModel(), x, left, [0, 0], (20, 40, 60, 80), seed=0),
                               per.mean(axis=1))


def test_mean_interval_is_a_t_interval():
    mean, lo, hi, n = mean_interval([1.0, 2.0, 3.0, np.nan], 0.95)
    assert (mean, n) == (2.0, 3)
    assert hi - mean == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    assert np.isnan(mean_interval([1.0])[1])


def test_summary_and_percentile_table_carry_intervals():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        rows.append({"fold": 0, "path": f"p{i}", "true": "a" if i < 6 else "b", "predicted": "a", "correct": i < 6,
                     "is_predicted": True, "layer": "layer4", "grid_cells": 7, "border_share": rng.uniform(0, .3),
                     "border_area": 0.4, "lung_share": rng.uniform(.4, .9), "lung_area": 0.3,
                     "road_cam": np.nan, "road_random": np.nan})
    stats = pd.DataFrame(rows)
    road = pd.DataFrame([{"fold": 0, "path": f"p{i}", "true": "a" if i < 6 else "b", "percentile": p,
                          "removed_share": 1 - p / 100, "road_cam": 0.1 * i + p / 1000, "road_random": 0.0}
                         for i in range(12) for p in (20, 80)])
    summary = shortcut_summary(stats, road=road)
    for col in ("border_share", "lung_share", "road_cam"):
        assert (summary[f"{col}_low"] <= summary[col]).all() and (summary[col] <= summary[f"{col}_high"]).all()
    assert summary.loc["a", "border_share_n"] == 6 and summary.loc["a", "road_n"] == 6
    per = road_per_percentile(road)
    assert list(per.index) == [20, 80] and per.loc[20, "removed_share"] == pytest.approx(0.8)
    assert per.loc[80, "road_cam_n"] == 12


def test_read_cam_stats_carries_the_road_table_to_the_summary(tmp_path):
    from cxrlib.cam.stats import read_cam_stats, write_cam_stats, write_road_table
    from cxrlib.cam.road import ROAD_COLUMNS
    from cxrlib.cam.stats import STATS_COLUMNS

    stats = pd.DataFrame([{c: 0 for c in STATS_COLUMNS} | {"path": f"p{i}", "true": "a", "is_predicted": True,
                                                           "layer": "layer4", "grid_cells": 7, "road_cam": np.nan,
                                                           "road_random": np.nan} for i in range(3)])
    road = pd.DataFrame([{c: 0 for c in ROAD_COLUMNS} | {"path": f"r{i}", "true": "a", "percentile": 20,
                                                        "road_cam": 0.1 * i} for i in range(4)])
    write_cam_stats(tmp_path, "multiclass", stats)
    write_road_table(tmp_path, "multiclass", road)
    back = read_cam_stats(tmp_path, "multiclass")
    summary = shortcut_summary(back)  # as the summary page calls it
    assert summary.loc["a", "road_n"] == 4 and summary.loc["a", "road_cam"] == pytest.approx(0.15)


def test_fast_imputer_builds_the_librarys_system_and_fills_as_it_does():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights
    from scipy.sparse import csc_matrix

    from cxrlib.cam.imputer import FastLinearImputer, linear_system

    rng = np.random.default_rng(0)
    img = rng.normal(size=(3, 23, 17)).astype(np.float32)
    blob = np.ones((23, 17), dtype=np.float32)
    blob[:9, :6] = 0  # a removed corner region (touches two borders) ...
    for mask in (blob, (rng.random((23, 17)) > 0.6).astype(np.float32)):  # ... and scattered pixels
        a, b = linear_system(mask, img)
        a_lib, b_lib = NoisyLinearImputer.setup_sparse_system(mask, img, neighbors_weights)
        a_lib = csc_matrix(a_lib)
        assert a.shape == a_lib.shape and (a != a_lib).nnz == 0 and np.array_equal(b, b_lib)
        assert np.array_equal(a.indptr, a_lib.indptr) and np.array_equal(a.indices, a_lib.indices)
        assert abs(a - a.T).max() == 0  # symmetric: what the symmetric-mode solve relies on
        torch.manual_seed(3)
        ours = FastLinearImputer()(torch.from_numpy(img), torch.from_numpy(mask))
        torch.manual_seed(3)
        theirs = NoisyLinearImputer()(torch.from_numpy(img), torch.from_numpy(mask))
        # the same noise draws; the solves agree to rounding (float32 fills)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        assert torch.equal(ours[:, mask > 0.5], theirs[:, mask > 0.5])  # kept pixels untouched


def test_road_with_the_fast_imputer_equals_the_librarys_road():
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    x = torch.randn(3, 3, 32, 32)
    cams = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    ours = road_by_percentile(model, x, cams, [0, 1, 2], percentiles=(20, 80), seed=5)
    ranked, targets = rank_maps(cams, 5), [ClassProbability(t) for t in (0, 1, 2)]
    expected = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(5)
        for p in (20, 80):
            lerf = ROADLeastRelevantFirst(p)(x, ranked, targets, model)
            morf = ROADMostRelevantFirst(p)(x, ranked, targets, model)
            expected.append((np.asarray(lerf, dtype=np.float64) - np.asarray(morf, dtype=np.float64)).reshape(-1) / 2)
    np.testing.assert_allclose(ours, np.stack(expected, axis=1), rtol=0, atol=1e-6)
