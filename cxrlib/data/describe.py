"""What a data table holds, as tables for readers: the source audit, patients, image sizes, fold composition."""

from __future__ import annotations

import pandas as pd


def class_source_counts(table: pd.DataFrame, column: str = "label") -> pd.DataFrame:
    """Images per class x source with totals: the source audit (a class from one source only is a shortcut risk)."""
    return pd.crosstab(table[column], table["source"], margins=True, margins_name="total")


def images_per_patient(table: pd.DataFrame) -> pd.DataFrame:
    """Per source: images, patients known, images without a patient id, and images per patient (mean, max)."""
    rows = []
    for source, part in table.groupby("source", sort=True):
        known = part[part["patient_id"] != ""]
        per = known.groupby("patient_id").size()
        rows.append({
            "source": source,
            "images": len(part),
            "patients": int(per.size),
            "images_without_patient": int(len(part) - len(known)),
            "images_per_patient_mean": round(float(per.mean()), 2) if per.size else float("nan"),
            "images_per_patient_max": int(per.max()) if per.size else 0,
        })
    return pd.DataFrame(rows).set_index("source")


def size_table(table: pd.DataFrame) -> pd.DataFrame:
    """Most common original image sizes per source (mixed geometry must be resized in the loader)."""
    sizes = table.assign(size=table["width"].astype(str) + "x" + table["height"].astype(str))
    counts = sizes.groupby(["source", "size"]).size().rename("images").reset_index()
    return counts.sort_values(["source", "images"], ascending=[True, False]).groupby("source").head(5).reset_index(drop=True)


def fold_composition(splits: pd.DataFrame) -> pd.DataFrame:
    """Images per fold x task class, each class's share (%) and its deviation from the whole (pp)."""
    counts = pd.crosstab(splits["fold"], splits["target"])
    share = counts.div(counts.sum(axis=1), axis=0) * 100
    overall = splits["target"].value_counts(normalize=True) * 100
    deviation = (share - overall[share.columns]).abs()
    out = counts.copy()
    for cls in counts.columns:
        out[f"{cls} %"] = share[cls].round(1)
    out["images"] = counts.sum(axis=1)
    out["groups"] = splits.groupby("fold")["group"].nunique()
    out["max deviation (pp)"] = deviation.max(axis=1).round(2)
    return out
