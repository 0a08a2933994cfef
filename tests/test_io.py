import json

import pandas as pd
import pytest

from cxrlib import io


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "x.json"
    io.write_json(p, {"a": 1})
    io.write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]  # no temporary files left


def test_failed_write_keeps_previous_content(tmp_path):
    p = tmp_path / "x.txt"
    io.write_text(p, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.txt"]


def test_csv_and_numpy_json(tmp_path):
    import numpy as np

    io.write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2]}))
    assert pd.read_csv(tmp_path / "t.csv")["a"].tolist() == [1, 2]
    io.write_json(tmp_path / "n.json", {"x": np.float32(0.5), "v": np.arange(2)})
    assert io.read_json(tmp_path / "n.json") == {"x": 0.5, "v": [0, 1]}


def test_results_are_readable_by_others(tmp_path):
    import os
    import stat

    p = io.write_text(tmp_path / "index.html", "<html></html>")
    mode = stat.S_IMODE(os.stat(p).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
