"""Task tables, duplicate-aware groups, stratified group folds, the leakage audit, splits CSV round trip."""

from __future__ import annotations

import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrlib.config import config_from_dict
from cxrlib.data import pair_cache, phash
from cxrlib.data.splits import (
    SPLIT_COLUMNS,
    assign_folds,
    assign_groups,
    audit,
    build_splits,
    check_no_leakage,
    fold_roles,
    read_splits,
    split_of,
    task_table,
    write_splits,
)
from cxrlib.data.phash import HEX_LEN
from cxrlib.data.table import new_table
from cxrlib.errors import ConfigError, DataError, LeakageError

MULTICLASS = {"normal": ["normal"], "viral_pneumonia": ["viral_pneumonia"], "covid19": ["covid19"]}
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def random_hash(rng) -> str:
    """A random fingerprint (cxrlib.data.phash): HEX_LEN hex digits."""
    return "".join(np.array(list("0123456789abcdef"))[rng.integers(0, 16, HEX_LEN)])


def flip_bits(hexhash: str, n: int, rng) -> str:
    """``hexhash`` with n * n // 2 random cells redrawn. Aligned correlation with the original (random cells): n = 5
    ~1.0, n = 10 ~0.998 (a near-duplicate at the default 0.995), n = 20 ~0.97, n = 30 ~0.88 (distinct)."""
    cells = np.array(list(hexhash))
    k = n * n // 2
    cells[rng.choice(HEX_LEN, k, replace=False)] = np.array(list("0123456789abcdef"))[rng.integers(0, 16, k)]
    return "".join(cells)


def row(path, label="normal", source="src", patient="", sha=None, phash=None, rng=None) -> dict:
    rng = rng or np.random.default_rng(zlib.crc32(path.encode()))
    return {
        "path": path, "label": label, "source": source, "patient_id": patient, "mask_path": "",
        "sha256": sha or random_hash(rng), "phash": phash or random_hash(rng),
        "width": 64, "height": 64,
    }  # fmt: skip


