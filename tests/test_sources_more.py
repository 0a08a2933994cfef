"""Legacy-encoded metadata, one failing source among good ones, and the newer native layouts."""

from pathlib import Path

import pytest

from cxrlib.data.sources import discover
from cxrlib.data.sources import cohen, csvfile, generic
from cxrlib.errors import DataError
from fakes import make_kermany, write_image


def _write_cohen(repo: Path, text: str, encoding: str) -> Path:
    (repo / "images").mkdir(parents=True, exist_ok=True)
    (repo / "metadata.csv").write_bytes(text.encode(encoding))
    return repo


COHEN_CSV = "patientid,finding,view,modality,filename,clinical_notes\n1,COVID-19,PA,X-ray,a.png,patient\u2019s cough\n"


# ------------------------------------------------------------------------------------------ encodings


def test_cp1252_metadata_with_0x92_is_read_with_a_warning(tmp_path):
    repo = _write_cohen(tmp_path / "cohen", COHEN_CSV, "cp1252")
    assert b"\x92" in (repo / "metadata.csv").read_bytes()
    write_image(repo / "images" / "a.png")
    table = cohen.read(repo)
    assert list(table["label"]) == ["covid19"]
    assert table.attrs["warnings"] == [f"{repo / 'metadata.csv'}: not valid UTF-8, read as cp1252"]


def test_utf8_bom_metadata_reads_the_first_column_without_warning(tmp_path):
    repo = _write_cohen(tmp_path / "cohen", COHEN_CSV, "utf-8-sig")
    write_image(repo / "images" / "a.png")
    table = cohen.read(repo)
    assert list(table["patient_id"]) == ["1"] and table.attrs["warnings"] == []


def test_byte_undefined_in_cp1252_falls_back_to_latin1(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"a,b\n1,x\x81y\n")  # 0x81 is unassigned in cp1252
    frame = csvfile.read_metadata_csv(path)
    assert frame["b"].tolist() == ["x\x81y"]
    assert frame.attrs["warnings"] == [f"{path}: not valid UTF-8, read as latin-1"]


def test_cp1252_manifest_is_detected_and_read(tmp_path):
    folder = tmp_path / "site"
    write_image(folder / "caf\u00e9.png")
    (folder / "labels.csv").write_bytes("path,label\ncaf\u00e9.png,normal\n".encode("cp1252"))
    assert [p.name for p in generic.manifest_files(folder)] == ["labels.csv"]
    table = discover(tmp_path)
    assert Path(table["path"][0]).name == "caf\u00e9.png"
    (entry,) = table.attrs["sources"]
    assert entry["warnings"] == [f"{folder / 'labels.csv'}: not valid UTF-8, read as cp1252"]


def test_pick_column_ignores_case_spaces_and_underscores():
    assert csvfile.pick_column(["Image Index", "Patient ID"], "image_index") == "Image Index"
    assert csvfile.pick_column(["a"], "b", "A") == "a"
    assert csvfile.pick_column(["a"], "b") is None


# ------------------------------------------------------------------------------------ failing source


def test_one_broken_source_costs_only_itself(tmp_path):
    make_kermany(tmp_path, {"NORMAL": ["IM-0001-0001.jpeg"], "PNEUMONIA": ["person1_virus_6.jpeg"]}, top="kermany")
    write_image(tmp_path / "site_b" / "normal" / "n.png")
    broken = tmp_path / "broken_cohen"
    (broken / "images").mkdir(parents=True)
    (broken / "metadata.csv").write_text("patientid,filename\n1,a.png\n")  # no finding column
    table = discover(tmp_path)
    assert set(table["source"]) == {"kermany", "site_b"}
    assert sorted(r["reader"] for r in table.attrs["sources"]) == ["class_folders", "kermany"]
    (failure,) = table.attrs["failed"]
    assert failure["reader"] == "cohen" and failure["folder"] == str(broken)
    assert "metadata.csv" in failure["reason"] and "finding" in failure["reason"]


def test_every_source_failing_is_an_error_listing_them(tmp_path):
    broken = tmp_path / "broken_cohen"
    (broken / "images").mkdir(parents=True)
    (broken / "metadata.csv").write_bytes(b"")  # empty file
    with pytest.raises(DataError, match=r"no data source could be read \(cohen at .*broken_cohen: .*metadata"):
        discover(tmp_path)
