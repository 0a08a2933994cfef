"""What the server, its client and its owner agree on: the kernel commands that can be forked, the signals that
are forwarded, the request's framing, and which modules the notebooks import."""

from __future__ import annotations

import ast
import os
import signal
import struct
from typing import Iterable, Optional, Sequence

MODULE = "cxrlib.kernel_fork"  # outside cxrlib.runner: the client starts per kernel and imports nothing heavy
#: modules whose kernels the server can fork: ipykernel's launchers
KERNEL_MODULES = ("ipykernel_launcher", "ipykernel")
FORWARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
                  if hasattr(signal, name))  # (Windows has only the first two; the server is Linux-only anyway)
HEADER = struct.Struct("!I")  # the request body's length, sent with the client's three standard streams


def notebook_imports(notebooks: Iterable[str | os.PathLike]) -> list[str]:
    """Modules imported by the code cells of ``notebooks`` (``import a.b``, ``from a.b import c``), sorted; cells
    that are not plain Python (magics) are skipped."""
    import nbformat

    found: set[str] = set()
    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
    return sorted(found)


def kernel_command(argv: Sequence[str]) -> Optional[tuple[list[str], list[str]]]:
    """(interpreter with its options, the kernel's own arguments) of an ipykernel kernel spec command such as
    ``python -Xfrozen_modules=off -m ipykernel_launcher -f {connection_file}``; None for any other kernel."""
    argv = list(argv)
    if "-m" not in argv:
        return None
    i = argv.index("-m")
    if i + 1 >= len(argv) or argv[i + 1] not in KERNEL_MODULES:
        return None
    return argv[:i], argv[i + 2:]