def realistic_table(seed: int = 0, scale: float = 0.5) -> pd.DataFrame:
    """Shaped like the development data: patients with 1-3 images in Kermany, no patient ids in the database."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(label, source, n_images, with_patients):
        made = 0
        while made < n_images:
            k = int(rng.choice([1, 1, 1, 1, 2, 2, 3])) if with_patients else 1
            pid = f"p{len(rows)}" if with_patients else ""
            for _ in range(min(k, n_images - made)):
                rows.append(row(f"/d/{source}/{label}/{len(rows)}.png", label, source, pid, rng=rng))
                made += 1

    add("normal", "kermany", int(1341 * scale), True)
    add("viral_pneumonia", "kermany", int(1345 * scale), True)
    add("bacterial_pneumonia", "kermany", int(600 * scale), True)
    add("normal", "database", int(1500 * scale), False)
    add("covid19", "database", int(1500 * scale), False)
    return pd.DataFrame(rows)


def with_folds(frame: pd.DataFrame, n_folds=5, seed=0) -> pd.DataFrame:
    frame = frame.copy()
    frame["group"] = assign_groups(frame)
    frame, _ = task_table(frame, MULTICLASS)
    frame["fold"] = assign_folds(frame, n_folds, seed)
    return frame


# --------------------------------------------------------------------------- task table


def test_task_table_maps_labels_and_reports_dropped():
    frame = realistic_table(scale=0.05)
    binary = {"other": ["normal", "viral_pneumonia"], "covid19": ["covid19"]}
    out, dropped = task_table(frame, binary)
    assert dropped == {"bacterial_pneumonia": int((frame["label"] == "bacterial_pneumonia").sum())}
    assert set(out["target"]) == {"other", "covid19"}
    assert (out.loc[out["label"] == "viral_pneumonia", "target"] == "other").all()
    assert len(out) == len(frame) - dropped["bacterial_pneumonia"]


def test_empty_task_class_names_the_class_and_root():
    frame = realistic_table(scale=0.05)
    frame = frame[frame["label"] != "covid19"]
    with pytest.raises(DataError, match=r"/data/root.*'covid19'"):
        task_table(frame, MULTICLASS, where="/data/root")


def test_per_class_cap_is_deterministic_and_keeps_patients_whole():
    frame = realistic_table(scale=0.2)
    frame["group"] = assign_groups(frame)
    a, _ = task_table(frame, MULTICLASS, max_per_class=40, seed=3)
    b, _ = task_table(frame, MULTICLASS, max_per_class=40, seed=3)
    c, _ = task_table(frame, MULTICLASS, max_per_class=40, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["path"]) != set(c["path"])
    counts = a["target"].value_counts()
    assert (counts <= 40).all() and (counts >= 37).all()  # whole groups of at most 3 images
    full_size = frame.groupby("group").size()
    kept_size = a.groupby("group").size()
    assert (kept_size == full_size[kept_size.index]).all()


# --------------------------------------------------------------------------- groups


def test_groups_merge_patients_and_duplicates():
    rng = np.random.default_rng(0)
    base_hash = random_hash(rng)
    shared_sha = "ab" * 32
    rows = [
        row("/a1", patient="p1", rng=rng),
        row("/a2", patient="p1", rng=rng),  # same patient
        row("/b1", patient="p2", sha=shared_sha, rng=rng),
        row("/c1", source="other", patient="p9", sha=shared_sha, rng=rng),  # exact copy under another source
        row("/d1", phash=base_hash, rng=rng),  # no patient ...
        row("/d2", phash=flip_bits(base_hash, 10, rng), rng=rng),  # ... and its near-duplicate (~0.998)
        row("/e1", phash=flip_bits(base_hash, 30, rng), rng=rng),  # far from it: alone
        row("/f1", rng=rng),  # no patient, no duplicate: alone
        row("/g1", patient="p1", source="other", rng=rng),  # same id, other source: another patient
    ]
    frame = pd.DataFrame(rows)
    g = assign_groups(frame, near_duplicate_threshold=0.97).tolist()
    assert g[0] == g[1] == "src:p1"
    assert g[2] == g[3] == "other:p9+1"
    assert g[4] == g[5] and g[4].endswith("+1")
    assert len({g[0], g[2], g[4], g[6], g[7], g[8]}) == 6
    assert g[7] == f"src:sha256:{rows[7]['sha256'][:16]}"
    assert g[8] == "other:p1"
    strict = assign_groups(frame, near_duplicate_threshold=0.9999)
    assert strict[4] != strict[5]


def test_duplicate_chain_joins_three_patients():
    rng = np.random.default_rng(1)
    h = random_hash(rng)
    frame = pd.DataFrame(
        [
            row("/1", patient="a", phash=h, rng=rng),
            row("/2", patient="b", phash=flip_bits(h, 4, rng), rng=rng),
            row("/3", patient="b", rng=rng),
            row("/4", patient="c", sha=None, rng=rng),
        ]
    )
    frame.loc[3, "sha256"] = frame.loc[2, "sha256"]
    assert assign_groups(frame).nunique() == 1


def test_groups_need_scan_columns():
    with pytest.raises(DataError, match="scan the images"):
        assign_groups(pd.DataFrame({"source": [], "patient_id": []}))


# --------------------------------------------------------------------------- folds


def test_folds_are_stratified_grouped_and_deterministic():
    frame = with_folds(realistic_table())
    assert set(frame["fold"]) == set(range(5))
    assert (frame.groupby("group")["fold"].nunique() == 1).all()
    overall = frame["target"].value_counts(normalize=True)
    shares = pd.crosstab(frame["fold"], frame["target"], normalize="index")
    assert ((shares - overall).abs().to_numpy().max()) < 0.02
    again = assign_folds(frame.sample(frac=1, random_state=1), 5, 0)
    pd.testing.assert_series_equal(again.sort_index(), frame["fold"], check_names=False)
    other_seed = assign_folds(frame, 5, 1)
    assert (other_seed != frame["fold"]).mean() > 0.5
    report = check_no_leakage(frame)
    assert report.ok and report.max_deviation_pp < 2 and report.counts.shape == (5, 3)


def test_folds_need_enough_groups_per_class():
    rng = np.random.default_rng(0)
    rows = [row(f"/n{i}", "normal", rng=rng) for i in range(20)]
    rows += [row(f"/c{i}", "covid19", patient="same", rng=rng) for i in range(10)]
    frame = pd.DataFrame(rows)
    frame["group"] = assign_groups(frame)
    frame["target"] = frame["label"]
    with pytest.raises(DataError, match="'covid19': 1"):
        assign_folds(frame, 5, 0)


def test_fold_roles_and_split_of():
    assert fold_roles(0, 5) == {"test": 0, "val": 1, "train": [2, 3, 4]}
    assert fold_roles(4, 5) == {"test": 4, "val": 0, "train": [1, 2, 3]}
    frame = pd.DataFrame({"fold": [0, 1, 2, 3, 4, 4]})
    assert split_of(frame, 4, 5).tolist() == ["val", "train", "train", "train", "test", "test"]
    with pytest.raises(ValueError):
        fold_roles(5, 5)
    with pytest.raises(ValueError):
        fold_roles(0, 2)
    with pytest.raises(DataError, match=r"\[7\]"):
        split_of(pd.DataFrame({"fold": [0, 7]}), 0, 5)


# --------------------------------------------------------------------------- audit


def test_audit_detects_a_group_in_two_folds():
    frame = with_folds(realistic_table(scale=0.1))
    sizes = frame.groupby("group").size()
    victim = sizes[sizes > 1].index[0]
    rows = frame.index[frame["group"] == victim]
    frame.loc[rows[0], "fold"] = (frame.loc[rows[0], "fold"] + 1) % 5
    report = audit(frame)
    assert not report.ok and any(victim in p for p in report.problems)
    assert "LEAK" in report.summary
    with pytest.raises(LeakageError, match=victim):
        check_no_leakage(frame)


def test_audit_detects_identical_and_near_duplicate_images_in_two_folds():
    frame = with_folds(realistic_table(scale=0.1))
    a, b = frame.index[frame["fold"] == 0][0], frame.index[frame["fold"] == 1][0]
    planted = frame.copy()
    planted.loc[b, "sha256"] = planted.loc[a, "sha256"]
    with pytest.raises(LeakageError, match="sha256"):
        check_no_leakage(planted)
    planted = frame.copy()
    planted.loc[b, "phash"] = flip_bits(planted.loc[a, "phash"], 3, np.random.default_rng(0))
    with pytest.raises(LeakageError, match="near-duplicate"):
        check_no_leakage(planted)
    assert check_no_leakage(frame).problems == []


def test_audit_notes_a_class_missing_from_a_fold():
    frame = with_folds(realistic_table(scale=0.1))
    frame = frame[~((frame["fold"] == 2) & (frame["target"] == "covid19"))]
    report = audit(frame)
    assert report.ok and any("fold 2 has no image of class 'covid19'" in n for n in report.notes)


# --------------------------------------------------------------------------- CSV round trip


def test_write_and_read_splits_round_trip(tmp_path):
    frame = with_folds(realistic_table(scale=0.05))
    frame.loc[frame.index[0], "patient_id"] = "007"
    out = tmp_path / "task" / "splits.csv"
    write_splits(out, frame)
    back = read_splits(out)
    assert list(back.columns) == list(SPLIT_COLUMNS)
    assert back.loc[0, "patient_id"] == "007" and back.loc[1, "mask_path"] == ""
    pd.testing.assert_frame_equal(back, frame[list(SPLIT_COLUMNS)].reset_index(drop=True), check_dtype=False)
    assert not list(tmp_path.glob("task/.*tmp"))


def test_read_splits_errors_name_the_file(tmp_path):
    frame = with_folds(realistic_table(scale=0.05))[list(SPLIT_COLUMNS)]
    p = tmp_path / "splits.csv"
    with pytest.raises(DataError, match="not found"):
        read_splits(p)
    frame.drop(columns=["group"]).to_csv(p, index=False)
    with pytest.raises(DataError, match=r"splits\.csv: missing columns \['group'\]"):
        read_splits(p)
    bad = frame.copy()
    bad["fold"] = bad["fold"].astype(str)
    bad.loc[bad.index[0], "fold"] = "x"
    bad.to_csv(p, index=False)
    with pytest.raises(DataError, match="splits.csv: column fold"):
        read_splits(p)
    gap = frame.copy()
    gap.loc[gap["fold"] == 2, "fold"] = 3
    gap.to_csv(p, index=False)
    with pytest.raises(DataError, match=r"folds must be 0\.\.n-1"):
        read_splits(p)


# --------------------------------------------------------------------------- end to end over synthetic images


def test_build_splits_end_to_end(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = []
    for label, n, with_patient in (("normal", 24, True), ("covid19", 20, False), ("bacterial_pneumonia", 3, True)):
        for i in range(n):
            p = tmp_path / "root" / label / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            field = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).resize((40, 40), Image.BICUBIC)
            field.save(p)
            pid = f"{label}{i // 2}" if with_patient else ""
            rows.append({"path": str(p), "label": label, "source": "syn", "patient_id": pid, "mask_path": ""})
    bad = tmp_path / "root" / "normal" / "broken.png"
    bad.write_bytes(b"")
    rows.append({"path": str(bad), "label": "normal", "source": "syn", "patient_id": "", "mask_path": ""})
    fake = types.ModuleType("cxrlib.data.sources")
    fake.discover = lambda root: new_table(rows)
    monkeypatch.setitem(sys.modules, "cxrlib.data.sources", fake)
    cfg = config_from_dict(
        {
            "tasks": {"t": {"healthy": ["normal"], "covid": ["covid19"]}},
            "data": {"cache_dir": str(tmp_path / "cache"), "resize": 16, "workers": 1},
            "split": {"n_folds": 4, "seed": 2},
            "train": {"image_size": 16},
        }
    )
    result = build_splits(cfg, "t", data_root=tmp_path / "root")
    assert list(result.splits.columns) == list(SPLIT_COLUMNS)
    assert len(result.splits) == 44 and set(result.splits["fold"]) == {0, 1, 2, 3}
    assert result.quality["path"].tolist() == [str(bad)]
    assert result.dropped == {"bacterial_pneumonia": 3}
    assert result.audit.ok and result.data_root == str(tmp_path / "root")
    assert len(list((tmp_path / "cache" / pair_cache.FOLDER).glob("*.npz"))) == 1  # groups' pairs, all 47 images
    searched: list[int] = []
    search = phash.scored_pairs
    monkeypatch.setattr(phash, "scored_pairs", lambda hashes, **kw: searched.append(len(hashes)) or search(hashes, **kw))
    again = build_splits(cfg, "t", data_root=tmp_path / "root")
    assert again.splits.equals(result.splits)
    assert searched == [44]  # only the audit of the task's images; the groups came from the cache
    with pytest.raises(ConfigError):
        build_splits(cfg, "nope")


# --------------------------------------------------------------------------- real data


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_data_multiclass_folds_are_leak_free_and_stratified(tmp_path):
    manifest = SHARED / "dev_manifest.csv"
    if not manifest.exists():
        pytest.skip(f"real development data not found at {SHARED.resolve()}")
    from cxrlib.data.scan import scan_table

    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    rows["path"] = [str((SHARED / p).resolve()) for p in rows["path"]]
    rows["mask_path"] = ""
    scanned, quality = scan_table(new_table(rows.to_dict("records")), tmp_path / "cache", 64, workers=2)
    assert quality.empty and len(scanned) == len(rows)
    scanned["group"] = assign_groups(scanned)
    frame, dropped = task_table(scanned, MULTICLASS)
    assert dropped == {"bacterial_pneumonia": 600}
    frame["fold"] = assign_folds(frame, 5, 0)
    report = check_no_leakage(frame)
    assert report.max_deviation_pp < 2, report.summary
    kermany = frame[frame["source"] == "kermany_chest_xray"]
    patients = kermany["patient_id"].nunique()
    groups_per_patient = kermany.groupby("patient_id")["group"].nunique()
    assert (groups_per_patient == 1).all()
    assert kermany["group"].nunique() >= 0.99 * patients  # duplicates merge a handful of patients, not many
    merged = frame.loc[frame["group"].str.contains("+", regex=False), "group"]
    assert merged.nunique() <= 20 and merged.value_counts().max() <= 4  # small duplicate clusters only
    largest_patient = kermany.groupby("patient_id").size().max()
    assert frame.groupby("group").size().max() == largest_patient  # no chain of near-duplicates snowballs
