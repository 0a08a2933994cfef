"""--sweep: one sub-run per combination (shared splits), and the comparison table and notebook (07)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrlib import io
from cxrlib.errors import ConfigError
from cxrlib.evaluate.compare import swept_keys, sweep_table
from cxrlib.layout import RunLayout
from cxrlib.runner import cli
from cxrlib.runner.sweep import combinations, parse_sweeps, seed_splits, shares_splits, slug

ROOT = Path(__file__).resolve().parents[2]


def test_sweep_specs_make_every_combination():
    sweeps = parse_sweeps(["model.arch=resnet18,resnet50", "train.image_size=64, 128"])
    assert combinations(sweeps) == [
        ["model.arch=resnet18", "train.image_size=64"], ["model.arch=resnet18", "train.image_size=128"],
        ["model.arch=resnet50", "train.image_size=64"], ["model.arch=resnet50", "train.image_size=128"]]
    assert slug(["model.arch=resnet18", "train.image_size=64"]) == "model.arch-resnet18_train.image_size-64"
    assert shares_splits(sweeps) and not shares_splits(parse_sweeps(["data.resize=72,96"]))
    for bad in ("model.arch", "=a,b", "model.arch="):
        with pytest.raises(ConfigError, match="--sweep"):
            parse_sweeps([bad])
    with pytest.raises(ConfigError, match="given twice"):
        parse_sweeps(["model.arch=a", "model.arch=b"])


def test_run_sweep_makes_sub_runs_that_share_the_first_splits(tmp_path, monkeypatch):
    calls = []

    def fake_main(args, kernel_name):
        run_dir = Path(args.results) / args.run
        task = RunLayout(run_dir).task("binary")
        calls.append((args.run, [x for g in args.overrides for x in g], task.splits.exists()))
        if not task.splits.exists():
            task.dir.mkdir(parents=True)
            task.splits.write_text("made by the first sub-run")
            task.quality.write_text("path,reason\n")
        return 0

    monkeypatch.setattr(cli, "_main", fake_main)
    monkeypatch.setattr(cli, "_render_compare", lambda *a: 0)
    args = cli.parser().parse_args(["--params", str(ROOT / "params" / "smoke.yaml"), "--results", str(tmp_path),
                                    "--run", "cmp", "--tasks", "binary", "--set", "train.epochs=1",
                                    "--sweep", "model.arch=resnet18,resnet34"])
    assert cli._run_sweep(args, "cxr-study") == 0
    assert [c[0] for c in calls] == ["cmp/sweep/model.arch-resnet18", "cmp/sweep/model.arch-resnet34"]
    assert calls[0][1] == ["train.epochs=1", "model.arch=resnet18"] and calls[1][1][-1] == "model.arch=resnet34"
    assert calls[1][2], "the second sub-run starts from the first one's splits"
    second = RunLayout(tmp_path / "cmp" / "sweep" / "model.arch-resnet34").task("binary")
    assert second.splits.read_text() == "made by the first sub-run"


def test_seed_splits_leaves_existing_splits_alone(tmp_path):
    a, b = RunLayout(tmp_path / "a").task("t"), RunLayout(tmp_path / "b").task("t")
    for t, text in ((a, "a"), (b, "b")):
        t.dir.mkdir(parents=True)
        t.splits.write_text(text)
    assert seed_splits(tmp_path / "a", tmp_path / "b", ["t"]) == [] and b.splits.read_text() == "b"


def _fake_sub_run(parent: Path, arch: str, accuracy: float, fit_s: float) -> None:
    layout = RunLayout(parent / "sweep" / f"model.arch-{arch}")
    params = {"name": "x", "model": {"arch": arch, "weights": "none"}, "train": {"image_size": 32, "epochs": 2},
              "tasks": {"binary": {"other": ["normal"], "covid19": ["covid19"]}}}
    layout.root.mkdir(parents=True)
    io.write_json(layout.record, {"params": params, "tasks": ["binary"], "data_fingerprint": {"sha256": "abc"}})
    task = layout.task("binary")
    interval = {"value": accuracy, "low": accuracy - 0.05, "high": accuracy + 0.04, "method": "wilson"}
    io.write_json(task.summary, {"n_folds": 3, "classes": ["other", "covid19"], "pooled": {"accuracy": interval},
                                 "across_folds": {"accuracy": {"mean": accuracy, "sd": 0.02}}})
    for fold in task.folds(3):
        io.write_json(fold.train_info, {"timings": {"fit_s": fit_s, "feature_cache_s": 0.0}, "epochs_run": 2,
                                        "n_images": {"train": 10}})


def test_sweep_table_puts_accuracy_beside_cost(tmp_path):
    _fake_sub_run(tmp_path, "resnet18", 0.81, 2.0)
    _fake_sub_run(tmp_path, "resnet34", 0.84, 4.0)
    table = sweep_table(tmp_path)
    assert list(table["model.arch"]) == ["resnet18", "resnet34"] and list(table["accuracy"]) == [0.81, 0.84]
    assert table["train_s_per_image"].tolist() == pytest.approx([0.1, 0.2])  # 3 folds x 2 s / (3 x 2 x 10)
    assert table.loc[0, "parameters"] < table.loc[1, "parameters"] and table.loc[0, "macs"] < table.loc[1, "macs"]
    assert swept_keys([{"a": {"b": 1}, "c": 2}, {"a": {"b": 3}, "c": 2}]) == ["a.b"]


def test_sweep_table_reads_a_sub_run_that_trained_fold_0_only(tmp_path):
    _fake_sub_run(tmp_path, "resnet18", 0.81, 2.0)
    _fake_sub_run(tmp_path, "resnet34", 0.84, 4.0)
    partial = RunLayout(tmp_path / "sweep" / "model.arch-resnet34").task("binary")
    partial.summary.unlink()  # evaluation needs every fold: with --folds 0 there is none
    io.write_json(partial.fold(0).metrics, {"fold": 0, "n": 40, "accuracy": 0.75})
    row = sweep_table(tmp_path, with_cost=False).iloc[1]
    assert row["folds"] == 1 and row["accuracy"] == 0.75 and row["ci_method"] == "wilson" and row["low"] < 0.75


def test_a_derived_tasks_training_cost_is_its_sources(tmp_path):
    _fake_sub_run(tmp_path, "resnet18", 0.81, 2.0)
    layout = RunLayout(tmp_path / "sweep" / "model.arch-resnet18")
    for fold in layout.task("binary").folds(3):  # binary now derived from multiclass, which trained 3 s a fold
        io.write_json(layout.fold("multiclass", fold.index).train_info,
                      {"timings": {"fit_s": 3.0}, "epochs_run": 2, "n_images": {"train": 10}})
        io.write_json(fold.train_info, {"derived_from": {"task": "multiclass", "fold": fold.index},
                                        "timings": {"fit_s": 0.0}, "epochs_run": 2, "n_images": {"train": 10}})
    assert sweep_table(tmp_path, with_cost=False)["train_s_per_image"].tolist() == pytest.approx([0.15])


@pytest.mark.slow
def test_compare_notebook_shows_the_table_and_a_picture(tmp_path):
    import papermill

    _fake_sub_run(tmp_path / "run", "resnet18", 0.81, 2.0)
    _fake_sub_run(tmp_path / "run", "resnet34", 0.84, 4.0)
    executed = tmp_path / "07_compare.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "07_compare.ipynb"), str(executed),
                               parameters={"run_dir": str(tmp_path / "run")}, kernel_name="cxr-study",
                               progress_bar=False, cwd=str(tmp_path))
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not any("<Figure size" in json.dumps(o) for o in outputs)
