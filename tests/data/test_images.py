import numpy as np
import pytest
from PIL import Image

from cxrlib.data.images import ImageCache, decode_gray, file_sha256, load_images, resize_square
from cxrlib.errors import DataError


@pytest.fixture
def gradient():
    return np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64


def test_png_8bit_and_jpeg(tmp_path, gradient):
    Image.fromarray(gradient).save(tmp_path / "g.png")
    assert np.array_equal(decode_gray(tmp_path / "g.png"), gradient)
    Image.fromarray(gradient).save(tmp_path / "g.jpg", quality=95)
    assert np.abs(decode_gray(tmp_path / "g.jpg").astype(int) - gradient).max() <= 8


def test_png_16bit_is_scaled_to_full_range(tmp_path):
    arr = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0..4092, 12-bit data
    Image.fromarray(arr).save(tmp_path / "w.png")
    out = decode_gray(tmp_path / "w.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_modes_become_gray(tmp_path, gradient, mode):
    img = Image.fromarray(gradient).convert(mode)
    img.save(tmp_path / "c.png")
    out = decode_gray(tmp_path / "c.png")
    assert out.shape == gradient.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - gradient).max() <= 2


def test_exif_orientation_applied(tmp_path, gradient):
    img = Image.fromarray(gradient)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert decode_gray(tmp_path / "r.jpg").shape == (64, 48)


def test_bad_files_name_file_and_reason(tmp_path, gradient):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(gradient).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(gradient).save(tmp_path / "ok.png")
    png = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(png[: len(png) - 30])
    for name, reason in [("zero.png", "zero-byte"), ("text.png", "not an image"), ("trunc.jpg", "truncated"),
                         ("trunc.png", "corrupt"), ("missing.png", "cannot read")]:
        with pytest.raises(DataError) as err:
            decode_gray(tmp_path / name)
        assert name in str(err.value) and reason in str(err.value)


def test_cache_decodes_once_and_rebuilds_damaged_entries(tmp_path, gradient, monkeypatch):
    path = tmp_path / "g.png"
    Image.fromarray(gradient).save(path)
    sha = file_sha256(path)
    first = load_images([str(path)], [sha], 16, tmp_path / "cache")
    assert first.shape == (1, 16, 16)
    assert np.array_equal(first[0], resize_square(gradient, 16))

    import cxrlib.data.images as images

    monkeypatch.setattr(images, "decode_gray", lambda p: pytest.fail("cache miss: decoded again"))
    assert np.array_equal(load_images([str(path)], [sha], 16, tmp_path / "cache"), first)
    monkeypatch.undo()

    cache = ImageCache(tmp_path / "cache", 16)
    cache.path_for(sha).write_bytes(b"garbage")
    assert np.array_equal(cache.get(sha, path), first[0])


def test_cache_miss_refuses_a_file_whose_content_changed(tmp_path, gradient):
    path = tmp_path / "g.png"
    Image.fromarray(gradient).save(path)
    old = file_sha256(path)
    Image.fromarray(255 - gradient).save(path)  # replaced after the splits were made
    with pytest.raises(DataError, match="content changed"):
        load_images([str(path)], [old], 16, tmp_path / "cache")
    assert not ImageCache(tmp_path / "cache", 16).path_for(old).exists()
