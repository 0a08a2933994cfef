"""Grad-CAM speed: our five-layer one-pass Grad-CAM vs pytorch-grad-cam's GradCAM once per layer.

ResNet50 (random weights, eval mode), 224 px, batch of 8, on CPU, side by side in one process. Prints
images/s and peak resident-memory growth of each, then ``max_abs_diff=`` (target <= 1e-5) and
``ratio=`` ours/library throughput (target >= 3.0).

    .venv/bin/python bench/cam_speed.py [--batch 8] [--size 224] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch
from pytorch_grad_cam import GradCAM as LibGradCAM

from cxrlib.cam import GradCAM
from cxrlib.models import build_model, cam_layers


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRss:
    """Samples resident memory every 2 ms in a thread; ``growth`` is the peak above the level at entry."""

    def __enter__(self):
        self.start = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())
        self.growth = self.peak - self.start
        return None


def ours(model, layers, x):
    with GradCAM(model, layers) as cam:
        return cam(x, targets="predicted").maps


def library(model, layers, x):
    maps = {}
    for label, name in layers.items():
        cam = LibGradCAM(model=model, target_layers=[model.get_submodule(name)])
        try:
            maps[label] = cam(x, targets=None)  # None: the library takes the arg-max class itself
        finally:
            cam.activations_and_grads.release()
    return maps


def timed(fn, repeats: int):
    fn()  # warm-up
    with PeakRss() as mem:
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        seconds = (time.perf_counter() - start) / repeats
    return out, seconds, mem.growth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("resnet50", 3, weights="none").eval()
    layers = cam_layers("resnet50")
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print(f"resnet50 eval, {args.size}px, batch {args.batch}, layers {list(layers)}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    lib_maps, lib_s, lib_mem = timed(lambda: library(model, layers, x), args.repeats)
    our_maps, our_s, our_mem = timed(lambda: ours(model, layers, x), args.repeats)
    print(f"library GradCAM x{len(layers)} calls: {args.batch / lib_s:8.2f} images/s  "
          f"({lib_s:.2f} s/batch, peak RSS +{lib_mem:.0f} MiB)")
    print(f"ours, one pass:          {args.batch / our_s:8.2f} images/s  "
          f"({our_s:.2f} s/batch, peak RSS +{our_mem:.0f} MiB)")
    diff = max(float(np.abs(our_maps[l] - lib_maps[l]).max()) for l in layers)
    print(f"max_abs_diff={diff:.3g}")
    print(f"ratio={lib_s / our_s:.2f}")


if __name__ == "__main__":
    main()
