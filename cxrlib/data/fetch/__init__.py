"""Download the public chest X-ray sources that need no account, and say how to get the Kaggle ones.

GitHub sources are fetched as ``<base>/<owner>/<repo>/archive/<ref>.zip`` with the stdlib's urllib:
resumable (HTTP Range on a ``.part`` file), checksummed (``dest/FETCHED.json``), unpacked safely into
their native layout under ``dest/<folder>``, and skipped when already present.

Modules: ``catalog`` (what can be fetched), ``download`` (HTTP + manifest), ``unpack``, ``fetcher``, ``cli``.

CLI: ``python -m cxrlib fetch --dest data/`` (see :func:`add_fetch_arguments` / :func:`run_fetch`).
"""

from .catalog import (
    BASE_URL_ENV, DEFAULT_BASE_URL, GITHUB_SOURCES, KAGGLE_SOURCES, FetchError, GitHubSource, KaggleSource,
    OfflineError, default_base_url, get_source,
)
from .cli import add_fetch_arguments, fetch_main, run_fetch
from .catalog import MANIFEST_NAME
from .download import download, read_manifest
from .fetcher import FetchResult, fetch_all, fetch_source, kaggle_instructions, list_sources, manual_instructions
from .unpack import safe_unpack

__all__ = [
    "BASE_URL_ENV", "DEFAULT_BASE_URL", "GITHUB_SOURCES", "KAGGLE_SOURCES", "MANIFEST_NAME", "FetchError",
    "FetchResult", "GitHubSource", "KaggleSource", "OfflineError", "add_fetch_arguments", "default_base_url",
    "download", "fetch_all", "fetch_main", "fetch_source", "get_source", "kaggle_instructions", "list_sources",
    "manual_instructions", "read_manifest", "run_fetch", "safe_unpack",
]
