import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cxrlib import evaluate as ev  # noqa: E402
from cxrlib.plots import evaluation as plots  # noqa: E402
from cxrlib.plots.training import plot_loss_curves  # noqa: E402
from support.fake_run import BINARY, MULTICLASS, fold_predictions, history  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def frame(classes):
    return pd.concat([fold_predictions(classes, k) for k in range(3)], ignore_index=True)


def check_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("classes", [MULTICLASS, BINARY])
def test_every_plot_returns_figure_and_writes_png(tmp_path, classes):
    before = plt.get_fignums()
    preds = frame(classes)
    cm = ev.score_predictions(preds, classes)["confusion_matrix"]
    figs = {
        "loss.png": plot_loss_curves({k: history(k) for k in range(5)}, path=tmp_path / "loss.png"),
        "cm.png": plots.plot_confusion(cm, classes, path=tmp_path / "cm.png"),
        "cm_pct.png": plots.plot_confusion(cm, classes, normalize=True, path=tmp_path / "cm_pct.png"),
        "roc.png": plots.plot_roc(preds, classes, path=tmp_path / "roc.png"),
        "pr.png": plots.plot_precision_recall(preds, classes, path=tmp_path / "pr.png"),
        "rel.png": plots.plot_reliability(preds, classes, path=tmp_path / "rel.png"),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        check_png(tmp_path / name)
    assert plt.get_fignums() == before  # no pyplot figures left open


def test_loss_curves_one_line_pair_per_fold():
    fig = plot_loss_curves({k: history(k) for k in range(5)})
    ax = fig.axes[0]
    assert len(ax.lines) == 10
    assert sum(line.get_linestyle() == "--" for line in ax.lines) == 5


def test_confusion_annotations_counts_and_row_percentages():
    cm = [[8, 2, 0], [1, 3, 0], [0, 0, 5]]
    counts = plots.plot_confusion(cm, MULTICLASS)
    assert [t.get_text() for t in counts.axes[0].texts] == ["8", "2", "0", "1", "3", "0", "0", "0", "5"]
    pct = plots.plot_confusion(cm, MULTICLASS, normalize=True)
    assert [t.get_text() for t in pct.axes[0].texts][:5] == ["80.0%", "20.0%", "0.0%", "25.0%", "75.0%"]
    assert pct.axes[0].get_yticklabels()[2].get_text() == "COVID-19"


def test_roc_legend_has_auc_per_class():
    preds = frame(MULTICLASS)
    m = ev.score_predictions(preds, MULTICLASS)
    fig = plots.plot_roc(preds, MULTICLASS)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 3
    assert f"{m['per_class']['covid19']['auc']:.2f}" in labels[2]


def test_reliability_title_shows_ece():
    preds = frame(MULTICLASS)
    m = ev.score_predictions(preds, MULTICLASS)
    fig = plots.plot_reliability(preds, MULTICLASS)
    assert f"ECE = {m['ece']:.3f}" in fig.axes[0].get_title()


def test_a_fold_curve_says_when_the_training_crops_grew():
    from cxrlib.plots.training import plot_history

    h = history(0)
    assert plot_history(h, title="fold 0")._suptitle.get_text() == "fold 0"  # no sizes recorded: title as given
    h["image_size"] = [64 + 8 * i for i in range(len(h))]
    text = plot_history(h, title="fold 0")._suptitle.get_text()
    assert "training crops 64 \u2192" in text and "progressive resizing" in text
    h["image_size"] = 112
    assert plot_history(h)._suptitle is None  # one size: nothing to say
