"""``python -m cxrlib predict``: score image files with a run's fold ensemble, write predictions.csv (and CAM
overlays), print a table or JSON. Exit code 0 when at least one image was scored, 2 when none was."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import io
from ..errors import CxrError
from ..layout import PredictLayout, RunLayout


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="PNG/JPEG/DICOM files or folders (recursive)")
    p.add_argument("--run", required=True, help="run folder (results/<run>)")
    p.add_argument("--task", default="multiclass", help="task of the run (multiclass, binary)")
    p.add_argument("--folds", nargs="+", default=["all"], help="'all' (default) or fold numbers")
    p.add_argument("--cam", default=None, metavar="METHOD", help="also write a CAM overlay per image (e.g. gradcam)")
    p.add_argument("--layer", default="layer4", help="CAM layer label (default layer4)")
    p.add_argument("--out", default=None, help="output folder (default <run>/<task>/predict)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def parse_folds(values: list[str]):
    if values == ["all"]:
        return "all"
    try:
        return [int(v) for v in values]
    except ValueError as exc:
        raise CxrError(f"--folds: expected 'all' or fold numbers, got {' '.join(values)}") from exc


def _overlay_writer(ens, out: PredictLayout, method: str, layer: str, counter: list[int]):
    from ..plots import save_figure
    from ..plots.predict import figure_overlay
    from .scoring import ensemble_cams, prob_columns

    def write(images, frame) -> None:
        import numpy as np

        probs = frame[prob_columns(ens.classes)].to_numpy()
        crops, maps = ensemble_cams(ens, np.stack([im.resized for im in images]), probs.argmax(axis=1),
                                    [layer], method)
        for i, im in enumerate(images):
            title = f"{Path(im.path).name}: {frame['predicted'].iloc[i]} ({method}, {layer})"
            save_figure(figure_overlay(crops[i], maps[layer][i], ens.classes, probs[i], title),
                        out.overlay(counter[0], im.path))
            counter[0] += 1

    return write


def run(args: argparse.Namespace) -> int:
    from .ensemble import load_ensemble
    from .inputs import find_images
    from .scoring import layer_names, predict_paths

    ens = load_ensemble(args.run, args.task, parse_folds(args.folds), args.device)
    paths = find_images(args.inputs)
    out = PredictLayout(Path(args.out) if args.out else RunLayout(args.run).task(args.task).predict_dir)
    writer = _overlay_writer(ens, out, args.cam, args.layer, [0]) if args.cam else None
    if args.cam:  # an unknown layer fails before any image is read
        layer_names(ens, [args.layer])
    result = predict_paths(ens, paths, args.batch_size, progress=True, on_chunk=writer)
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(result.frame):
        io.write_csv(out.predictions, result.frame)
    if args.json:
        print(json.dumps(io.json_safe({"predictions": result.frame.to_dict(orient="records"),
                                       "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
                                       "out": str(out.predictions) if len(result.frame) else None}), indent=1))
    elif len(result.frame):
        show = result.frame[["path", "predicted", *[f"prob_{c}" for c in ens.classes], "disagreement", "warning"]]
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {out.predictions} ({len(result.frame)} image(s), folds {ens.folds})")
    if not len(result.frame):
        print(f"error: no image could be scored ({len(paths)} file(s) found)", file=sys.stderr)
        return 2
    return 0
