"""Training speed of cxrlib vs a plain torchvision loop, side by side in one process (CPU).

Each side runs in a python process of its own (cxrlib's training sets process-wide state: train.retain_memory),
measurements interleaved. Same model (the CPU profile's model.arch), batch 32, crop size and images (256 synthetic
256x256 grayscale PNGs to train on, 32 to validate; ImageNet normalisation, random crop + flip) on both sides;
runs interleaved, best of three, one epoch with its validation pass, at the CPU profile's crop size
(params/cpu.yaml: 112 px crops of 128 px images) and at
64 and 128 px (images of size * 9 // 8 px, the profiles' ratio).
- full_ratio: cxrlib as a fold trains (its decoded image cache already built, as once per study for all folds
  and tasks; reading the cache's .npy files into one uint8 array is timed, then fit: batched augmentation,
  channels_last from 96 px crops on CPU) vs the textbook loop (ImageFolder over the PNGs: PIL opens, decodes
  and converts every image to RGB every epoch, transforms Resize, RandomCrop, RandomHorizontalFlip, ToTensor,
  Normalize, DataLoader shuffle; measured with 0 and 2 workers, the faster counts). The cache's build time
  (decode + resize of the PNGs) is printed too. Target full_ratio >= 1.2 at the profile's size.
- compute_ratio: the same data handling on both sides, compute only: both get the decoded images as one uint8
  array in memory; cxrlib's fit vs a DataLoader with per-sample torchvision.transforms.v2 (crop, flip, normalise).
- frozen_ratio: a frozen backbone trained 20 epochs at 64 px, in memory; cxrlib's feature cache (backbone run once
  on each image and its mirror) vs the plain loop running the backbone forward every epoch. Target >= 8.
Then the peak RSS of one params/cpu.yaml fold (synthetic images of its size and count, 1 epoch) in a
subprocess. Prints ``full_ratio=...`` (profile size), ``compute_ratio=...`` and ``frozen_ratio=...`` last.
Usage: python bench/train_speed.py
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from cxrlib.config import load_config
from cxrlib.data.images import file_sha256, load_images
from cxrlib.models import build_model
from cxrlib.train import FoldData, fit
from cxrlib.transforms import IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]
RESIZE, SIZE, BATCH, N_TRAIN, N_VAL = 72, 64, 32, 256, 32  # RESIZE/SIZE: set per measurement by use_size()
CLASSES, SOURCE_PX, FROZEN_EPOCHS = ["a", "b", "c"], 256, 20
NORM = (list(IMAGENET_MEAN), list(IMAGENET_STD))
ARCH = load_config(REPO / "params" / "cpu.yaml").model.arch  # both sides train the profile's network


def use_size(size: int) -> None:
    """Measure at ``size`` px crops of ``size * 9 // 8`` px images (the profiles' ratio)."""
    global RESIZE, SIZE
    RESIZE, SIZE = size * 9 // 8, size


@dataclasses.dataclass
class Study:
    """The synthetic PNGs on disk: ``<root>/{train,val}/<class>/<i>.png``, as an ImageFolder reads them."""

    root: Path
    paths: list[str]
    sha256: list[str]
    targets: np.ndarray
    split: np.ndarray


def write_pngs(root: Path) -> Study:
    """Smooth grayscale 256x256 images with a class-dependent bright band and mild noise (~27 KB each, like
    the development data's 224 px PNGs at ~22 KB)."""
    rng = np.random.default_rng(0)
    paths, targets, split = [], [], []
    for i in range(N_TRAIN + N_VAL):
        part, t = ("train" if i < N_TRAIN else "val"), i % len(CLASSES)
        low = rng.integers(40, 200, (8, 8), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((SOURCE_PX, SOURCE_PX), Image.BICUBIC), dtype=np.float64)
        img[t * 80:t * 80 + 60] += 40
        path = root / part / CLASSES[t] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img + rng.normal(0, 1, img.shape), 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
        targets.append(t)
        split.append(part)
    return Study(root, paths, [file_sha256(p) for p in paths], np.array(targets), np.array(split))


def load_fold(study: Study) -> FoldData:
    """The fold's images as cxrlib.train.load_fold_data reads them: the cached .npy files into one uint8 array."""
    images = load_images(study.paths, study.sha256, resize=RESIZE, cache_dir=study.root / "cache")
    return FoldData(pd.DataFrame(index=range(len(study.paths))), images, study.targets, study.split, CLASSES)


