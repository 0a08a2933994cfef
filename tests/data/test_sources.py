from pathlib import Path

import pandas as pd
import pytest

from cxrlib.data.sources import discover, find_sources, summarize
from cxrlib.data.sources import cohen, generic, kaggle_radiography, kermany
from cxrlib.errors import DataError
from support.fakes import make_kaggle_radiography, make_kermany, make_manifest, make_metadata_repo, write_image


def _by_name(table):
    return {Path(p).name: row for p, row in zip(table["path"], table.to_dict("records"))}


# ----------------------------------------------------------------------------------------- Kaggle


def test_kaggle_v1_labels_counts_and_no_masks(tmp_path):
    top = make_kaggle_radiography(tmp_path, "v1")
    assert kaggle_radiography.detect(top)
    table = kaggle_radiography.read(top)
    assert table["label"].value_counts().to_dict() == {"normal": 3, "covid19": 2, "viral_pneumonia": 1}
    assert set(table["source"]) == {"covid19_radiography_database"}
    assert set(table["patient_id"]) == {""} and set(table["mask_path"]) == {""}
    assert _by_name(table)["COVID-19 (2).png"]["label"] == "covid19"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])


def test_kaggle_v2_partial_tree_with_macos_junk(tmp_path):
    top = make_kaggle_radiography(tmp_path / "covid19_radiography_database", "v2", {"COVID": 3, "Normal": 2})
    (top / "COVID" / ".DS_Store").write_bytes(b"junk")
    write_image(top / "COVID" / "._COVID-1.png")  # AppleDouble fork: hidden, not an image
    write_image(top / "__MACOSX" / "COVID" / "COVID-9.png")
    (top / "README.md.txt").write_text("readme")
    table = kaggle_radiography.read(top)
    assert table["label"].value_counts().to_dict() == {"covid19": 3, "normal": 2}
    assert "COVID-9.png" not in _by_name(table)


def test_kaggle_v4_masks_by_same_name(tmp_path):
    top = make_kaggle_radiography(tmp_path, "v4", {"COVID": 2, "Lung_Opacity": 1, "Viral Pneumonia": 1, "Normal": 2})
    (top / "Normal" / "masks" / "Normal-2.png").unlink()
    table = kaggle_radiography.read(top)
    assert len(table) == 6
    rows = _by_name(table)
    assert rows["Lung_Opacity-1.png"]["label"] == "lung_opacity"
    assert rows["COVID-1.png"]["mask_path"] == str(top / "COVID" / "masks" / "COVID-1.png")
    assert Path(rows["COVID-1.png"]["path"]).parent.name == "images"
    assert rows["Normal-2.png"]["mask_path"] == ""  # its mask is missing
    assert not any("/masks/" in p for p in table["path"])


def test_kaggle_detection_needs_release_name_or_covid_folder(tmp_path):
    (tmp_path / "a" / "Normal").mkdir(parents=True)
    (tmp_path / "a" / "Viral Pneumonia").mkdir()
    assert not kaggle_radiography.detect(tmp_path / "a")
    (tmp_path / "a" / "COVID").mkdir()
    assert kaggle_radiography.detect(tmp_path / "a")
    (tmp_path / "COVID-19_Radiography_Dataset" / "Normal").mkdir(parents=True)
    assert kaggle_radiography.detect(tmp_path / "COVID-19_Radiography_Dataset")


# ------------------------------------------------------------------------------------------ Cohen


@pytest.mark.parametrize(
    "finding, label",
    [
        ("Pneumonia/Viral/COVID-19", "covid19"),
        ("COVID-19", "covid19"),
        ("COVID-19, ARDS", "covid19"),
        ("Pneumonia/Viral/SARS", "viral_pneumonia"),
        ("Pneumonia/Viral/MERS-CoV", "viral_pneumonia"),
        ("Pneumonia/Viral/Influenza/H1N1", "viral_pneumonia"),
        ("Pneumonia/Viral/Herpes ", "viral_pneumonia"),
        ("SARS", "viral_pneumonia"),
        ("Varicella", "viral_pneumonia"),
        ("Pneumonia/Bacterial/Streptococcus", "bacterial_pneumonia"),
        ("Pneumonia/Bacterial/Staphylococcus/MRSA", "bacterial_pneumonia"),
        ("Streptococcus", "bacterial_pneumonia"),
        ("E.Coli", "bacterial_pneumonia"),
        ("Mycoplasma Bacterial Pneumonia", "bacterial_pneumonia"),
        ("No Finding", "normal"),
        ("No finding", "normal"),
        ("normal", "normal"),
        ("Pneumonia/Fungal/Pneumocystis", "other"),
        ("Pneumonia/Lipoid", "other"),
        ("Pneumonia/Aspiration", "other"),
        ("Pneumonia", "other"),
        ("ARDS", "other"),
        ("Tuberculosis", "other"),
        ("Unknown", None),
        ("todo", None),
        ("", None),
        ("  ", None),
    ],
)
def test_cohen_finding_mapping(finding, label):
    assert cohen.finding_label(finding) == label


