"""A fake run folder with hand-made fold artifacts (predictions.csv, history.csv, splits.csv) for evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrlib.data.phash import HEX_LEN

MULTICLASS = ["normal", "viral_pneumonia", "covid19"]
BINARY = ["other", "covid19"]


def fold_predictions(classes: list[str], fold: int, n_test: int = 24, n_val: int = 6, seed: int = 0) -> pd.DataFrame:
    """Predictions of one fold: mostly right, with confident errors on source ``b`` for the first class."""
    rng = np.random.default_rng(seed * 100 + fold)
    k = len(classes)
    rows = []
    for i in range(n_test + n_val):
        true = i % k
        source = "a" if i % 2 == 0 else "b"
        logits = rng.normal(0, 1, k)
        logits[true] += 2.5
        if source == "b" and true == 0 and i % 4 == 1:
            logits[(true + 1) % k] += 4.0  # a source-specific failure
        probs = np.exp(logits) / np.exp(logits).sum()
        rows.append({
            "path": f"/data/{source}/f{fold}_{i:03d}.png",
            "split": "test" if i < n_test else "val",
            "true": classes[true],
            "predicted": classes[int(np.argmax(probs))],
            **{f"prob_{c}": float(p) for c, p in zip(classes, probs)},
            "source": source,
            # patients of 3 images each on source a; source b has no patient ids
            "patient_id": f"p{fold}_{i // 6}" if source == "a" else "",
            "sha256": f"{fold:02d}{i:062d}",
        })
    return pd.DataFrame(rows)


def history(fold: int, epochs: int = 4) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    return pd.DataFrame({
        "epoch": e, "train_loss": 1.0 / e + 0.01 * fold, "train_acc": 1 - 0.5 / e, "val_loss": 1.1 / e + 0.05,
        "val_acc": 1 - 0.6 / e, "lr": 1e-5, "seconds": 2.0, "images_per_s": 50.0,
    })


def make_fake_run(root: Path, task: str = "multiclass", classes: list[str] | None = None, n_folds: int = 5,
                  skip: tuple[str, ...] = ()) -> Path:
    """Write ``root/<task>/fold<k>/{predictions,history}.csv`` and ``root/<task>/splits.csv``; returns ``root``.

    ``skip`` lists ``"fold<k>/<file>"`` entries to leave out (to test missing-artifact errors).
    """
    classes = classes or (MULTICLASS if task == "multiclass" else BINARY)
    root = Path(root)
    split_rows = []
    for k in range(n_folds):
        fold_dir = root / task / f"fold{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        preds = fold_predictions(classes, k)
        if f"fold{k}/predictions.csv" not in skip:
            preds.to_csv(fold_dir / "predictions.csv", index=False)
        if f"fold{k}/history.csv" not in skip:
            history(k).to_csv(fold_dir / "history.csv", index=False)
        test = preds[preds["split"] == "test"]
        for _, r in test.iterrows():
            split_rows.append({"path": r["path"], "label": r["true"], "source": r["source"],
                               "patient_id": r["patient_id"], "group": r["patient_id"] or r["path"], "fold": k,
                               "target": r["true"], "sha256": r["sha256"], "phash": r["sha256"] * (HEX_LEN // 64),  # fingerprint-sized
                               "width": 16, "height": 16, "mask_path": ""})
    pd.DataFrame(split_rows).to_csv(root / task / "splits.csv", index=False)
    return root
