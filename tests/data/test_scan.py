"""Scanning images (hashes, sizes, cache, quality table, scan index)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.data import images
from cxrlib.data.phash import fingerprint
from cxrlib.data.scan import index_path, scan_table
from cxrlib.data.table import SCAN_COLUMNS, SOURCE_COLUMNS, new_table
from cxrlib.errors import DataError

def smooth_image(seed: int, size: int = 128) -> np.ndarray:
    """A smooth random gray image (a 6 x 6 random field, bicubic-upsampled)."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8))
    return np.asarray(field.resize((size, size), Image.BICUBIC))


def resized(gray: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(gray).resize((w, h), Image.BILINEAR))


def write_images(tmp_path, n: int, size: int = 48) -> list[str]:
    paths = []
    for i in range(n):
        p = tmp_path / "img" / f"im{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(i, size)).save(p)
        paths.append(str(p))
    return paths


def table_for(paths: list[str], label: str = "normal") -> pd.DataFrame:
    return new_table([{"path": p, "label": label, "source": "synthetic", "patient_id": "", "mask_path": ""} for p in paths])


# The fingerprint itself (edits, chunked search, old formats) is tested in test_dedup.py.


# --------------------------------------------------------------------------- scan


def test_scan_adds_columns_and_fills_cache(tmp_path):
    paths = write_images(tmp_path, 3)
    jpg = tmp_path / "img" / "wide.jpg"
    Image.fromarray(resized(smooth_image(7), 60, 40)).save(jpg, quality=90)
    paths.append(str(jpg))
    cache = tmp_path / "cache"
    scanned, quality = scan_table(table_for(paths), cache, resize=32)
    assert list(scanned.columns) == list(SOURCE_COLUMNS) + list(SCAN_COLUMNS)
    assert scanned["path"].tolist() == paths and quality.empty
    assert scanned.loc[3, ["width", "height"]].tolist() == [60, 40]
    store = images.ImageCache(cache, 32)
    for row in scanned.itertuples():
        assert row.sha256 == images.file_sha256(row.path)
        assert row.phash == fingerprint(images.decode_gray(row.path))
        arr = np.load(store.path_for(row.sha256))
        assert arr.shape == (32, 32) and arr.dtype == np.uint8
    assert index_path(cache, 32).exists()


def test_bad_files_go_to_the_quality_table(tmp_path):
    good = write_images(tmp_path, 2)
    folder = tmp_path / "img"
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "corrupt.png").write_bytes(os.urandom(500))
    whole = (folder / "im000.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    bad = [str(folder / n) for n in ("zero.png", "text.png", "corrupt.png", "truncated.png", "missing.png")]
    table = table_for([good[0], *bad, good[1]])
    scanned, quality = scan_table(table, tmp_path / "cache", resize=32)
    assert scanned["path"].tolist() == good
    reasons = dict(zip(quality["path"], quality["reason"]))
    assert set(reasons) == set(bad)
    assert reasons[bad[0]] == "zero-byte file"
    assert reasons[bad[1]] == "not an image file"
    assert "truncated" in reasons[bad[3]] or "corrupt" in reasons[bad[3]]
    assert "cannot read" in reasons[bad[4]]
    assert not any(r.startswith(str(folder)) for r in reasons.values())  # the path is a column, not repeated


def test_second_scan_reads_the_index_not_the_images(tmp_path, monkeypatch):
    paths = write_images(tmp_path, 4)
    (tmp_path / "img" / "zero.png").write_bytes(b"")
    table = table_for(paths + [str(tmp_path / "img" / "zero.png")])
    first, q1 = scan_table(table, tmp_path / "cache", resize=32)

    def boom(*_a, **_k):
        raise AssertionError("decoded or hashed again")

    monkeypatch.setattr(images, "decode_gray", boom)
    monkeypatch.setattr(images, "file_sha256", boom)
    second, q2 = scan_table(table, tmp_path / "cache", resize=32)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(q1, q2)


def test_changed_file_or_lost_cache_entry_is_rescanned(tmp_path):
    paths = write_images(tmp_path, 3)
    cache = tmp_path / "cache"
    first, _ = scan_table(table_for(paths), cache, resize=32)
    Image.fromarray(smooth_image(99, 48)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # a new mtime even on coarse clocks
    images.ImageCache(cache, 32).path_for(first.loc[1, "sha256"]).unlink()
    second, _ = scan_table(table_for(paths), cache, resize=32)
    assert second.loc[0, "sha256"] == images.file_sha256(paths[0]) != first.loc[0, "sha256"]
    assert images.ImageCache(cache, 32).path_for(first.loc[1, "sha256"]).exists()
    assert second.loc[2, "sha256"] == first.loc[2, "sha256"]


def test_damaged_index_is_rebuilt(tmp_path):
    paths = write_images(tmp_path, 2)
    cache = tmp_path / "cache"
    first, _ = scan_table(table_for(paths), cache, resize=32)
    index_path(cache, 32).write_text("garbage,\n1,2,3\n")
    second, _ = scan_table(table_for(paths), cache, resize=32)
    pd.testing.assert_frame_equal(first, second)


def test_process_pool_matches_serial_scan(tmp_path):
    paths = write_images(tmp_path, 70, size=32)
    (tmp_path / "img" / "zero.png").write_bytes(b"")
    table = table_for(paths + [str(tmp_path / "img" / "zero.png")])
    serial, q1 = scan_table(table, tmp_path / "c1", resize=16, workers=1)
    pooled, q2 = scan_table(table, tmp_path / "c2", resize=16, workers=2)
    pd.testing.assert_frame_equal(serial, pooled)
    pd.testing.assert_frame_equal(q1, q2)
    assert len(list((tmp_path / "c2" / "16").rglob("*.npy"))) == 70


def test_scan_rejects_a_table_without_source_columns(tmp_path):
    with pytest.raises(DataError, match="missing columns"):
        scan_table(pd.DataFrame({"path": []}), tmp_path, resize=32)
