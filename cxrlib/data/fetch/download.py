"""Resumable, checksummed HTTP downloads and the ``FETCHED.json`` manifest of what was fetched."""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from ... import io
from ...errors import DataError
from .catalog import CHUNK, MANIFEST_NAME, USER_AGENT, FetchError, Log, OfflineError


# --------------------------------------------------------------------------------------------- manifest


def read_manifest(dest: str | os.PathLike) -> dict[str, dict]:
    """The ``{source name: record}`` entries of ``dest/FETCHED.json`` ({} when absent)."""
    path = Path(dest) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        data = io.read_json(path)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); delete it to re-fetch") from exc
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict):
        raise DataError(f"{path}: expected an object with a 'sources' mapping; delete it to re-fetch")
    return sources


def record_fetch(dest: Path, name: str, record: dict) -> None:
    sources = read_manifest(dest)
    sources[name] = record
    io.write_json(dest / MANIFEST_NAME, {"sources": sources})


# --------------------------------------------------------------------------------------------- download


class _Interrupted(Exception):
    """The transfer stopped early; the .part file keeps what arrived."""


class _Restart(Exception):
    """The server cannot continue the .part file; start from zero."""


def download(
    url: str,
    archive: str | os.PathLike,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    desc: str | None = None,
    log: Log = print,
) -> Path:
    """Download ``url`` to ``archive`` through ``archive.part``, resuming with HTTP Range.

    A dropped connection is resumed up to ``retries`` times; after that the ``.part`` file stays for
    the next call to resume. A server that ignores Range restarts the file from zero. Raises
    OfflineError when the server cannot be reached and FetchError on HTTP errors.
    """
    archive = Path(archive)
    part = archive.with_name(archive.name + ".part")
    archive.parent.mkdir(parents=True, exist_ok=True)
    failures = restarts = 0
    while True:
        try:
            _download_once(url, part, timeout=timeout, progress=progress, desc=desc or archive.name, log=log)
            break
        except _Restart as exc:
            restarts += 1
            if restarts > 2:
                raise FetchError(f"{url}: the server's replies do not match the requested ranges ({exc})") from None
            log(f"{desc or archive.name}: {exc}; restarting the download from zero")
            part.unlink(missing_ok=True)
            _etag_path(part).unlink(missing_ok=True)
        except _Interrupted as exc:
            failures += 1
            have = part.stat().st_size if part.exists() else 0
            if failures > retries:
                raise FetchError(
                    f"download of {url} was interrupted ({exc}); {part} keeps {have} bytes. "
                    "Run the same command again to resume."
                ) from None
            log(f"{desc or archive.name}: interrupted at {have} bytes ({exc}); resuming ({failures}/{retries})")
    os.replace(part, archive)
    _etag_path(part).unlink(missing_ok=True)
    return archive


def _etag_path(part: Path) -> Path:
    return part.with_name(part.name + ".etag")


def _download_once(url: str, part: Path, *, timeout: float, progress: bool, desc: str, log: Log) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        etag_file = _etag_path(part)
        if etag_file.exists():
            headers["If-Range"] = etag_file.read_text(encoding="utf-8").strip()
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            raise _Restart(f"the server cannot resume at byte {offset} (HTTP 416)") from None
        hint = " (check the repository and ref)" if exc.code == 404 else ""
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise OfflineError(f"cannot reach {url}: {exc.reason}") from None
    except (http.client.HTTPException, OSError) as exc:  # connected, but the reply broke off
        raise _Interrupted(f"{type(exc).__name__}: {exc}") from None

    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                raise _Restart(f"asked to resume at byte {offset}, the server sent byte {start}")
            if total is None and length is not None:
                total = offset + length
            mode = "ab"
        else:
            if offset:
                log(f"{desc}: the server ignored the range request; restarting from zero")
            offset, total, mode = 0, length, "wb"
            etag = response.headers.get("ETag")
            if etag:
                io.write_text(_etag_path(part), etag)
            else:
                _etag_path(part).unlink(missing_ok=True)
        with open(part, mode) as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not progress, leave=False,
        ) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Interrupted(f"{type(exc).__name__}: {exc}") from None
                if not chunk:
                    break
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            raise _Restart(f"the .part file has {size} bytes, more than the {total} expected")
        raise _Interrupted(f"received {size} of {total} bytes")


def _parse_content_range(value: str) -> tuple[Optional[int], Optional[int]]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value)
    if not match:
        return None, None
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


