"""``python -m cxrlib.kernel_fork serve SOCKET [MODULE ...]`` (the server) or ``client SOCKET -- COMMAND ...``."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from .spec import MODULE


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"] and len(args) >= 2:
        from .server import serve

        serve(args[1], args[2:])
    elif args[:1] == ["client"] and len(args) >= 4 and args[2] == "--":
        from .client import client

        sys.exit(client(args[1], args[3:]))
    else:
        sys.exit(f"usage: python -m {MODULE} serve SOCKET [MODULE ...] | client SOCKET -- KERNEL_COMMAND ...")


if __name__ == "__main__":
    main()
