"""Fake data trees in each native source layout, made of tiny synthetic images (for tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: int = 16, value: int = 0) -> Path:
    """Write a tiny gray image (PNG or JPEG by extension) whose pixels depend on ``value``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = ((np.arange(size * size).reshape(size, size) + 7 * value) % 256).astype(np.uint8)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_kaggle_radiography(root: Path, version: str = "v2", counts: dict[str, int] | None = None) -> Path:
    """Kaggle COVID-19 Radiography Database tree; returns the dataset folder.

    ``version``: ``v1`` (``COVID-19 Radiography Database/COVID-19/COVID-19 (1).png``), ``v2``
    (``COVID-19_Radiography_Dataset/COVID/COVID-1.png``) or ``v4`` (v2 with ``images/`` and ``masks/``).
    ``counts`` maps class folder names to image counts.
    """
    if version == "v1":
        top = Path(root) / "COVID-19 Radiography Database"
        counts = counts or {"COVID-19": 2, "NORMAL": 3, "Viral Pneumonia": 1}
        for cls, n in counts.items():
            for i in range(1, n + 1):
                write_image(top / cls / f"{cls} ({i}).png", value=i)
        (top / "COVID-19.metadata.xlsx").write_bytes(b"not really xlsx")
        return top
    top = Path(root) / "COVID-19_Radiography_Dataset"
    counts = counts or {"COVID": 2, "Normal": 3, "Viral Pneumonia": 1, "Lung_Opacity": 1}
    for cls, n in counts.items():
        for i in range(1, n + 1):
            name = f"{cls}-{i}.png"
            if version == "v4":
                write_image(top / cls / "images" / name, value=i)
                write_image(top / cls / "masks" / name, value=100 + i)
            else:
                write_image(top / cls / name, value=i)
        if version == "v4":
            (top / f"{cls}.metadata.xlsx").write_bytes(b"not really xlsx")
    return top


def make_metadata_repo(
    root: Path,
    name: str,
    rows: list[dict],
    image_column: str | None = "filename",
    missing: tuple[str, ...] = (),
    files: tuple[str, ...] | None = None,
) -> Path:
    """A Cohen-style repository ``root/name/{metadata.csv, images/}``; returns the repository folder.

    ``rows`` are written as the CSV (column order of the first row). An image is written for every
    row's ``image_column`` value (or, when ``files`` is given, exactly those names) except names in ``missing``.
    """
    repo = Path(root) / name
    (repo / "images").mkdir(parents=True, exist_ok=True)
    with open(repo / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    names = files if files is not None else [r[image_column] for r in rows if image_column]
    for i, file_name in enumerate(dict.fromkeys(names)):
        if file_name not in missing:
            write_image(repo / "images" / file_name, value=i)
    return repo


def make_kermany(root: Path, files: dict[str, list[str]], top: str = "chest_xray") -> Path:
    """Kermany tree ``root/top/<split>/<CLASS>/<file>``; ``files`` maps ``split/CLASS`` to file names."""
    base = Path(root) / top
    for folder, names in files.items():
        for i, file_name in enumerate(names):
            write_image(base / folder / file_name, value=i)
    return base


def make_manifest(folder: Path, rows: list[dict], name: str = "manifest.csv", write_images: bool = True) -> Path:
    """Write a generic manifest CSV (and, by default, an image for every relative ``path``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if write_images:
        for i, row in enumerate(rows):
            write_image(folder / row["path"], value=i)
    return folder / name
