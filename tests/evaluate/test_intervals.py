import math

import numpy as np
import pytest
from scipy import stats

from cxrlib.evaluate.intervals import Resampler, bootstrap, wilson


def test_wilson_known_value():
    lo, hi = wilson(91, 100, 0.95)
    assert lo == pytest.approx(0.838, abs=5e-4)
    assert hi == pytest.approx(0.952, abs=5e-4)


@pytest.mark.parametrize("k,n,level", [(0, 10, 0.95), (10, 10, 0.95), (3, 7, 0.9), (512, 1000, 0.99), (1, 2, 0.5)])
def test_wilson_matches_scipy(k, n, level):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    lo, hi = wilson(k, n, level)
    assert lo == pytest.approx(ci.low, abs=1e-12)
    assert hi == pytest.approx(ci.high, abs=1e-12)


def test_wilson_empty_and_bad_input():
    assert all(math.isnan(v) for v in wilson(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson(5, 3)
    with pytest.raises(ValueError, match="level"):
        wilson(1, 3, level=1.5)


def _mean_stat(values):
    return lambda idx: {"mean": float(values[idx].mean())}


def test_bootstrap_reproducible_and_covers_point():
    values = np.random.default_rng(1).normal(2.0, 1.0, 80)
    a = bootstrap(_mean_stat(values), len(values), resamples=300, rng=np.random.default_rng(7))
    b = bootstrap(_mean_stat(values), len(values), resamples=300, rng=np.random.default_rng(7))
    c = bootstrap(_mean_stat(values), len(values), resamples=300, rng=np.random.default_rng(8))
    assert a == b
    assert a != c
    lo, hi = a["mean"]
    assert lo < values.mean() < hi


def test_bootstrap_agrees_with_scipy_percentile():
    values = np.random.default_rng(3).exponential(1.0, 60)
    ours = bootstrap(_mean_stat(values), len(values), resamples=4000, level=0.9, rng=np.random.default_rng(0))["mean"]
    ref = stats.bootstrap((values,), np.mean, n_resamples=4000, confidence_level=0.9, method="percentile",
                          rng=np.random.default_rng(1)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.03)
    assert ours[1] == pytest.approx(ref.high, abs=0.03)


def test_bootstrap_requires_generator_and_skips_nan_draws():
    with pytest.raises(ValueError, match="Generator"):
        bootstrap(_mean_stat(np.ones(3)), 3)
    out = bootstrap(lambda idx: {"nan": math.nan, "one": 1.0}, 5, resamples=10, rng=np.random.default_rng(0))
    assert all(math.isnan(v) for v in out["nan"])
    assert out["one"] == (1.0, 1.0)
    empty = bootstrap(lambda idx: {"x": 0.0}, 5, resamples=0, rng=np.random.default_rng(0))
    assert all(math.isnan(v) for v in empty["x"])


def test_resampler_keeps_clusters_whole():
    clusters = np.array(["a", "a", "a", "b", "c", "c", "d"])
    sampler = Resampler(len(clusters), clusters)
    assert sampler.n_clusters == 4
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sampler.draw(rng)
        drawn = clusters[idx]
        for cid in set(drawn):
            members = np.flatnonzero(clusters == cid)
            # every member of a drawn cluster appears, and equally often
            counts = [np.sum(idx == m) for m in members]
            assert len(set(counts)) == 1 and counts[0] >= 1


def test_cluster_bootstrap_is_wider_for_correlated_rows():
    # 20 patients, 10 identical images each: row resampling badly understates the spread
    rng = np.random.default_rng(5)
    per_patient = rng.normal(0, 1, 20)
    values = np.repeat(per_patient, 10)
    clusters = np.repeat(np.arange(20), 10)
    rows = bootstrap(_mean_stat(values), len(values), resamples=500, rng=np.random.default_rng(0))["mean"]
    grouped = bootstrap(_mean_stat(values), len(values), clusters, resamples=500, rng=np.random.default_rng(0))["mean"]
    assert (grouped[1] - grouped[0]) > 2 * (rows[1] - rows[0])
