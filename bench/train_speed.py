"""Training speed of cxrlib vs a plain torchvision loop, side by side in one process (CPU).

Same model (resnet18), batch, image size and in-memory uint8 data for both:
- full: end-to-end training images/s; cxrlib (batched augmentation, channels_last from 96 px crops on CPU)
  vs a DataLoader with per-sample torchvision.transforms.v2 (random crop, flip, normalise), at the CPU
  profile's crop size (params/cpu.yaml) and at 64 and 128 px. Target full_ratio >= 1.2 at the profile's size.
- frozen: a frozen backbone trained 20 epochs; cxrlib's feature cache (backbone run once on each image and
  its mirror) vs the plain loop running the backbone forward every epoch. Target frozen_ratio >= 8.
Then the peak RSS of one params/cpu.yaml fold (synthetic images of its size and count, 1 epoch) in a
subprocess. Prints ``full_ratio=...`` and ``frozen_ratio=...`` last. Usage: python bench/train_speed.py
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2

from cxrlib.config import load_config
from cxrlib.data.phash import HEX_LEN
from cxrlib.models import build_model
from cxrlib.train import FoldData, fit
from cxrlib.transforms import IMAGENET_MEAN, IMAGENET_STD

REPO = Path(__file__).resolve().parents[1]
RESIZE, SIZE, BATCH, N_TRAIN, N_VAL = 72, 64, 32, 256, 32  # RESIZE/SIZE: set per measurement by use_size()
FROZEN_EPOCHS = 20


def use_size(size: int) -> None:
    """Measure at ``size`` px crops of ``size * 9 // 8`` px images (the profiles' ratio)."""
    global RESIZE, SIZE
    RESIZE, SIZE = size * 9 // 8, size


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    images = rng.integers(0, 200, (n, RESIZE, RESIZE), dtype=np.uint8)
    for i, t in enumerate(targets):
        images[i, t * 20:t * 20 + 20] += 50
    return images, targets


def fold_data() -> FoldData:
    (xt, yt), (xv, yv) = synthetic(N_TRAIN, 0), synthetic(N_VAL, 1)
    split = np.array(["train"] * N_TRAIN + ["val"] * N_VAL)
    return FoldData(pd.DataFrame(index=range(len(split))), np.concatenate([xt, xv]), np.concatenate([yt, yv]),
                    split, ["a", "b", "c"])


def train_cfg(**changes):
    cfg = load_config(REPO / "params" / "cpu.yaml", ["train.device=cpu"]).train
    return dataclasses.replace(cfg, image_size=SIZE, batch_size=BATCH, optimizer="sgd", lr=0.01,
                               scheduler="none", patience=100, **changes)


def cxrlib_run(epochs: int, freeze: str) -> float:
    """Training images/s of cxrlib's fit over ``epochs`` (wall time, validation included)."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3, freeze=freeze)
    t = train_cfg(epochs=epochs, feature_cache=True)
    start = time.perf_counter()
    fit(model, fold_data(), t, None, {}, torch.device("cpu"), echo=lambda msg: None)
    return epochs * N_TRAIN / (time.perf_counter() - start)


class _PlainSet(torch.utils.data.Dataset):
    def __init__(self, images, targets, transform):
        self.images, self.targets, self.transform = torch.from_numpy(images)[:, None], targets, transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(self.images[i].expand(3, -1, -1)), int(self.targets[i])


def plain_run(epochs: int, freeze: bool) -> float:
    """The textbook loop: DataLoader + per-sample v2 transforms, forward/backward every epoch, validation."""
    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    if freeze:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("fc."))
    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))]
    train_tf = v2.Compose([v2.RandomCrop(SIZE), v2.RandomHorizontalFlip(), *norm])
    val_tf = v2.Compose([v2.CenterCrop(SIZE), *norm])
    data = fold_data()
    xt, yt = data.part("train")
    xv, yv = data.part("val")
    train = torch.utils.data.DataLoader(_PlainSet(xt, yt, train_tf), batch_size=BATCH, shuffle=True)
    val = torch.utils.data.DataLoader(_PlainSet(xv, yv, val_tf), batch_size=BATCH)
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


def main() -> None:
    print(f"CPU threads: {torch.get_num_threads()}; resnet18, batch {BATCH}, {SIZE} px crops of {RESIZE} px, "
          f"{N_TRAIN} train + {N_VAL} val images in memory", flush=True)
    profile = load_config(REPO / "params" / "cpu.yaml").train.image_size
    ratios = {}
    for size in sorted({64, 128, profile}):
        use_size(size)
        cxr_full, plain_full = [], []
        for _ in range(3):  # interleaved, best of three: the machine may be shared
            cxr_full.append(cxrlib_run(1, "none"))
            plain_full.append(plain_run(1, freeze=False))
        ratios[size] = max(cxr_full) / max(plain_full)
        print(f"full {size:3d} px: cxrlib {max(cxr_full):7.1f} img/s   plain {max(plain_full):7.1f} img/s   "
              f"full_ratio_{size}={ratios[size]:.2f}", flush=True)
    use_size(64)
    cxr_frozen = cxrlib_run(FROZEN_EPOCHS, "backbone")
    plain_frozen = plain_run(FROZEN_EPOCHS, freeze=True)
    print(f"frozen: cxrlib {cxr_frozen:7.1f} img/s   plain {plain_frozen:7.1f} img/s "
          f"({FROZEN_EPOCHS} epochs, feature cache vs backbone forward every epoch)", flush=True)
    print(f"cpu.yaml fold (synthetic, 1 epoch): {peak_rss_of_cpu_fold()}", flush=True)
    print(f"full_ratio={ratios[profile]:.2f}  (at the CPU profile's {profile} px)")
    print(f"frozen_ratio={cxr_frozen / plain_frozen:.2f}")


if __name__ == "__main__":
    main()
