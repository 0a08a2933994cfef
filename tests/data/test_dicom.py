"""DICOM decoding: expected 8-bit images are computed here with numpy from the written pixel arrays."""

import importlib.util
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pydicom")

from cxrlib.data import dicom, scan  # noqa: E402
from cxrlib.data.images import decode_gray  # noqa: E402
from cxrlib.data.sources import generic  # noqa: E402
from cxrlib.errors import DataError  # noqa: E402
from support.fake_dicom import write_dicom  # noqa: E402

RNG = np.random.default_rng(7)
RAW12 = RNG.integers(100, 3900, size=(24, 32)).astype(np.uint16)  # 12 bits stored in 16


def _minmax(values):
    values = values.astype(np.float64)
    return np.round((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


def _linear_window(values, center, width):
    # DICOM PS3.3 C.11.2.1.2.1: the window runs from c - 0.5 - (w-1)/2 to c - 0.5 + (w-1)/2.
    bottom = center - 0.5 - (width - 1) / 2
    return np.round(np.clip((values - bottom) / (width - 1), 0, 1) * 255).astype(np.uint8)


def test_monochrome2_8bit_is_unchanged(tmp_path):
    arr = RNG.integers(0, 256, size=(10, 12)).astype(np.uint8)
    out = decode_gray(write_dicom(tmp_path / "a.dcm", arr))
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_12bit_without_window_is_minmax_scaled(tmp_path):
    out = decode_gray(write_dicom(tmp_path / "a.dcm", RAW12, bits_stored=12))
    assert np.array_equal(out, _minmax(RAW12))


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    out = decode_gray(write_dicom(tmp_path / "a.dcm", RAW12, photometric="MONOCHROME1", bits_stored=12))
    assert np.array_equal(out, 255 - _minmax(RAW12))


def test_window_centre_width_clips_outside_the_window(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW12, bits_stored=12, WindowCenter=2000, WindowWidth=1001)
    out = decode_gray(path)
    assert np.array_equal(out, _linear_window(RAW12, 2000, 1001))
    assert out[RAW12 < 1499].max() == 0 and out[RAW12 > 2499].min() == 255


def test_multivalued_window_uses_the_first(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW12, bits_stored=12, WindowCenter=[1500, 3000], WindowWidth=[2001, 10])
    assert np.array_equal(decode_gray(path), _linear_window(RAW12, 1500, 2001))


def test_rescale_slope_intercept_before_the_window(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW12, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=3000, WindowWidth=4001)
    assert np.array_equal(decode_gray(path), _linear_window(RAW12 * 2.0 - 1000, 3000, 4001))


def test_rescale_without_window_and_monochrome1_with_window(tmp_path):
    arr = RNG.integers(0, 200, size=(8, 8)).astype(np.uint8)
    out = decode_gray(write_dicom(tmp_path / "a.dcm", arr, RescaleSlope=-1, RescaleIntercept=100))
    assert np.array_equal(out, _minmax(arr * -1.0 + 100))  # values leave 0..255: min-max of rescaled data
    path = write_dicom(tmp_path / "b.dcm", RAW12, photometric="MONOCHROME1", bits_stored=12,
                       WindowCenter=2000, WindowWidth=1001)
    assert np.array_equal(decode_gray(path), 255 - _linear_window(RAW12, 2000, 1001))


def test_dicom_recognised_by_magic_without_extension(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW12, bits_stored=12)
    shutil.copy(path, tmp_path / "IMG0001")
    assert dicom.is_dicom(tmp_path / "IMG0001")
    assert np.array_equal(decode_gray(tmp_path / "IMG0001"), _minmax(RAW12))


def test_multi_frame_and_no_pixel_data_are_data_errors(tmp_path):
    stack = np.stack([RAW12, RAW12])
    with pytest.raises(DataError, match=r"multi\.dcm: multi-frame DICOM \(2 frames\)"):
        decode_gray(write_dicom(tmp_path / "multi.dcm", stack, bits_stored=12, frames=2))
    with pytest.raises(DataError, match=r"report\.dcm: DICOM without pixel data"):
        decode_gray(write_dicom(tmp_path / "report.dcm", None))


def test_not_a_dicom_file_with_dcm_extension(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"this is no dicom at all" * 10)
    with pytest.raises(DataError, match=r"x\.dcm: "):
        decode_gray(tmp_path / "x.dcm")


_JPEG_LS_PLUGINS = ("libjpeg", "jpeg_ls", "gdcm")


@pytest.mark.skipif(any(importlib.util.find_spec(m) for m in _JPEG_LS_PLUGINS), reason="a JPEG-LS plugin is installed")
def test_compressed_without_plugin_names_the_plugin(tmp_path):
    from pydicom.uid import JPEGLSLossless

    path = write_dicom(tmp_path / "c.dcm", RAW12, bits_stored=12, transfer_syntax=JPEGLSLossless,
                       encapsulated=b"\xff\xd8\xff\xf7 not really jpeg-ls \xff\xd9")
    with pytest.raises(DataError, match=r"c\.dcm: compressed DICOM \(JPEG-LS Lossless.*pip install pylibjpeg"):
        decode_gray(path)


def test_dicom_info_reads_the_header(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RAW12, photometric="MONOCHROME1", bits_stored=12, ViewPosition="LL")
    info = dicom.dicom_info(path)
    assert info == {"view_position": "LL", "photometric": "MONOCHROME1", "frames": 1, "modality": "CR",
                    "transfer_syntax": "Explicit VR Little Endian"}


def test_scan_lists_unusable_dicoms_in_the_quality_table(tmp_path):
    folder = tmp_path / "site" / "normal"
    good = write_dicom(folder / "good.dcm", RAW12, bits_stored=12)
    write_dicom(folder / "multi.dcm", np.stack([RAW12] * 3), bits_stored=12, frames=3)
    write_dicom(folder / "sr.dcm", None)
    table = generic.read_class_folders(tmp_path / "site")
    assert sorted(p.rsplit("/", 1)[1] for p in table["path"]) == ["good.dcm", "multi.dcm", "sr.dcm"]
    scanned, quality = scan.scan_table(table, tmp_path / "cache", resize=16)
    assert list(scanned["path"]) == [str(good)] and scanned["width"][0] == 32
    reasons = dict(zip(pd.Series(quality["path"]).str.rsplit("/", n=1).str[1], quality["reason"]))
    assert reasons == {"multi.dcm": "multi-frame DICOM (3 frames), not a single radiograph",
                       "sr.dcm": "DICOM without pixel data (not an image object)"}


def _voi_lut_sequence(first_mapped: int, lut: np.ndarray):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [len(lut), first_mapped, 16]
    item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUTData as US (OW needs raw bytes)
    return Sequence([item])


def test_voi_lut_sequence_maps_through_the_table_then_to_8_bits(tmp_path):
    """A VOI LUT table (here a gamma-like curve over 0..4095) wins over any window; values below the first mapped
    value take the first entry, above the last the last (PS3.3 C.11.2.1.1)."""
    first, n = 500, 3000
    lut = np.round(4095 * (np.arange(n) / (n - 1)) ** 0.5).astype(np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", RAW12, bits_stored=12, WindowCenter=2000, WindowWidth=100,
                       VOILUTSequence=_voi_lut_sequence(first, lut))
    mapped = lut[np.clip(RAW12.astype(np.int64) - first, 0, n - 1)]
    assert np.array_equal(decode_gray(path), _minmax(mapped))


def test_monochrome1_with_a_voi_lut_is_inverted_after_the_table(tmp_path):
    first, n = 0, 4096
    lut = np.round(4095 * (np.arange(n) / (n - 1)) ** 2).astype(np.uint16)
    path = write_dicom(tmp_path / "lut1.dcm", RAW12, photometric="MONOCHROME1", bits_stored=12,
                       VOILUTSequence=_voi_lut_sequence(first, lut))
    assert np.array_equal(decode_gray(path), 255 - _minmax(lut[RAW12]))
