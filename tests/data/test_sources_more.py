"""Legacy-encoded metadata, one failing source among good ones, and the newer native layouts."""

from pathlib import Path

import pytest

from cxrlib.data.sources import discover
from cxrlib.data.sources import cohen, csvfile, dicom_labels, find_sources, generic, hannover, nih, rsna
from cxrlib.errors import DataError
from support.fakes import make_kermany, make_manifest, write_image


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


# ---------------------------------------------------------------------------------------- Hannover


def _write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_hannover_frontal_covid_rows_with_patients(tmp_path):
    repo = tmp_path / "covid-19-image-repository"
    _write_csv(repo / "data.csv", "patient_id,image_id,sex,age,modality,projection,crp_val\n"
               "042f06a9,b343e657,m,,CR,ap,5.0\n"
               "042f06a9,c9280a30,m,,CR,ap,38.0\n"
               "09ec853d,2168a917,m,,DX,pa,44.0\n"
               "09ec853d,aaaa0001,m,,DX,ll,1.0\n"
               "09ec853d,aaaa0002,m,,CT,ax,1.0\n"
               "0a359802,deadbeef,f,,CR,ap,1.0\n")  # image not downloaded
    for i, name in enumerate(["b343e657", "c9280a30", "2168a917", "aaaa0001", "aaaa0002"]):
        write_image(repo / "png" / f"{name}.png", value=i)
    assert hannover.detect(repo) and not hannover.detect(repo / "png")
    table = hannover.read(repo)
    assert sorted(Path(p).stem for p in table["path"]) == ["2168a917", "b343e657", "c9280a30"]
    assert set(table["label"]) == {"covid19"} and set(table["source"]) == {"hannover"}
    assert sorted(set(table["patient_id"])) == ["042f06a9", "09ec853d"]
    assert table.attrs["dropped"] == {"modality": 1, "view": 1, "duplicate": 0}
    assert table.attrs["skipped"] == 1


def test_hannover_tolerates_other_column_spellings(tmp_path):
    repo = tmp_path / "hannover"
    _write_csv(repo / "data.csv", "Patient ID,Image,View\np1,x1,PA\n")
    write_image(repo / "png" / "x1.png")
    table = hannover.read(repo)
    assert list(table["patient_id"]) == ["p1"]


# --------------------------------------------------------------------------------------------- NIH


NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def test_nih_labels_views_patients_and_split_image_folders(tmp_path):
    root = tmp_path / "nih"
    _write_csv(root / "Data_Entry_2017_v2020.csv", NIH_HEADER +
               "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143\n"
               "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143\n"
               "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171\n"
               "00000003_000.png,Pneumonia,0,3,74,F,AP,2500,2048,0.168,0.168\n"
               "00000003_001.png,No Finding,1,3,74,F,LL,2500,2048,0.168,0.168\n"
               "00000004_000.png,No Finding,0,4,80,F,PA,2500,2048,0.168,0.168\n")  # part not downloaded
    write_image(root / "images_001" / "images" / "00000001_000.png")
    write_image(root / "images_001" / "images" / "00000001_001.png", value=1)
    write_image(root / "images_002" / "images" / "00000002_000.png", value=2)
    write_image(root / "images" / "00000003_000.png", value=3)
    write_image(root / "images" / "00000003_001.png", value=4)
    assert nih.detect(root)
    table = nih.read(root)
    labels = {Path(p).name: (lab, pid) for p, lab, pid in zip(table["path"], table["label"], table["patient_id"])}
    assert labels == {"00000001_000.png": ("other", "1"), "00000001_001.png": ("other", "1"),
                      "00000002_000.png": ("normal", "2"), "00000003_000.png": ("other", "3")}
    assert table.attrs["dropped"]["view"] == 1 and table.attrs["skipped"] == 1
    assert set(table["source"]) == {"nih_chestxray14"}


def test_nih_needs_entry_csv_and_image_folder(tmp_path):
    _write_csv(tmp_path / "Data_Entry_2017.csv", NIH_HEADER)
    assert not nih.detect(tmp_path)
    (tmp_path / "images_003").mkdir()
    assert nih.detect(tmp_path)


# -------------------------------------------------------------------------------------------- RSNA


