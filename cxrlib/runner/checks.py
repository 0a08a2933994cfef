"""Checks made before anything runs: a usable data root and the registered Jupyter kernel."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CxrError, DataError


class KernelMissingError(CxrError):
    """The Jupyter kernel the notebooks run on is not registered."""


def check_data_root(root: str | os.PathLike) -> Path:
    """Return ``root`` if it is a folder holding something; otherwise raise DataError saying how to get data."""
    path = Path(root)
    if not path.exists():
        problem = "does not exist"
    elif not path.is_dir():
        problem = "is not a folder"
    elif not any(not p.name.startswith(".") for p in path.iterdir()):
        problem = "is empty"
    else:
        return path
    raise DataError(
        f"data root {str(path)!r} {problem}.\n"
        "Get data in one of two ways:\n"
        "  python -m cxrlib fetch --dest data/    # downloads the public sets into data/ "
        "(the Kaggle ones need a Kaggle account)\n"
        "  make run DATA=/path/to/root            # use a data root you already have, e.g. DATA=../shared/data\n"
        "(run_all.py takes the same folder as --data DIR)"
    )


def check_kernel(name: str) -> str:
    """Return the path of Jupyter kernel ``name``; raise KernelMissingError saying how to register it."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        return KernelSpecManager().get_kernel_spec(name).resource_dir
    except NoSuchKernel:
        raise KernelMissingError(
            f"Jupyter kernel {name!r} is not registered, so the notebooks cannot run.\n"
            f"Register it inside the venv:  python -m ipykernel install --sys-prefix --name {name}\n"
            "(`make test` and `make run` do this for you)"
        ) from None
