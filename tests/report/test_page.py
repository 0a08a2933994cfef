"""The summary page: headline table first (CV beside external beside published), the sentence, external
failures, footnoted dashes instead of nan, legends, source audit, provenance; and in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.figure import Figure

from cxrlib import io, report
from cxrlib.config import load_config
from cxrlib.evaluate import summarize_task
from cxrlib.layout import RunLayout
from cxrlib.plots import save_figure
from support.fake_run import make_fake_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _metrics(acc: float, n: int) -> dict:
    iv = lambda v: {"value": v, "low": v - 0.05, "high": v + 0.05, "method": "bootstrap"}  # noqa: E731
    return {"n": n, "accuracy": iv(acc), "macro": {"f1": iv(acc - 0.02), "auc": {"value": float("nan")}},
            "covid19": {"sensitivity": iv(0.7), "specificity": iv(0.6)}}


def external(failed=()) -> dict:
    return {"data_root": "/ext", "classes": ["other", "covid19"], "counts": {"evaluated": 30},
            "ensemble": {"all": _metrics(0.62, 30), "by_source": {"hannover": _metrics(0.55, 10),
                                                                  "nih": _metrics(0.66, 20)}},
            "models": {"fold0": {"all": _metrics(0.6, 30)}}, "failed": list(failed)}


@pytest.fixture()
def run_dir(tmp_path):
    root = make_fake_run(tmp_path / "run", task="binary", n_folds=3)
    make_fake_run(root, task="multiclass", n_folds=3)
    cfg = load_config(None, ["split.n_folds=3", "evaluate.bootstrap=20"])
    summarize_task(root, "binary", cfg, external=external([{"source": "rsna", "reason": "no labels CSV"}]))
    summarize_task(root, "multiclass", cfg, external={"data_root": "/ext", "error": "no images under /ext"})
    io.write_json(RunLayout(root).record, {"run": "page", "tasks": ["multiclass", "binary"]})
    for task in ("binary", "multiclass"):
        for name in ("confusion_counts", "roc", "cam_layers_gradcam_foldall", "cam_covid_grid_gradcam_foldall"):
            fig = Figure(figsize=(4, 3))
            fig.subplots().imshow(np.random.default_rng(0).random((8, 8)))
            save_figure(fig, RunLayout(root).task(task).figures / f"{name}.png")
    stats = RunLayout(root).task("binary").cam_stats
    io.write_text(stats, "path,fold,true,predicted,correct,layer,is_predicted,grid_cells,border_share,center_share,"
                  "border_area,lung_share,lung_area,road_cam,road_random\n"
                  "a.png,0,covid19,covid19,True,layer4,True,16,0.3,0.2,0.23,,,0.1,0.05\n")
    return root


def test_headline_table_and_sentence(run_dir):
    summary = report.read_summary(run_dir, "binary")
    table, notes = report.headline_table(summary, "binary")
    assert list(table.index) == ["accuracy", "balanced accuracy", "macro F1", "macro AUC", "COVID-19 sensitivity", "COVID-19 specificity"]
    assert "external: hannover" in table.columns and "published (ResNet50)" in table.columns
    assert table.loc["accuracy", "external, ensemble (95% CI)"] == "0.620 (0.570–0.670)"
    assert table.loc["macro AUC", "external, ensemble (95% CI)"].startswith("– [")
    assert any("external data" in r for r in notes.reasons)
    sentence = report.headline_sentence(summary)
    assert sentence.startswith("On external data (30 images) the ensemble's accuracy is 0.62 (95% CI 0.57–0.67)")
    assert "below cross-validation" in sentence
    failed = report.headline_sentence(report.read_summary(run_dir, "multiclass"))
    assert failed == "External validation failed (/ext): no images under /ext"


def test_page_order_and_content(run_dir):
    page = report.render_index(run_dir)
    text = re.sub(r"<[^>]+>", " ", page)
    assert not re.search(r"\bnan\b", text, re.I)
    order = [page.index(s) for s in ('id="headline"', "Key figures", "Shortcut checks", "Source audit", "Provenance")]
    assert order == sorted(order)
    assert "External validation failed (/ext): no images under /ext" in page and "none in this run" not in page
    assert "rsna: no labels CSV" in page
    assert "macro F1" in page and "macro AUC" in page
    assert "Figure 5: one COVID-19 X-ray" in page and "figures/roc.png</figcaption>" not in page
    assert "<b>border_share</b>" in page and "<b>road_random</b>" in page
    assert "data fingerprint" in page and "no splits files yet" not in page
    audit = page.split("Source audit")[1].split("Details")[0]
    assert "covid19" in audit and "total" in audit


def test_a_derived_task_says_whose_models_it_reports_before_its_numbers(run_dir):
    record = io.read_json(RunLayout(run_dir).record)
    assert "No models of its own" not in report.render_index(run_dir)
    io.write_json(RunLayout(run_dir).record, {**record, "params": {"derived_tasks": {"binary": "multiclass"}}})
    headline = report.render_index(run_dir).split('id="headline"')[1].split("Key figures")[0]
    binary = headline.split("<h3>binary</h3>")[1]
    assert binary.index("No models of its own: each round is <b>multiclass</b>") < binary.index("<table")
    assert "No models of its own" not in headline.split("<h3>binary</h3>")[0]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_first_screen_in_headless_chromium(run_dir):
    page = RunLayout(run_dir).index_html
    report.write_index(run_dir)
    probe = ("<script>window.addEventListener('load',()=>{const t=[...document.querySelectorAll('#headline table')];"
             "const imgs=[...document.images];document.body.setAttribute('data-probe',JSON.stringify({"
             "tables:t.length,bottom:Math.max(...t.map(x=>x.getBoundingClientRect().bottom)),"
             "images:imgs.length,broken:imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.src)}));});"
             "</script></body>")
    probed = page.with_name("probe.html")
    probed.write_text(page.read_text().replace("</body>", probe))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                          "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=90).stdout
    found = re.search(r"data-probe=\"([^\"]+)\"", dom)
    assert found, dom[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["tables"] == 2 and probe["bottom"] <= 800, probe
    assert probe["images"] >= 8 and not probe["broken"], probe
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                    f"--screenshot={run_dir / 'first_screen.png'}", page.as_uri()], capture_output=True, timeout=90)