def _cohen_row(pid, finding, view, modality, filename, folder="images"):
    return {"patientid": pid, "offset": "", "sex": "M", "age": "50", "finding": finding, "RT_PCR_positive": "",
            "view": view, "modality": modality, "date": "", "location": "", "folder": folder,
            "filename": filename, "doi": "", "url": "", "license": "", "clinical_notes": ""}


def test_cohen_filters_views_and_modality_and_counts_missing_images(tmp_path):
    rows = [
        _cohen_row("2", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "a.jpeg"),
        _cohen_row("2", "Pneumonia/Viral/COVID-19", "L", "X-ray", "a-lateral.jpeg"),
        _cohen_row("3", "Pneumonia/Viral/SARS", "AP", "X-ray", "b.jpg"),
        _cohen_row("4", "Pneumonia/Bacterial/Klebsiella", "AP Supine", "X-ray", "c.png"),
        _cohen_row("5", "No Finding", "AP supine", "X-ray", "d.png"),
        _cohen_row("6", "COVID-19", "Axial", "CT", "e.jpg"),
        _cohen_row("7", "COVID-19", "Coronal", "CT", "vol.nii.gz", folder="volumes"),
        _cohen_row("8", "Pneumonia/Fungal/Pneumocystis", "PA", "X-ray", "f.jpg"),
        _cohen_row("9", "Pneumonia/Viral/Influenza", "PA", "X-ray", "gone.jpg"),
        _cohen_row("10", "COVID-19", "PA", "X-ray", "also-gone.png"),
        _cohen_row("11", "", "PA", "X-ray", "g.jpg"),
        _cohen_row("12", "todo", "PA", "X-ray", "h.jpg"),  # not yet determined: could be COVID-19
    ]
    repo = make_metadata_repo(tmp_path, "covid-chestxray-dataset", rows, missing=("gone.jpg", "also-gone.png"))
    assert cohen.detect(repo)
    table = cohen.read(repo)
    rows_by_name = _by_name(table)
    assert sorted(rows_by_name) == ["a.jpeg", "b.jpg", "c.png", "d.png", "f.jpg"]
    assert {n: r["label"] for n, r in rows_by_name.items()} == {
        "a.jpeg": "covid19", "b.jpg": "viral_pneumonia", "c.png": "bacterial_pneumonia", "d.png": "normal",
        "f.jpg": "other",
    }
    assert rows_by_name["c.png"]["patient_id"] == "4"
    assert set(table["source"]) == {"cohen"}
    assert table.attrs["skipped"] == 2
    assert table.attrs["dropped"] == {"modality": 2, "view": 1, "empty_finding": 2, "duplicate": 0}


def test_cohen_custom_views_and_duplicate_rows(tmp_path):
    rows = [
        _cohen_row("1", "COVID-19", "PA", "X-ray", "a.jpg"),
        _cohen_row("1", "COVID-19", "PA", "X-ray", "A.JPG"),  # same file, other case
        _cohen_row("2", "SARS", "AP", "X-ray", "b.jpg"),
    ]
    repo = make_metadata_repo(tmp_path, "cohen", rows, files=("a.jpg", "b.jpg"))
    table = cohen.read(repo, views=("PA",))
    assert list(_by_name(table)) == ["a.jpg"]
    assert table.attrs["dropped"]["duplicate"] == 1 and table.attrs["dropped"]["view"] == 1


