"""ROAD's imputation: our COO-built system (cxrlib.cam.imputer) vs pytorch-grad-cam's NoisyLinearImputer.

Grad-CAM-like maps (4 x 4 upsampled to 112 px, as resnet18's layer4 on the CPU profile), the pixels at or above
each ROAD percentile (20, 40, 60, 80) removed and at or below them removed, on 3-channel images: the same fills
from both imputers, side by side, interleaved, best of three. Prints ``max_abs_diff=`` (same seed and noise; the
solves differ only by rounding: ~1e-6 on float32 fills) and ``imputer_ratio=`` library / ours seconds. Usage: python bench/road_imputer.py [--size 112] [--maps 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as nnf
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from cxrlib.cam.imputer import FastLinearImputer


def masks(size: int, n: int) -> list[torch.Tensor]:
    cams = nnf.interpolate(torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0)), size=(size, size),
                           mode="bilinear", align_corners=False)[:, 0]
    out = []
    for cam in cams:
        for p in (20, 40, 60, 80):
            threshold = torch.quantile(cam, p / 100)
            out += [(cam < threshold).float(), (cam > threshold).float()]  # MoRF, LeRF
    return out


def run(imputer, images, ms) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(0)
    start = time.perf_counter()
    filled = [imputer(img, m) for img, m in zip(images, ms)]
    return time.perf_counter() - start, filled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--maps", type=int, default=10)
    args = ap.parse_args()
    ms = masks(args.size, args.maps)
    images = torch.randn(len(ms), 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    lib_s, ours_s = [], []
    for _ in range(3):
        t, lib = run(NoisyLinearImputer(), images, ms)
        lib_s.append(t)
        t, ours = run(FastLinearImputer(), images, ms)
        ours_s.append(t)
    diff = max(float((a - b).abs().max()) for a, b in zip(lib, ours))
    print(f"{len(ms)} fills at {args.size} px: library {min(lib_s) / len(ms) * 1e3:.1f} ms/fill, "
          f"ours {min(ours_s) / len(ms) * 1e3:.1f} ms/fill")
    print(f"max_abs_diff={diff:.3g}")
    print(f"imputer_ratio={min(lib_s) / min(ours_s):.2f}")


if __name__ == "__main__":
    main()
