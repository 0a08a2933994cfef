"""``python -m cxrlib fetch``: arguments and entry point."""

from __future__ import annotations

import argparse
import sys


from ...errors import CxrError
from .catalog import BASE_URL_ENV, DEFAULT_BASE_URL, GITHUB_SOURCES, FetchError
from .fetcher import fetch_all, kaggle_instructions, list_sources


# --------------------------------------------------------------------------------------------- CLI


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        name, sep, item = value.partition("=")
        if not sep or not name or not item:
            raise FetchError(f"{option} {value!r}: expected NAME=VALUE, e.g. {option} cohen=<commit>")
        out[name.strip()] = item.strip()
    return out


def add_fetch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``fetch`` options to ``parser`` (a subcommand parser of the cxrlib CLI)."""
    names = [s.name for s in GITHUB_SOURCES]
    parser.add_argument("--dest", default="data", help="data root to unpack into (default: data)")
    parser.add_argument("--source", action="append", choices=names, metavar="NAME",
                        help=f"fetch only this source (repeatable; one of {', '.join(names)}; default: all)")
    parser.add_argument("--ref", action="append", default=[], metavar="NAME=REF",
                        help="fetch another commit/tag/branch of a source, e.g. --ref cohen=<commit>")
    parser.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                        help="expected sha256 of a source's archive; a mismatch is an error")
    parser.add_argument("--base-url", default=None,
                        help=f"server to download from (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})")
    parser.add_argument("--list", action="store_true", help="list the sources and what is present, then exit")
    parser.add_argument("--force", action="store_true", help="re-fetch and replace sources already present")
    parser.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip next to the folder")
    parser.add_argument("--retries", type=int, default=3, help="resume attempts after a dropped connection")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def run_fetch(args: argparse.Namespace) -> int:
    """Run ``fetch`` with parsed arguments; raises CxrError subclasses on failure, returns 0."""
    if args.list:
        print(list_sources(args.dest))
        return 0
    fetch_all(
        args.dest, args.source,
        refs=_pairs(args.ref, "--ref"), checksums=_pairs(args.sha256, "--sha256"),
        base_url=args.base_url, force=args.force, keep_archive=args.keep_archive,
        retries=args.retries, timeout=args.timeout, progress=not args.no_progress,
    )
    print()
    print(kaggle_instructions(args.dest))
    return 0


def fetch_main(argv: list[str] | None = None) -> int:
    """Standalone entry point: parse ``argv``, run, print CxrErrors without a traceback (exit 1)."""
    parser = add_fetch_arguments(argparse.ArgumentParser(prog="cxrlib fetch", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        return run_fetch(args)
    except CxrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(fetch_main())