def test_actualmed_imagename_column_and_source_name(tmp_path):
    header = ["patientid", "offset", "sex", "age", "finding", "survival", "temperature", "pO2 saturation", "view",
              "modality", "imagename", "artifacts/distortion", "notes"]
    values = [
        ("ANON56", "No finding", "PA", "CR.1.2.840.1.png"),
        ("ANON196", "COVID-19", "AP", "CR.1.2.840.2.png"),
        ("ANON8", "", "PA", "CR.1.2.840.3.png"),  # inconclusive
        ("ANON9", "COVID-19", "PA", "CR.1.2.840.4.png"),  # image missing
    ]
    rows = [dict(dict.fromkeys(header, ""), patientid=p, finding=f, view=v, modality="X-ray", imagename=n)
            for p, f, v, n in values]
    repo = make_metadata_repo(tmp_path, "Actualmed-COVID-chestxray-dataset", rows, image_column="imagename",
                              missing=("CR.1.2.840.4.png",))
    table = cohen.read(repo)
    assert set(table["source"]) == {"actualmed"}
    assert dict(zip(table["patient_id"], table["label"])) == {"ANON56": "normal", "ANON196": "covid19"}
    assert table.attrs["skipped"] == 1 and table.attrs["dropped"]["empty_finding"] == 1


def test_figure1_patientid_as_file_stem_any_extension_and_case(tmp_path):
    header = ["patientid", "offset", "sex", "age", "finding", "survival", "temperature", "pO2 saturation", "view",
              "modality", "artifacts/distortion", "notes"]
    values = [
        ("COVID-00001", "COVID-19", "AP erect"),
        ("COVID-00003a", "COVID-19", ""),
        ("COVID-00003b", "COVID-19", "AP"),
        ("COVID-00023", "No finding", ""),
        ("COVID-00031", "Pneumonia", ""),
        ("COVID-00050", "COVID-19", "L"),
        ("COVID-00099", "COVID-19", "PA"),  # no image at all
    ]
    rows = [dict(dict.fromkeys(header, ""), patientid=p, finding=f, view=v, modality="X-ray") for p, f, v in values]
    files = ("COVID-00001.jpg", "covid-00003a.JPEG", "COVID-00003b.png", "COVID-00023.jpg", "COVID-00031.jpg",
             "COVID-00050.jpg")
    repo = make_metadata_repo(tmp_path, "Figure1-COVID-chestxray-dataset", rows, image_column=None, files=files)
    (repo / "images" / "COVID-00099.txt").write_text("not an image")
    table = cohen.read(repo)
    rows_by_name = _by_name(table)
    assert sorted(rows_by_name) == ["COVID-00001.jpg", "COVID-00003b.png", "COVID-00023.jpg", "COVID-00031.jpg",
                                    "covid-00003a.JPEG"]
    assert set(table["source"]) == {"figure1"}
    assert rows_by_name["covid-00003a.JPEG"]["patient_id"] == "COVID-00003"
    assert rows_by_name["COVID-00003b.png"]["patient_id"] == "COVID-00003"
    assert rows_by_name["COVID-00031.jpg"]["label"] == "other"
    assert rows_by_name["COVID-00023.jpg"]["label"] == "normal"
    assert table.attrs["skipped"] == 1 and table.attrs["dropped"]["view"] == 1


def test_metadata_without_modality_or_view_columns_keeps_rows(tmp_path):
    rows = [{"Patientid": "1", "finding": "COVID-19", "filename": "x.png"},
            {"Patientid": "2", "finding": "SARS", "filename": "y"}]
    repo = make_metadata_repo(tmp_path, "old-cohen", rows, files=("x.png", "y.jpg"))
    table = cohen.read(repo)
    assert dict(zip(table["patient_id"], table["label"])) == {"1": "covid19", "2": "viral_pneumonia"}


def test_metadata_without_finding_is_an_error_naming_the_file(tmp_path):
    repo = make_metadata_repo(tmp_path, "bad", [{"patientid": "1", "filename": "x.png"}])
    with pytest.raises(DataError, match="metadata.csv.*finding"):
        cohen.read(repo)


# ---------------------------------------------------------------------------------------- Kermany