def train_cfg(**changes):
    cfg = load_config(REPO / "params" / "cpu.yaml", ["train.device=cpu"]).train
    return dataclasses.replace(cfg, image_size=SIZE, batch_size=BATCH, optimizer="sgd", lr=0.01,
                               scheduler="none", patience=100, progressive_from=0, **changes)  # one fixed size


def cxrlib_run(epochs: int, freeze: str, data) -> float:
    """Training images/s of cxrlib's fit over ``epochs`` (wall time, validation included); ``data`` is a FoldData
    (in memory) or a callable returning one (then its time counts)."""
    torch.manual_seed(0)
    model = build_model(ARCH, 3, freeze=freeze)
    t = train_cfg(epochs=epochs, feature_cache=True)
    start = time.perf_counter()
    fit(model, data() if callable(data) else data, t, None, {}, torch.device("cpu"), echo=lambda msg: None)
    return epochs * N_TRAIN / (time.perf_counter() - start)


class _PlainSet(torch.utils.data.Dataset):
    def __init__(self, images, targets, transform):
        self.images, self.targets, self.transform = torch.from_numpy(images)[:, None], targets, transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(self.images[i].expand(3, -1, -1)), int(self.targets[i])


def in_memory_sets(data: FoldData):
    """The decoded images in memory, per-sample v2 transforms (the compute-only comparison)."""
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*NORM)]
    train = _PlainSet(*data.part("train"), v2.Compose([v2.RandomCrop(SIZE), v2.RandomHorizontalFlip(), *norm]))
    return train, _PlainSet(*data.part("val"), v2.Compose([v2.CenterCrop(SIZE), *norm]))


def textbook_sets(study: Study):
    """The textbook loop's data: ImageFolder opens each PNG with PIL (converted to RGB) every epoch."""
    norm = [transforms.ToTensor(), transforms.Normalize(*NORM)]
    train_tf = transforms.Compose([transforms.Resize(RESIZE), transforms.RandomCrop(SIZE),
                                   transforms.RandomHorizontalFlip(), *norm])
    val_tf = transforms.Compose([transforms.Resize(RESIZE), transforms.CenterCrop(SIZE), *norm])
    return ImageFolder(str(study.root / "train"), train_tf), ImageFolder(str(study.root / "val"), val_tf)


def plain_run(epochs: int, freeze: bool, sets, workers: int = 0) -> float:
    """The plain loop: DataLoader + per-sample transforms, forward/backward every epoch, validation."""
    torch.manual_seed(0)
    model = build_model(ARCH, 3)
    if freeze:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("fc."))
    train = torch.utils.data.DataLoader(sets[0], batch_size=BATCH, shuffle=True, num_workers=workers)
    val = torch.utils.data.DataLoader(sets[1], batch_size=BATCH, num_workers=workers)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        if freeze:
            for name, module in model.named_children():
                if name != "fc":
                    module.eval()
        for x, y in train:
            loss = nnf.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, y in val:
                nnf.cross_entropy(model(x), y)
    return epochs * N_TRAIN / (time.perf_counter() - start)


RSS_CHILD = r"""
import hashlib, resource, sys
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image
from cxrlib.config import load_config
from cxrlib.data.phash import HEX_LEN
from cxrlib.data.splits import SPLIT_COLUMNS, write_splits
from cxrlib.train import train_fold
root = Path(sys.argv[1]); cfg = load_config(sys.argv[2], ["train.epochs=1", "train.device=cpu",
                                                          f"data.cache_dir={root / 'cache'}"])
rng = np.random.default_rng(0); rows = []
for c in cfg.task_classes("multiclass"):
    for i in range(cfg.data.max_per_class):
        p = root / "img" / f"{c}{i}.png"; p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(p)
        rows.append({"path": str(p), "label": c, "source": "s", "patient_id": f"{c}{i}", "group": f"{c}{i}",
                     "fold": i % 5, "target": c, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                     "phash": "0" * HEX_LEN, "width": 256, "height": 256, "mask_path": ""})
write_splits(root / "run" / "multiclass" / "splits.csv", pd.DataFrame(rows, columns=list(SPLIT_COLUMNS)))
train_fold(cfg, root / "run", "multiclass", 0, progress=False)
print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def peak_rss_of_cpu_fold() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", RSS_CHILD, tmp, str(REPO / "params" / "cpu.yaml")],
                              capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return [line for line in proc.stdout.splitlines() if line.startswith("peak_rss_mb=")][-1]


_FOLDS: dict[int, FoldData] = {}


def _fold_in_memory(size: int, study: Study) -> FoldData:
    if size not in _FOLDS:
        use_size(size)
        _FOLDS[size] = load_fold(study)
    return _FOLDS[size]


def measure(kind: str, size: int, study: Study) -> float:
    """One measurement (training images/s) of ``kind`` at ``size`` px, in this process."""
    use_size(size)
    if kind == "cxr_full":
        return cxrlib_run(1, "none", lambda: load_fold(study))
    if kind == "cxr_mem":
        return cxrlib_run(1, "none", _fold_in_memory(size, study))
    if kind == "cxr_frozen":
        return cxrlib_run(FROZEN_EPOCHS, "backbone", _fold_in_memory(size, study))
    if kind in ("book0", "book2"):
        return plain_run(1, False, textbook_sets(study), workers=int(kind[-1]))
    if kind == "plain_mem":
        return plain_run(1, False, in_memory_sets(_fold_in_memory(size, study)))
    if kind == "plain_frozen":
        return plain_run(FROZEN_EPOCHS, True, in_memory_sets(_fold_in_memory(size, study)))
    raise ValueError(kind)


def _serve(conn) -> None:
    while (request := conn.recv()) is not None:
        conn.send(measure(*request))


class Side:
    """A python process of its own for one side of the comparison: cxrlib's training sets process-wide state
    (its allocator setting, train.retain_memory) that must not leak into the plain loop's measurements."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,))  # not daemonic: DataLoader workers
        self.proc.start()

    def __call__(self, kind: str, size: int, study: Study) -> float:
        self.conn.send((kind, size, study))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join()


