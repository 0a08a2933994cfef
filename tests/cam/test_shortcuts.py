"""Shortcut checks: border and lung shares on maps with known answers; ROAD reproducibility and direction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cxrlib.cam.road import road_scores
from cxrlib.cam.shortcuts import border_area, border_band, border_share, mask_in_input_frame, mass_share, random_maps

torch.set_num_threads(1)


def test_border_band_width_and_area():
    band = border_band(50, 100, 0.12)  # 6 rows and 12 columns on each side
    assert band[5, 50] and not band[6, 50] and band[25, 11] and not band[25, 12]
    assert band[44, 50] and not band[43, 50] and band[25, 88] and not band[25, 87]
    assert border_area(50, 100, 0.12) == pytest.approx(1 - (38 * 76) / (50 * 100))
    with pytest.raises(ValueError, match="border"):
        border_band(10, 10, 0.5)


def test_border_share_known_answers():
    h = w = 50
    corner = np.zeros((h, w))
    corner[:3, :3] = 1.0  # all mass where a laterality marker sits
    centre = np.zeros((h, w))
    centre[20:30, 20:30] = 1.0
    half = np.zeros((h, w))
    half[0, :] = 1.0  # 50 px in the band (the top row) ...
    half[25, 4:40] = 1.0  # ... 36 px on the middle row: columns 4 and 5 in the band, 6..39 central
    uniform = np.ones((h, w))
    shares = border_share(np.stack([corner, centre, half, uniform]), 0.12)
    np.testing.assert_allclose(shares[:2], [1.0, 0.0])
    assert shares[2] == pytest.approx((50 + 2) / 86)
    assert shares[3] == pytest.approx(border_area(h, w, 0.12))
    assert np.isnan(border_share(np.zeros((1, h, w)))[0])
    assert np.isnan(border_share(np.full((1, h, w), np.nan))[0])
    with pytest.raises(ValueError, match="non-negative"):
        border_share(-uniform[None])


def test_lung_share_with_a_mask():
    maps = np.zeros((2, 20, 20))
    maps[0, :, :10] = 1.0
    maps[1, :, :] = 1.0
    mask = np.zeros((20, 20), bool)
    mask[:, :10] = True
    np.testing.assert_allclose(mass_share(maps, mask), [1.0, 0.5])


def test_mask_follows_the_image_resize_and_centre_crop():
    mask = np.zeros((100, 100), np.uint8)
    mask[:, :50] = 255  # left half of the original image
    frame = mask_in_input_frame(mask, resize=64, image_size=48)
    assert frame.shape == (48, 48) and frame.dtype == bool
    assert frame[:, :23].all() and not frame[:, 25:].any()  # crop starts at column 8: the edge at 32 -> 24


def test_random_maps_are_seeded_and_normalised():
    a = random_maps(3, (32, 32), torch.Generator().manual_seed(5))
    b = random_maps(3, (32, 32), torch.Generator().manual_seed(5))
    c = random_maps(3, (32, 32), torch.Generator().manual_seed(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (3, 32, 32) and a.min() >= 0 and a.max() <= 1


class LeftHalfModel(nn.Module):
    """Logit 0 is the mean of the image's left half; logit 1 is a constant."""

    def forward(self, x):
        left = x[:, :, :, : x.shape[-1] // 2].mean(dim=(1, 2, 3))
        return torch.stack([4 * left, torch.full_like(left, 1.0)], dim=1)

    def parameters(self, recurse=True):
        yield torch.zeros(1)


def test_road_rewards_the_map_that_points_at_the_evidence():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, :, :8] = 1.0
    right = np.zeros((2, 16, 16), np.float32)
    right[:, :, 8:] = 1.0
    left = 1.0 - right
    model = LeftHalfModel()
    state = torch.get_rng_state()
    good = road_scores(model, x, left, [0, 0], seed=0)
    bad = road_scores(model, x, right, [0, 0], seed=0)
    assert torch.equal(state, torch.get_rng_state()), "ROAD must not move the caller's RNG"
    assert good.shape == (2,) and (good > 0).all() and (bad < 0).all()
    np.testing.assert_array_equal(good, road_scores(model, x, left, [0, 0], seed=0))
    with pytest.raises(ValueError, match="one entry per image"):
        road_scores(model, x, left, [0])