def _rsna(root: Path, with_classes: bool) -> Path:
    _write_csv(root / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target\n"
               "aaa,264.0,152.0,213.0,379.0,1\n"
               "aaa,562.0,152.0,256.0,453.0,1\n"
               "bbb,,,,,0\n"
               "ccc,,,,,0\n"
               "ddd,,,,,0\n")  # image missing
    if with_classes:
        _write_csv(root / "stage_2_detailed_class_info.csv", "patientId,class\n"
                   "aaa,Lung Opacity\naaa,Lung Opacity\nbbb,Normal\nccc,No Lung Opacity / Not Normal\nddd,Normal\n")
    for pid in ["aaa", "bbb", "ccc"]:
        _dcm(root / "stage_2_train_images" / f"{pid}.dcm")  # readers only list files; decoding is tested elsewhere
    (root / "stage_2_test_images").mkdir(exist_ok=True)
    return root


@pytest.mark.parametrize("with_classes, expected", [
    (True, {"aaa": "lung_opacity", "bbb": "normal", "ccc": "other"}),
    (False, {"aaa": "lung_opacity", "bbb": "other", "ccc": "other"}),
])
def test_rsna_labels_collapse_boxes_per_patient(tmp_path, with_classes, expected):
    root = _rsna(tmp_path / "rsna", with_classes)
    assert rsna.detect(root)
    table = rsna.read(root)
    assert dict(zip(table["patient_id"], table["label"])) == expected
    assert [Path(p).name for p in table["path"]] == ["aaa.dcm", "bbb.dcm", "ccc.dcm"]
    assert table.attrs["skipped"] == 1 and set(table["source"]) == {"rsna_pneumonia"}


# ----------------------------------------------------------------------------------- DICOM + labels


def _dcm(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM")
    return path


def test_dicom_folder_with_labels_csv_accepts_aliases(tmp_path):
    site = tmp_path / "hospital_x"
    for name in ("a.dcm", "b.dcm", "sub/c.DCM"):
        _dcm(site / name)
    _write_csv(site / "labels.csv", "filename,finding,patient\n"
               "a.dcm,COVID-19,p1\nb.dcm,No Finding,p2\nsub/c.DCM,Viral_Pneumonia,p3\nmissing.dcm,normal,p4\n")
    assert dicom_labels.detect(site)
    assert [r.name for r, _ in find_sources(tmp_path)] == ["dicom_labels"]
    table = discover(tmp_path)
    assert dict(zip(table["patient_id"], table["label"])) == {"p1": "covid19", "p2": "normal",
                                                              "p3": "viral_pneumonia"}
    assert set(table["source"]) == {"hospital_x"}
    assert table.attrs["sources"][0]["skipped"] == 1


def test_dicom_labels_unknown_label_names_file_and_line(tmp_path):
    _dcm(tmp_path / "a.dcm")
    _write_csv(tmp_path / "labels.csv", "file,class\na.dcm,normal\na.dcm,pneumothorax\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 3: unknown label 'pneumothorax'"):
        dicom_labels.read(tmp_path)


def test_png_manifest_stays_generic_and_dicom_alone_is_not_claimed(tmp_path):
    make_manifest(tmp_path / "pngs", [{"path": "a.png", "label": "normal"}])
    _dcm(tmp_path / "pngs" / "stray.dcm")
    _dcm(tmp_path / "bare" / "x.dcm")
    (tmp_path / "bare" / "notes.csv").write_text("file,comment\nx.dcm,fine\n")  # no label column
    assert not dicom_labels.detect(tmp_path / "pngs") and not dicom_labels.detect(tmp_path / "bare")
    assert [r.name for r, _ in find_sources(tmp_path)] == ["manifest"]


def test_new_native_sources_discovered_side_by_side(tmp_path):
    _rsna(tmp_path / "rsna", True)
    repo = tmp_path / "hannover"
    _write_csv(repo / "data.csv", "patient_id,image_id,modality,projection\np,x,CR,ap\n")
    write_image(repo / "png" / "x.png")
    table = discover(tmp_path)
    assert table.groupby("source").size().to_dict() == {"hannover": 1, "rsna_pneumonia": 3}
    assert table.attrs["failed"] == []
