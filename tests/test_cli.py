"""python -m cxrlib splits / audit on a synthetic root, the way a user calls them."""

import subprocess
import sys

import pandas as pd
from support.synthetic import make_class_folders

from cxrlib.__main__ import main


def test_splits_then_audit(tmp_path, capsys):
    data = make_class_folders(tmp_path / "data", {"normal": 10, "viral_pneumonia": 10, "covid19": 10, "lung_opacity": 2})
    out = tmp_path / "splits.csv"
    rc = main(["splits", "--data", str(data), "--task", "binary", "--out", str(out),
               "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.resize=32", "--set", "train.image_size=28"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "dropped 2 image(s) labelled lung_opacity" in printed
    frame = pd.read_csv(out)
    assert {"path", "label", "source", "patient_id", "group", "fold", "target", "sha256"} <= set(frame.columns)
    assert sorted(frame["fold"].unique()) == [0, 1, 2, 3, 4] and set(frame["target"]) == {"other", "covid19"}
    assert main(["audit", str(out)]) == 0

    frame.loc[0, "fold"] = (frame.loc[0, "fold"] + 1) % 5  # plant a leak: one image's twin group in another fold
    dup = frame.iloc[[0]].assign(fold=(frame.loc[0, "fold"] + 1) % 5)
    pd.concat([frame, dup]).to_csv(out, index=False)
    assert main(["audit", str(out)]) == 1
    assert "leak" in capsys.readouterr().out.lower()


def test_errors_are_one_line_naming_the_problem(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cxrlib", "splits", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nope" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "cxrlib", "audit", str(tmp_path / "missing.csv")], capture_output=True, text=True)
    assert proc.returncode == 2 and "missing.csv" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "cxrlib", "splits", "--out", "x.csv", "--set", "train.bogus=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "train.bogus" in proc.stderr
