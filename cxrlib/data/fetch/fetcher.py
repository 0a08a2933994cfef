"""Fetch one or all GitHub sources into ``dest``, skipping those already present; Kaggle instructions."""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional


from ...errors import DataError
from ..images import file_sha256
from .catalog import GITHUB_SOURCES, KAGGLE_SOURCES, FetchError, GitHubSource, Log, OfflineError, get_source
from .download import download, read_manifest, record_fetch
from .unpack import safe_unpack


# --------------------------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    name: str
    folder: Path
    status: str  # "fetched" | "skipped"
    sha256: Optional[str] = None


def fetch_source(
    source: GitHubSource,
    dest: str | os.PathLike,
    *,
    ref: str | None = None,
    sha256: str | None = None,
    base_url: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    log: Log = print,
) -> FetchResult:
    """Fetch one GitHub source into ``dest/<source.folder>`` (skipped when already there).

    ``ref`` and ``sha256`` override the registry's; a configured checksum that differs from the
    archive's raises FetchError. A complete ``<folder>-<ref>.zip`` already in ``dest`` (e.g. copied
    there by hand) is used instead of downloading. The checksum is recorded in ``dest/FETCHED.json``.
    """
    dest = Path(dest)
    ref = ref or source.ref
    expected = (sha256 or source.sha256 or "").lower() or None
    url = source.url(base_url, ref)
    target = dest / source.folder
    record = read_manifest(dest).get(source.name)

    if target.exists() and not force:
        if record and record.get("ref") == ref:
            log(f"{source.name}: already fetched ({source.repo} @ {ref}) in {target}; skipped")
            return FetchResult(source.name, target, "skipped", record.get("sha256"))
        if record:
            raise FetchError(
                f"{target} holds {source.repo} @ {record.get('ref')}, not {ref}; pass --force to replace it"
            )
        log(f"{source.name}: {target} already exists (not fetched by this tool); skipped, use --force to replace it")
        return FetchResult(source.name, target, "skipped", None)

    archive = dest / source.archive_name(ref)
    if archive.exists():
        log(f"{source.name}: using the archive already at {archive}")
    else:
        log(f"{source.name}: downloading {url}")
        try:
            download(url, archive, retries=retries, timeout=timeout, progress=progress, desc=source.name, log=log)
        except OfflineError as exc:
            raise OfflineError(f"{exc}. This machine seems to be offline. {manual_instructions(source, dest, ref, url)}") from None

    digest = file_sha256(archive)
    if expected and digest != expected:
        archive.unlink()
        raise FetchError(
            f"{url}: checksum mismatch: expected sha256 {expected}, got {digest}; the archive was deleted"
        )

    unpacked = target
    if target.exists():  # --force: swap the new folder in, then drop the old one
        unpacked = target.with_name(f".{target.name}.new")
        if unpacked.exists():
            shutil.rmtree(unpacked)
    comment = safe_unpack(archive, unpacked, progress=progress)
    if not (unpacked / source.marker).exists():
        shutil.rmtree(unpacked)
        raise DataError(f"{archive}: unpacked without {source.marker}; the repository layout is not the expected one")
    if unpacked != target:
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left over by an interrupted --force
        os.replace(target, old)
        os.replace(unpacked, target)
        shutil.rmtree(old)

    record_fetch(dest, source.name, {
        "repo": source.repo,
        "ref": ref,
        "commit": comment if comment and re.fullmatch(r"[0-9a-f]{40}", comment) else None,
        "url": url,
        "folder": source.folder,
        "archive": archive.name,
        "bytes": archive.stat().st_size,
        "sha256": digest,
        "fetched_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    if not keep_archive:
        archive.unlink()
    log(f"{source.name}: unpacked into {target} (sha256 {digest})")
    return FetchResult(source.name, target, "fetched", digest)


def manual_instructions(source: GitHubSource, dest: str | os.PathLike, ref: str, url: str) -> str:
    """How to fetch ``source`` by hand when this machine has no internet."""
    return (
        f"To fetch it manually, download {url} on a machine with internet access and copy it to "
        f"{Path(dest) / source.archive_name(ref)}, then run `python -m cxrlib fetch --dest {dest}` again "
        f"(it checks and unpacks the archive); or unzip it yourself so that "
        f"{Path(dest) / source.folder / source.marker} exists."
    )


def fetch_all(
    dest: str | os.PathLike,
    names: Iterable[str] | None = None,
    *,
    refs: Mapping[str, str] | None = None,
    checksums: Mapping[str, str] | None = None,
    log: Log = print,
    **kwargs,
) -> list[FetchResult]:
    """Fetch the named GitHub sources (all when ``names`` is None); kwargs go to :func:`fetch_source`."""
    refs, checksums = dict(refs or {}), dict(checksums or {})
    selected = [get_source(n) for n in names] if names else list(GITHUB_SOURCES)
    for name in list(refs) + list(checksums):
        get_source(name)
    return [
        fetch_source(s, dest, ref=refs.get(s.name), sha256=checksums.get(s.name), log=log, **kwargs)
        for s in selected
    ]


def kaggle_instructions(dest: str | os.PathLike) -> str:
    """The Kaggle CLI commands for the sources that need an account, and where they unpack."""
    lines = [
        "Kaggle sources need a Kaggle account and its CLI (pip install kaggle; API token in ~/.kaggle/kaggle.json):",
    ]
    for source in KAGGLE_SOURCES:
        lines.append(f"  {source.command(dest)}")
        lines.append(f"      -> {Path(dest) / source.folder}/  ({source.description})")
    lines.append("  Keep their native layouts directly under the data root; do not rename the folders.")
    return "\n".join(lines)


def list_sources(dest: str | os.PathLike) -> str:
    """A table of every source, its ref and whether it is present under ``dest``."""
    dest = Path(dest)
    manifest = read_manifest(dest)
    lines = [f"GitHub sources (no account needed; python -m cxrlib fetch --dest {dest}):"]
    for s in GITHUB_SOURCES:
        record = manifest.get(s.name)
        if (dest / s.folder).exists() and record:
            state = f"fetched @ {record.get('ref')} sha256 {str(record.get('sha256'))[:12]}"
        elif (dest / s.folder).exists():
            state = "present (not fetched by this tool)"
        else:
            state = "missing"
        lines.append(f"  {s.name:<10} {s.repo} @ {s.ref} -> {dest / s.folder}  [{state}]")
    lines.append("Kaggle sources:")
    for k in KAGGLE_SOURCES:
        state = "present" if (dest / k.folder).exists() else "missing"
        lines.append(f"  {k.name:<20} {k.slug} -> {dest / k.folder}  [{state}]")
    lines.append(kaggle_instructions(dest))
    return "\n".join(lines)


