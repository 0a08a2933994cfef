"""Near-duplicate fingerprints: edited copies match, distinct images do not, chunked search, formats, audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from bench.dedup_recall import EDITS
from cxrlib.__main__ import main
from cxrlib.config import DataConfig, config_from_dict
from cxrlib.data import images
from cxrlib.data.align import aligned_correlation, smoothed
from cxrlib.data.phash import (
    CANDIDATE,
    GRID,
    HEX_LEN,
    _block_similarity,
    _mirrored,
    candidate_pairs,
    check_threshold,
    fingerprint,
    fingerprint_grids,
    fingerprint_views,
    near_duplicate_pairs,
    similarity,
    trim_borders,
)
from cxrlib.data.scan import index_path, read_index, scan_table
from cxrlib.data.splits import SPLIT_COLUMNS, audit, write_splits
from cxrlib.data.table import new_table
from cxrlib.errors import ConfigError, DataError

THRESHOLD = DataConfig.near_duplicate_threshold


def smooth_image(seed: int, size: int = 160) -> np.ndarray:
    """A smooth random gray field (8 x 8 random values, bicubic-upsampled): not an X-ray, but with structure."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return np.asarray(field.resize((size, size), Image.BICUBIC))


@pytest.mark.parametrize("edit", EDITS, ids=[e.__name__ for e in EDITS])
def test_each_edit_is_matched_to_its_original(edit):
    rng = np.random.default_rng(0)
    sims = np.array([similarity(fingerprint(g), fingerprint(edit(g, rng))) for g in map(smooth_image, range(20))])
    assert np.mean(sims >= THRESHOLD) >= 0.9, np.sort(sims)[:5]


def test_distinct_images_are_not_matched():
    hashes = [fingerprint(smooth_image(s)) for s in range(40)]
    i, _ = near_duplicate_pairs(hashes, THRESHOLD)
    assert len(i) == 0


def test_chunked_search_equals_brute_force():
    base = [smooth_image(s, 64) for s in range(25)]
    rng = np.random.default_rng(3)
    copies = [EDITS[k % len(EDITS)](base[k], rng) for k in range(0, 25, 3)]
    hashes = [fingerprint(g) for g in base + copies]
    views = fingerprint_views(hashes)
    full = _block_similarity(views, _mirrored(views), 0, len(hashes))
    full = np.maximum(full, full.T)
    expected = {(i, j) for i, j in zip(*np.nonzero(full >= CANDIDATE)) if i < j}
    i, j, _ = candidate_pairs(views, chunk=7)  # odd chunk: pairs across chunk borders
    assert set(zip(i.tolist(), j.tolist())) == expected
    i, j = near_duplicate_pairs(hashes, THRESHOLD, chunk=7)
    assert set(zip(i.tolist(), j.tolist())) == set(zip(*near_duplicate_pairs(hashes, THRESHOLD)))
    assert set(zip(i.tolist(), j.tolist())) <= expected
    assert len(i) >= len(copies) * 0.9


def test_alignment_lines_up_shifted_scaled_rotated_copies():
    g = smooth_image(5, 256)
    img = Image.fromarray(g)
    moved = [
        np.asarray(img.rotate(3, Image.BILINEAR, expand=False).crop((8, 8, 248, 248))),
        np.asarray(img.crop((0, 12, 244, 256)).resize((300, 280), Image.BILINEAR)),
    ]
    hashes = [fingerprint(g)] + [fingerprint(m) for m in moved] + [fingerprint(smooth_image(6, 256))]
    grids = smoothed(fingerprint_grids(hashes), GRID)
    score = aligned_correlation(grids, np.array([0, 0, 0]), np.array([1, 2, 3]), np.zeros(3, dtype=bool))
    assert (score[:2] >= THRESHOLD).all() and score[2] < THRESHOLD, score


def test_alignment_in_worker_processes_scores_as_alone(monkeypatch):
    from cxrlib.data import align

    hashes = [fingerprint(smooth_image(s, 64)) for s in range(12)]
    grids = smoothed(fingerprint_grids(hashes), GRID)
    i, j = np.triu_indices(len(hashes), 1)
    mirror = (i + j) % 3 == 0
    monkeypatch.setattr(align, "CHUNK", 5)  # 66 pairs: 14 batches, split over the workers
    alone = aligned_correlation(grids, i, j, mirror)
    assert np.array_equal(aligned_correlation(grids, i, j, mirror, workers=3), alone)
    assert align._SHARED is None  # the arrays handed to the forked workers are released


def test_pad_around_an_own_frame_is_trimmed():
    g = np.pad(smooth_image(7, 200), ((0, 0), (12, 0)), constant_values=0)  # the image's own black frame
    padded = np.pad(g, ((6, 4), (5, 8)), constant_values=255)  # a white pad around it
    assert trim_borders(padded).shape == trim_borders(g).shape == (200, 200)


def test_chain_guard_stops_snowballing():
    from cxrlib.data.splits import CHAIN_SIZE, _guarded

    n = 8  # a chain 0-1-2-...-7 of pairs just above the threshold, plus one near-exact pair (6, 7)
    i, j = np.arange(n - 1), np.arange(1, n)
    score = np.full(n - 1, 0.9955)
    score[-1] = 0.9999
    ki, kj = _guarded(np.arange(n), i, j, score, 0.995)
    comp = connected_components(coo_matrix((np.ones(len(ki)), (ki, kj)), shape=(n, n)), directed=False)[1]
    assert np.bincount(comp).max() <= CHAIN_SIZE
    assert comp[6] == comp[7]


