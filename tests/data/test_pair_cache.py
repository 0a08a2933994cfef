"""Near-duplicate pair cache: same pairs as the search, hits skip it, any change or damage recomputes."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.dedup_recall import EDITS
from cxrlib.data import pair_cache, phash
from cxrlib.data.pair_cache import cache_path, cached_scored_pairs
from cxrlib.data.splits import assign_groups


def smooth_image(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return np.asarray(field.resize((size, size), Image.BICUBIC))


@pytest.fixture(scope="module")
def hashes() -> list[str]:
    """12 images and an edited copy of every other one: verified pairs and candidates below the threshold."""
    base = [smooth_image(s) for s in range(12)]
    rng = np.random.default_rng(0)
    copies = [EDITS[k % len(EDITS)](base[k], rng) for k in range(0, 12, 2)]
    return [phash.fingerprint(g) for g in base + copies]


@pytest.fixture
def calls(monkeypatch):
    """Lengths of the fingerprint lists ``phash.scored_pairs`` was really run on."""
    seen: list[int] = []
    original = phash.scored_pairs

    def counting(hashes, *args, **kwargs):
        seen.append(len(hashes))
        return original(hashes, *args, **kwargs)

    monkeypatch.setattr(phash, "scored_pairs", counting)
    return seen


def same(a, b) -> None:
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_cached_pairs_equal_the_search_and_a_hit_skips_it(hashes, tmp_path, calls):
    oracle = phash.scored_pairs(hashes)
    assert len(oracle[0]) >= 6  # the copies at least: the cache is not trivially empty
    cold = cached_scored_pairs(hashes, tmp_path)
    assert cache_path(tmp_path, hashes).is_file()
    warm = cached_scored_pairs(hashes, tmp_path)
    same(cold, oracle)
    same(warm, oracle)
    assert calls == [len(hashes), len(hashes)]  # the oracle and the cold call; the warm one read the file


def test_a_changed_fingerprint_list_misses_the_cache(hashes, tmp_path, calls):
    cached_scored_pairs(hashes, tmp_path)
    edited = hashes.copy()
    edited[3] = phash.fingerprint(np.fliplr(smooth_image(3)))  # one fingerprint changed
    reordered = hashes[1:] + hashes[:1]  # same fingerprints, other order: other indices
    for other in (edited, reordered, hashes[:-1]):
        assert cache_path(tmp_path, other) != cache_path(tmp_path, hashes)
        same(cached_scored_pairs(other, tmp_path), phash.scored_pairs(other))
    n = len(hashes)
    assert calls == [n, n, n, n, n, n - 1, n - 1]  # every cached call above searched (then its oracle)


def test_a_new_algorithm_version_misses_the_cache(hashes, tmp_path, monkeypatch, calls):
    cached_scored_pairs(hashes, tmp_path)
    old = cache_path(tmp_path, hashes)
    monkeypatch.setattr(pair_cache, "VERSION", pair_cache.VERSION + 1)
    assert cache_path(tmp_path, hashes) != old
    cached_scored_pairs(hashes, tmp_path)
    monkeypatch.setattr(pair_cache, "VERSION", pair_cache.VERSION - 1)
    monkeypatch.setattr(phash, "CANDIDATE", 0.95)
    assert cache_path(tmp_path, hashes) != old
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_count", "bad_indices"])
def test_a_damaged_cache_file_is_recomputed_with_a_warning(hashes, tmp_path, calls, caplog, damage):
    oracle = phash.scored_pairs(hashes)
    path = cache_path(tmp_path, hashes)
    cached_scored_pairs(hashes, tmp_path)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        i, j, score = oracle
        n = len(hashes) + 1 if damage == "other_count" else len(hashes)
        j = j if damage == "other_count" else j + len(hashes)
        with open(path, "wb") as fh:
            np.savez(fh, i=i, j=j, score=score, n=np.int64(n))
    with caplog.at_level(logging.WARNING, logger="cxrlib.data.pair_cache"):
        same(cached_scored_pairs(hashes, tmp_path), oracle)
    assert any(str(path) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert path.read_bytes() == good  # rewritten whole
    assert len(calls) == 3  # oracle, first write, the recomputation
    same(cached_scored_pairs(hashes, tmp_path), oracle)
    assert len(calls) == 3


def test_an_unwritable_cache_only_warns(hashes, tmp_path, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="cxrlib.data.pair_cache"):
        same(cached_scored_pairs(hashes, blocker), phash.scored_pairs(hashes))
    assert any("cannot write" in r.getMessage() for r in caplog.records)


def test_no_cache_dir_computes_every_time_and_writes_nothing(hashes, tmp_path, monkeypatch, calls):
    monkeypatch.chdir(tmp_path)
    oracle = phash.scored_pairs(hashes)
    same(cached_scored_pairs(hashes), oracle)
    same(cached_scored_pairs(hashes, None), oracle)
    assert len(calls) == 3 and not any(tmp_path.iterdir())


def test_assign_groups_reads_the_cache_only_when_given_a_folder(hashes, tmp_path, calls):
    n = len(hashes)
    frame = pd.DataFrame({
        "source": "syn", "patient_id": [f"p{k // 3}" if k < 6 else "" for k in range(n)],
        "sha256": [f"{k:02x}" * 32 for k in range(n)], "phash": hashes,
    })
    plain = assign_groups(frame, 0.98)
    assert plain.nunique() == 8  # patients p0, p1 and 6 images without one; the copies join their originals
    assert calls == [n]
    cold = assign_groups(frame, 0.98, cache_dir=tmp_path)
    warm = assign_groups(frame, 0.98, cache_dir=tmp_path)
    strict = assign_groups(frame, 0.99999, cache_dir=tmp_path)  # the threshold is applied after the cache
    assert calls == [n, n]
    assert plain.equals(cold) and plain.equals(warm)
    assert strict.nunique() > plain.nunique() and strict.equals(assign_groups(frame, 0.99999))
    assert len(list((tmp_path / pair_cache.FOLDER).glob("*.npz"))) == 1  # (and its lock file)


def test_a_job_asking_while_another_computes_waits_and_reads_its_result(hashes, tmp_path, calls):
    import threading

    from filelock import FileLock

    path = cache_path(tmp_path, hashes)
    path.parent.mkdir(parents=True)
    other_job = FileLock(str(path.with_suffix(".lock")))
    other_job.acquire()  # another job is searching these fingerprints
    got = []
    waiter = threading.Thread(target=lambda: got.append(cached_scored_pairs(hashes, tmp_path)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got  # it waits instead of searching too
    cached_scored_pairs(hashes, tmp_path / "elsewhere")  # the other job's search ...
    (tmp_path / "elsewhere" / pair_cache.FOLDER / path.name).replace(path)  # ... and its write
    calls.clear()
    other_job.release()
    waiter.join(30)
    same(got[0], phash.scored_pairs(hashes))
    assert calls == [len(hashes)]  # only the oracle just above: the waiting job read the file