@pytest.mark.parametrize(
    "name, pid",
    [
        ("person1_virus_6.jpeg", "person1"),
        ("person1946_bacteria_4874.jpeg", "person1946"),
        ("person447_virus_921_1.jpeg", "person447"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("IM-0429-0001-0002.jpeg", "IM-0429"),
        ("NORMAL2-IM-0395-0001-0001.jpeg", "NORMAL2-IM-0395"),
        ("NORMAL2-IM-0383-0001.jpeg", "NORMAL2-IM-0383"),
        ("scan_17.jpeg", ""),
    ],
)
def test_kermany_patient_id(name, pid):
    assert kermany.patient_id(name) == pid


def test_kermany_pneumonia_kind_from_file_name():
    assert kermany.pneumonia_label("person1_virus_6.jpeg") == "viral_pneumonia"
    assert kermany.pneumonia_label("person1_bacteria_1.jpeg") == "bacterial_pneumonia"
    assert kermany.pneumonia_label("pneumonia_17.jpeg") == "other"


def test_kermany_split_layout_skips_junk(tmp_path):
    base = make_kermany(tmp_path, {
        "train/NORMAL": ["IM-0115-0001.jpeg", "NORMAL2-IM-0395-0001-0001.jpeg"],
        "train/PNEUMONIA": ["person1_virus_6.jpeg", "person1_bacteria_1.jpeg", "person3_bacteria_10.jpeg"],
        "test/NORMAL": ["IM-0001-0001.jpeg"],
        "test/PNEUMONIA": ["person100_virus_184.jpeg"],
        "val/NORMAL": ["NORMAL2-IM-1427-0001.jpeg"],
        "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
        "__MACOSX/train/NORMAL": ["._IM-0115-0001.jpeg", "IM-9999-0001.jpeg"],
    })
    (base / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    (base / "train" / "PNEUMONIA" / "notes.txt").write_text("not an image")
    assert kermany.detect(base)
    table = kermany.read(base)
    assert len(table) == 9
    assert table["label"].value_counts().to_dict() == {"normal": 4, "bacterial_pneumonia": 3, "viral_pneumonia": 2}
    rows = _by_name(table)
    assert rows["person1_bacteria_1.jpeg"]["patient_id"] == "person1"
    assert rows["NORMAL2-IM-1427-0001.jpeg"]["patient_id"] == "NORMAL2-IM-1427"
    assert set(table["source"]) == {"kermany"}


def test_kermany_bare_train_folder(tmp_path):
    base = make_kermany(tmp_path, {"train/NORMAL": ["IM-0117-0001.jpeg"], "train/PNEUMONIA": ["person9_bacteria_38.jpeg"]},
                        top="kermany_chest_xray")
    assert kermany.detect(base) and kermany.detect(base / "train")
    assert not kermany.detect(base / "train" / "NORMAL")
    assert sorted(kermany.read(base)["label"]) == ["bacterial_pneumonia", "normal"]


# ---------------------------------------------------------------------------------------- generic


def test_manifest_relative_paths_optional_columns(tmp_path):
    csv = make_manifest(tmp_path / "mydata", [
        {"path": "img/a.png", "label": "covid19", "patient_id": "p1", "source": "hospital_a"},
        {"path": "img/b.png", "label": " Normal ", "patient_id": "", "source": ""},
    ])
    table = generic.read_manifest(csv)
    assert list(table["path"]) == [str(tmp_path / "mydata" / "img" / "a.png"), str(tmp_path / "mydata" / "img" / "b.png")]
    assert list(table["label"]) == ["covid19", "normal"]
    assert list(table["source"]) == ["hospital_a", "mydata"]
    assert list(table["patient_id"]) == ["p1", ""]


def test_manifest_unknown_label_names_file_line_and_label(tmp_path):
    csv = make_manifest(tmp_path, [{"path": "a.png", "label": "normal"}, {"path": "b.png", "label": "pneumonia"}],
                        name="labels.csv")
    with pytest.raises(DataError, match=r"labels\.csv: line 3: unknown label 'pneumonia'"):
        generic.read_manifest(csv)


def test_manifest_missing_image_names_manifest_and_line(tmp_path):
    csv = make_manifest(tmp_path, [{"path": "a.png", "label": "normal"}, {"path": "nope/b.png", "label": "covid19"}],
                        write_images=False)
    write_image(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"manifest\.csv: line 3: path 'nope/b\.png' does not exist"):
        generic.read_manifest(csv)


def test_manifest_detected_by_header_only(tmp_path):
    make_manifest(tmp_path, [{"path": "a.png", "label": "normal"}], name="whatever.csv")
    (tmp_path / "other.csv").write_text("id,value\n1,2\n")
    assert [p.name for p in generic.manifest_files(tmp_path)] == ["whatever.csv"]


def test_class_folders_recursive_and_source_is_folder_name(tmp_path):
    for rel in ["normal/a.png", "normal/sub/b.jpg", "COVID19/c.PNG", "unrelated/d.png", "normal/e.txt"]:
        path = tmp_path / "site_b" / rel
        if rel.endswith(".txt"):
            path.write_text("x")
        else:
            write_image(path)
    table = generic.read_class_folders(tmp_path / "site_b")
    assert sorted(zip(table["label"], [Path(p).name for p in table["path"]])) == [
        ("covid19", "c.PNG"), ("normal", "a.png"), ("normal", "b.jpg")]
    assert set(table["source"]) == {"site_b"}


# --------------------------------------------------------------------------------------- discover


def _mixed_root(root: Path) -> Path:
    make_kaggle_radiography(root / "covid19_radiography_database", "v2", {"COVID": 2, "Normal": 1})
    make_kermany(root, {"train/NORMAL": ["IM-0115-0001.jpeg"], "train/PNEUMONIA": ["person1_virus_6.jpeg"]},
                 top="kermany_chest_xray")
    make_metadata_repo(root / "holdout", "Actualmed-COVID-chestxray-dataset",
                       [{"patientid": "ANON1", "finding": "COVID-19", "view": "PA", "modality": "X-ray",
                         "imagename": "x.png"},
                        {"patientid": "ANON2", "finding": "COVID-19", "view": "PA", "modality": "X-ray",
                         "imagename": "missing.png"}],
                       image_column="imagename", missing=("missing.png",))
    write_image(root / "site_b" / "viral_pneumonia" / "v.png")
    return root


def test_discover_mixed_root_reads_each_source_once(tmp_path):
    root = _mixed_root(tmp_path)
    table = discover(root)
    assert list(table.columns) == ["path", "label", "source", "patient_id", "mask_path"]
    assert table.groupby("source").size().to_dict() == {
        "actualmed": 1, "covid19_radiography_database": 3, "kermany": 2, "site_b": 1}
    assert list(table["path"]) == sorted(table["path"])
    assert table["path"].is_unique and all(Path(p).is_file() for p in table["path"])
    report = {r["reader"]: r for r in table.attrs["sources"]}
    assert report["cohen"]["skipped"] == 1 and report["cohen"]["sources"] == ["actualmed"]
    assert {r.name for r, _ in find_sources(root)} == {"covid19_radiography_database", "cohen", "kermany", "class_folders"}
    counts = summarize(table)
    assert counts.loc["total", "total"] == 7 and counts.loc["kermany", "patients"] == 2


def test_manifest_beside_native_sources_is_not_read(tmp_path):
    root = _mixed_root(tmp_path)
    # Would raise (unknown label) if it were read as a manifest.
    (root / "dev_manifest.csv").write_text("path,label,source,patient_id\nnope.png,not_a_label,x,\n")
    assert len(discover(root)) == 7


def test_manifest_folder_without_native_sources_is_read(tmp_path):
    root = _mixed_root(tmp_path)
    make_manifest(root / "extra", [{"path": "a.png", "label": "other"}])
    table = discover(root)
    assert table.groupby("source").size()["extra"] == 1


def test_exclude_and_depth_limit(tmp_path):
    root = _mixed_root(tmp_path)
    table = discover(root, exclude=["holdout", root / "site_b"])
    assert set(table["source"]) == {"covid19_radiography_database", "kermany"}
    deep = tmp_path / "deep"
    make_kermany(deep / "a" / "b" / "c", {"NORMAL": ["IM-0001-0001.jpeg"], "PNEUMONIA": ["person2_virus_3.jpeg"]},
                 top="d")
    assert len(discover(deep)) == 2  # the source folder is 4 levels down
    with pytest.raises(DataError, match="no recognisable data source"):
        discover(deep, max_depth=3)


def test_image_listed_by_two_sources_is_an_error(tmp_path):
    root = _mixed_root(tmp_path)
    make_manifest(root / "extra", [{"path": "../site_b/viral_pneumonia/v.png", "label": "viral_pneumonia"}],
                  write_images=False)
    with pytest.raises(DataError, match="v.png: image listed by more than one source"):
        discover(root)


def test_discover_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*is empty"):
        discover(tmp_path / "empty")
    write_image(tmp_path / "junk" / "loose" / "x.png")
    (tmp_path / "junk" / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="junk: no recognisable data source"):
        discover(tmp_path / "junk")
    (tmp_path / "hollow" / "COVID-19_Radiography_Dataset" / "COVID").mkdir(parents=True)
    with pytest.raises(DataError, match="hollow: sources found .* but no images"):
        discover(tmp_path / "hollow")


def test_discover_table_round_trips_through_csv(tmp_path):
    table = discover(_mixed_root(tmp_path))
    table.to_csv(tmp_path / "t.csv", index=False)
    again = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(again, table.astype(object).reset_index(drop=True), check_dtype=False)