def main() -> None:
    profile = load_config(REPO / "params" / "cpu.yaml").train.image_size
    print(f"CPU threads: {torch.get_num_threads()}; {ARCH}, batch {BATCH}, {N_TRAIN} train + {N_VAL} val "
          f"synthetic {SOURCE_PX}x{SOURCE_PX} grayscale PNGs; crops of size * 9 // 8 px images; each side in "
          f"a process of its own", flush=True)
    full, compute = {}, {}
    cxr, plain = Side(), Side()
    with tempfile.TemporaryDirectory() as tmp:
        study = write_pngs(Path(tmp))
        for size in sorted({64, 128, profile}):
            use_size(size)
            tick = time.perf_counter()
            load_fold(study)  # builds the cache (decode + resize); later reads hit it
            print(f"{size} px crops of {RESIZE} px: cxrlib's image cache built in {time.perf_counter() - tick:.2f} s "
                  f"(decode + resize of {len(study.paths)} PNGs, once per study)", flush=True)
            runs: dict[str, list[float]] = {k: [] for k in ("cxr_full", "book0", "book2", "cxr_mem", "plain_mem")}
            for _ in range(3):  # interleaved, best of three: the machine may be shared
                for kind in runs:
                    runs[kind].append((cxr if kind.startswith("cxr") else plain)(kind, size, study))
            best = {k: max(v) for k, v in runs.items()}
            full[size] = best["cxr_full"] / max(best["book0"], best["book2"])
            compute[size] = best["cxr_mem"] / best["plain_mem"]
            print(f"  full    {size:3d} px: cxrlib (cache read) {best['cxr_full']:6.1f} img/s   textbook "
                  f"{max(best['book0'], best['book2']):6.1f} img/s (workers 0: {best['book0']:.1f}, "
                  f"2: {best['book2']:.1f})   full_ratio_{size}={full[size]:.2f}", flush=True)
            print(f"  compute {size:3d} px: cxrlib {best['cxr_mem']:6.1f} img/s   plain in memory "
                  f"{best['plain_mem']:6.1f} img/s   compute_ratio_{size}={compute[size]:.2f}", flush=True)
        frozen = [(cxr("cxr_frozen", 64, study), plain("plain_frozen", 64, study)) for _ in range(3)]
        cxr_frozen, plain_frozen = max(f[0] for f in frozen), max(f[1] for f in frozen)
    cxr.close()
    plain.close()
    print(f"frozen: cxrlib {cxr_frozen:7.1f} img/s   plain {plain_frozen:7.1f} img/s "
          f"({FROZEN_EPOCHS} epochs, feature cache vs backbone forward every epoch)", flush=True)
    print(f"cpu.yaml fold (synthetic, 1 epoch): {peak_rss_of_cpu_fold()}", flush=True)
    print(f"full_ratio={full[profile]:.2f}  (at the CPU profile's {profile} px; vs the textbook ImageFolder loop)")
    print(f"compute_ratio={compute[profile]:.2f}  (at {profile} px; same decoded images in memory on both sides)")
    print(f"frozen_ratio={cxr_frozen / plain_frozen:.2f}")


if __name__ == "__main__":
    main()
