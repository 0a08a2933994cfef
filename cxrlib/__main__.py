"""Command line: ``python -m cxrlib {fetch,splits,audit,predict,export} ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CxrError


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=None, help="params YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set data.resize=128 (repeatable)")


def _cmd_splits(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.splits import build_splits, write_splits
    from . import io

    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    cfg = load_config(args.params, overrides)
    result = build_splits(cfg, args.task, progress=True)
    out = Path(args.out)
    write_splits(out, result.splits)
    if len(result.quality):
        quality_path = out.with_name(out.stem + "_quality.csv")
        io.write_csv(quality_path, result.quality)
        print(f"{len(result.quality)} unreadable image(s) excluded: see {quality_path}")
    for label, count in sorted(result.dropped.items()):
        print(f"dropped {count} image(s) labelled {label} (not in task {args.task})")
    print(result.audit.summary)
    print(f"wrote {out} ({len(result.splits)} images, {result.splits['fold'].nunique()} folds)")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.splits import audit, read_splits

    cfg = load_config(args.params, args.overrides)
    report = audit(read_splits(args.splits), cfg.data.near_duplicate_threshold)
    print(report.summary)
    return 0 if report.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_ensemble
    from .predict.cli import parse_folds

    model, card = export_ensemble(args.run, args.task, args.format, parse_folds(args.folds), args.out)
    print(f"wrote {model} and {card}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cxrlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from .data import fetch

    p_fetch = sub.add_parser("fetch", help="download the public data sets (and print Kaggle instructions)")
    fetch.add_fetch_arguments(p_fetch)
    p_fetch.set_defaults(func=fetch.run_fetch)

    p_splits = sub.add_parser("splits", help="scan a data root and write leakage-free folds for a task")
    p_splits.add_argument("--data", default=None, help="data root (default: params data.root)")
    p_splits.add_argument("--task", default="multiclass", help="task name from params (multiclass, binary)")
    p_splits.add_argument("--out", required=True, help="splits CSV to write")
    _add_params(p_splits)
    p_splits.set_defaults(func=_cmd_splits)

    p_audit = sub.add_parser("audit", help="check a splits CSV for groups or images shared between folds")
    p_audit.add_argument("splits", help="splits CSV written by 'splits'")
    _add_params(p_audit)  # data.near_duplicate_threshold
    p_audit.set_defaults(func=_cmd_audit)

    from .predict import cli as predict_cli

    predict_cli.add_arguments(sub.add_parser("predict", help="score image files with a run's fold ensemble"))

    p_export = sub.add_parser("export", help="write the fold ensemble as one TorchScript or ONNX model + model card")
    p_export.add_argument("--run", required=True, help="run folder (results/<run>)")
    p_export.add_argument("--task", default="multiclass", help="task of the run (multiclass, binary)")
    p_export.add_argument("--format", default="torchscript", choices=("torchscript", "onnx"))
    p_export.add_argument("--folds", nargs="+", default=["all"], help="'all' (default) or fold numbers")
    p_export.add_argument("--out", default=None, help="output folder (default <run>/<task>/export)")
    p_export.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
