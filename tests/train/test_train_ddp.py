"""The same fold under torchrun with two CPU processes (gloo DistributedDataParallel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from support.train_helpers import SMOKE, make_run


@pytest.mark.slow
def test_torchrun_two_processes_writes_the_same_artifacts_and_learns(tmp_path):
    run = make_run(tmp_path / "data", per_class=10)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "cxrlib.train", "--run-dir", str(run), "--task", "multiclass", "--fold", "0",
           "--params", str(SMOKE), "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.device=cpu",
           "--set", "train.epochs=4", "--set", "train.patience=4", "--set", "train.batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXR_PROGRESS": "0"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = run / "multiclass" / "fold0"
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model.pt", "predictions.csv", "train.json"]
    info = json.loads((out / "train.json").read_text())
    assert info["world_size"] == 2 and info["epochs_run"] == 4
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert proc.stdout.count("epoch 1/4") == 1  # only rank 0 logs
    preds = pd.read_csv(out / "predictions.csv")
    assert sorted(preds["split"].unique()) == ["test", "val"] and len(preds) == 12
