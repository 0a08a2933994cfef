"""discover() over the real development data must find exactly what dev_manifest.csv lists."""

from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data.sources import discover, summarize

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not (SHARED / "dev_manifest.csv").is_file(), reason=f"shared data absent ({SHARED})"),
]


@pytest.fixture(scope="module")
def found():
    return discover(SHARED)


@pytest.fixture(scope="module")
def manifest():
    frame = pd.read_csv(SHARED / "dev_manifest.csv", dtype=str, keep_default_na=False)
    frame["path"] = [str(SHARED.resolve() / p) for p in frame["path"]]
    return frame.sort_values("path").reset_index(drop=True)


def test_same_images_labels_and_patients_as_the_manifest(found, manifest):
    assert len(found) == len(manifest) == 6286
    cols = ["path", "label", "patient_id"]
    pd.testing.assert_frame_equal(found[cols].reset_index(drop=True), manifest[cols], check_dtype=False)


def test_each_manifest_source_maps_to_one_reader_source(found, manifest):
    pairs = set(zip(manifest["source"], found["source"]))
    assert pairs == {("covid19_radiography_database", "covid19_radiography_database"), ("kermany_chest_xray", "kermany")}


def test_summary_and_report(found):
    counts = summarize(found)
    assert counts.loc["kermany", "viral_pneumonia"] == 1345
    assert counts.loc["covid19_radiography_database", "covid19"] == 1500
    assert sorted(r["reader"] for r in found.attrs["sources"]) == ["covid19_radiography_database", "kermany"]
    assert set(found["mask_path"]) == {""}