def test_fingerprint_serialises_as_hex_and_round_trips():
    h = fingerprint(smooth_image(1))
    assert len(h) == HEX_LEN and int(h, 16) >= 0
    levels = fingerprint_grids([h, h.upper()])
    assert levels.shape == (2, HEX_LEN) and (levels[0] == levels[1]).all()
    assert "".join("0123456789abcdef"[int(v)] for v in levels[0]) == h
    assert similarity(h, h) == pytest.approx(1.0, abs=1e-5)


def test_bad_or_old_hashes_are_data_errors():
    with pytest.raises(DataError, match=f"{HEX_LEN} hex.*older version"):
        fingerprint_grids(["0" * 64])  # a dHash of an older scan
    with pytest.raises(DataError, match="not hexadecimal"):
        fingerprint_grids(["z" * HEX_LEN])


def test_threshold_must_be_a_correlation():
    assert check_threshold(0.9) == 0.9
    for bad in (10, 0, 1.5, True):
        with pytest.raises(ValueError, match="threshold"):
            check_threshold(bad)
    with pytest.raises(ConfigError, match="data.near_duplicate_threshold"):
        config_from_dict({"data": {"near_duplicate_threshold": 10}})
    with pytest.raises(ConfigError, match="near_duplicate_bits"):
        config_from_dict({"data": {"near_duplicate_bits": 10}})


def test_old_format_hashes_in_the_scan_index_are_recomputed(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / "img" / f"im{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(i, 48)).save(p)
        paths.append(str(p))
    table = new_table([{"path": p, "label": "normal", "source": "s", "patient_id": "", "mask_path": ""} for p in paths])
    cache = tmp_path / "cache"
    scan_table(table, cache, resize=32)
    index = read_index(cache, 32)
    index["phash"] = "0" * 64  # as written by the dHash version
    index.to_csv(index_path(cache, 32), index=False)
    scanned, _ = scan_table(table, cache, resize=32)
    assert scanned["phash"].tolist() == [fingerprint(images.decode_gray(p)) for p in paths]
    assert (read_index(cache, 32)["phash"].str.len() == HEX_LEN).all()


# --------------------------------------------------------------------------- audit


def _splits(rows: list[dict]) -> pd.DataFrame:
    base = {"label": "normal", "target": "normal", "mask_path": "", "width": 64, "height": 64}
    frame = pd.DataFrame([{**base, **r} for r in rows])
    return frame[list(SPLIT_COLUMNS)]


def test_same_patient_in_two_folds_fails_the_audit():
    rows = [{"path": f"/p{i}", "source": "kermany", "patient_id": f"p{i}", "group": f"g{i}", "fold": i % 3,
             "sha256": f"{i:064x}", "phash": fingerprint(smooth_image(i, 48))} for i in range(6)]
    clean = _splits(rows)
    assert audit(clean).ok and audit(clean).unknown_patient_share == 0.0
    leak = _splits(rows + [{**rows[0], "path": "/p0b", "group": "other", "fold": 1, "sha256": "f" * 64,
                            "phash": fingerprint(smooth_image(99, 48))}])
    report = audit(leak)
    assert not report.ok and any("patient kermany:p0" in p for p in report.problems)


def test_audit_reports_the_share_of_unknown_patients():
    rows = [{"path": f"/p{i}", "source": "db", "patient_id": "" if i < 2 else f"p{i}", "group": f"g{i}",
             "fold": i % 3, "sha256": f"{i:064x}", "phash": fingerprint(smooth_image(i, 48))} for i in range(8)]
    report = audit(_splits(rows))
    assert report.ok and report.unknown_patient_share == pytest.approx(0.25)
    assert any("25.0% of images have no patient id" in n for n in report.notes)


def test_audit_cli_uses_the_threshold_from_params(tmp_path):
    original = smooth_image(0, 64)
    copy = EDITS[0](original, np.random.default_rng(1))  # a cropped copy
    sim = similarity(fingerprint(original), fingerprint(copy))
    rows = [{"path": f"/p{i}", "source": "db", "patient_id": "", "group": f"g{i}", "fold": i % 3,
             "sha256": f"{i:064x}", "phash": fingerprint(smooth_image(10 + i, 64))} for i in range(6)]
    rows += [{"path": "/orig", "source": "db", "patient_id": "", "group": "a", "fold": 0, "sha256": "a" * 64,
              "phash": fingerprint(original)},
             {"path": "/copy", "source": "db", "patient_id": "", "group": "b", "fold": 1, "sha256": "b" * 64,
              "phash": fingerprint(copy)}]
    out = tmp_path / "splits.csv"
    write_splits(out, _splits(rows))
    assert main(["audit", str(out), "--set", f"data.near_duplicate_threshold={sim - 0.01:.4f}"]) == 1
    assert main(["audit", str(out), "--set", f"data.near_duplicate_threshold={min(1.0, sim + 0.01):.4f}"]) == 0
