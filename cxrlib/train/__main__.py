"""``python -m cxrlib.train`` (or under ``torchrun --nproc-per-node N``): train one (task, fold)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..errors import CxrError
from .fold import train_fold

def main(argv: Optional[list[str]] = None) -> int:
    """``python -m cxrlib.train`` (or under ``torchrun --nproc-per-node N``)."""
    from ..config import load_config

    parser = argparse.ArgumentParser(prog="python -m cxrlib.train", description="Train one (task, fold) of the study (several GPUs: under torchrun).")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--params", default=None, help="params YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="retrain a finished fold")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.params, args.overrides)
        train_fold(cfg, args.run_dir, args.task, args.fold, force=args.force, progress=False)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
