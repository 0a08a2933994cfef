"""Temperature scaling: recovers a known temperature, agrees with the usual LBFGS fit, keeps the ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlib.evaluate.calibration import T_BOUNDS, fit_temperature, nll
from cxrlib.inference import probs_from_logits


def _calibrated_logits(n: int = 4000, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, 1, c) and labels drawn from their own softmax: calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, size=(n, c)).astype(np.float32)
    p = torch.softmax(torch.from_numpy(z), 1).numpy()
    y = np.array([rng.choice(c, p=row / row.sum()) for row in p])
    return z[:, None, :], y


@pytest.mark.parametrize("scale", [0.4, 1.0, 2.5])
def test_recovers_the_temperature_of_scaled_calibrated_logits(scale):
    z, y = _calibrated_logits()
    assert fit_temperature(z * scale, y) == pytest.approx(scale, rel=0.1)


def test_agrees_with_an_lbfgs_fit_of_the_cross_entropy():
    """The reference implementation of Guo et al. 2017: LBFGS on the logits' cross-entropy over T."""
    z, y = _calibrated_logits(seed=1)
    logits, targets = torch.from_numpy(z[:, 0] * 1.7), torch.from_numpy(y)
    t = torch.ones(1, requires_grad=True)
    opt = torch.optim.LBFGS([t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / t, targets)
        loss.backward()
        return loss

    opt.step(closure)
    assert fit_temperature(z * 1.7, y) == pytest.approx(t.item(), rel=2e-3)


def test_two_views_are_averaged_after_the_softmax_and_the_fit_lowers_the_nll():
    z, y = _calibrated_logits(n=600, seed=2)
    rng = np.random.default_rng(3)
    views = np.concatenate([z, z + rng.normal(0, 0.5, z.shape).astype(np.float32)], axis=1) * 0.5
    expected = (torch.softmax(torch.from_numpy(views[:, 0] / 0.7), 1)
                + torch.softmax(torch.from_numpy(views[:, 1] / 0.7), 1)).numpy() / 2
    np.testing.assert_allclose(probs_from_logits(views, 0.7), expected, atol=1e-6)
    t = fit_temperature(views, y)
    assert t < 1 and nll(views, y, t) < nll(views, y)  # under-confident logits are sharpened
    assert nll(views, y, t) <= min(nll(views, y, t * 1.05), nll(views, y, t / 1.05))


def test_one_view_keeps_every_images_ranking():
    z, _ = _calibrated_logits(n=200, seed=4)
    for t in (0.3, 1.0, 4.0):
        p = probs_from_logits(z, t)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
        assert (p.argmax(1) == z[:, 0].argmax(1)).all()


def test_a_perfectly_separated_set_is_sharpened_inside_the_bounds():
    z = np.array([[[5.0, 0.0]], [[0.0, 5.0]]] * 10, dtype=np.float32)
    y = np.array([0, 1] * 10)
    t = fit_temperature(z, y)
    assert T_BOUNDS[0] <= t < 0.5 and nll(z, y, t) < 1e-6


@pytest.mark.parametrize("logits, targets", [(np.zeros((4, 3)), np.zeros(4, int)),
                                             (np.zeros((4, 1, 3)), np.zeros(3, int)),
                                             (np.zeros((0, 1, 3)), np.zeros(0, int))])
def test_bad_shapes_are_refused(logits, targets):
    with pytest.raises(ValueError, match="fit_temperature"):
        fit_temperature(logits, targets)


def test_a_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        probs_from_logits(np.zeros((1, 1, 2)), 0.0)


def _summary(temps):
    fold = {"n": 10, "accuracy": 0.8, "macro": {"precision": 0.8, "recall": 0.8, "f1": 0.8, "auc": 0.9}, "ece": 0.05}
    return {"folds": [{**fold, "fold": k} for k in range(len(temps))],
            "calibration": {"method": "temperature", "temperature": temps}}


def test_fold_calibration_reads_each_folds_train_json(tmp_path):
    from cxrlib import io
    from cxrlib.evaluate.summary import fold_calibration
    from cxrlib.layout import RunLayout

    layout = RunLayout(tmp_path)
    io.write_json(layout.fold("binary", 0).train_info, {"calibration": {"method": "temperature", "temperature": 0.6}})
    io.write_json(layout.fold("binary", 1).train_info, {"best_epoch": 3})  # trained before calibration existed
    assert fold_calibration(tmp_path, "binary", 2) == {"method": "mixed: none, temperature", "temperature": [0.6, 1.0]}
    io.write_json(layout.fold("binary", 1).train_info, {"calibration": {"method": "temperature", "temperature": 0.8}})
    assert fold_calibration(tmp_path, "binary", 2) == {"method": "temperature", "temperature": [0.6, 0.8]}


def test_the_fold_table_and_the_note_show_the_temperatures():
    from cxrlib.evaluate import calibration_note, fold_table

    table = fold_table(_summary([0.5, 0.7]))
    assert table.loc["0", "temperature"] == 0.5 and table.loc["mean", "temperature"] == pytest.approx(0.6)
    assert "T = 0.50–0.70" in calibration_note(_summary([0.5, 0.7]))
    plain = {**_summary([1.0, 1.0]), "calibration": {"method": "none", "temperature": [1.0, 1.0]}}
    assert "temperature" not in fold_table(plain).columns and "no rescaling" in calibration_note(plain)
    old = {k: v for k, v in plain.items() if k != "calibration"}  # a summary.json from before calibration
    assert "temperature" not in fold_table(old).columns and "no rescaling" in calibration_note(old)
