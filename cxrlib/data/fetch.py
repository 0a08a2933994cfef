"""Download the public chest X-ray sources that need no account, and say how to get the Kaggle ones.

GitHub sources are fetched as ``<base>/<owner>/<repo>/archive/<ref>.zip`` with the stdlib's urllib:
resumable (HTTP Range on a ``.part`` file), checksummed (``dest/FETCHED.json``), unpacked safely into
their native layout under ``dest/<folder>``, and skipped when already present.

CLI: ``python -m cxrlib fetch --dest data/`` (see :func:`add_fetch_arguments` / :func:`run_fetch`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.client
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

from tqdm.auto import tqdm

from .. import io
from ..errors import CxrError, DataError
from .images import file_sha256

DEFAULT_BASE_URL = "https://github.com"
BASE_URL_ENV = "CXR_FETCH_BASE_URL"
MANIFEST_NAME = "FETCHED.json"
CHUNK = 1 << 16
USER_AGENT = "cxrlib-fetch/0.1 (+python urllib)"

Log = Callable[[str], None]


class FetchError(CxrError):
    """A download failed (HTTP error, interrupted transfer, checksum mismatch)."""


class OfflineError(FetchError):
    """The server cannot be reached at all: no network, DNS failure, refused connection."""


@dataclass(frozen=True)
class GitHubSource:
    """A source published as a public GitHub repository, unpacked into ``dest/<folder>``."""

    name: str  # short id used on the command line
    repo: str  # owner/name
    ref: str  # commit, tag or branch
    folder: str  # folder under dest, the name the source readers recognise
    marker: str  # a file that must exist in the unpacked folder (checks the layout)
    description: str
    sha256: Optional[str] = None  # known archive checksum for ``ref``; None when not recorded

    def url(self, base_url: str | None = None, ref: str | None = None) -> str:
        base = (base_url or default_base_url()).rstrip("/")
        return f"{base}/{self.repo}/archive/{urllib.parse.quote(ref or self.ref, safe='')}.zip"

    def archive_name(self, ref: str | None = None) -> str:
        """The file name GitHub gives the archive (``<repo>-<ref>.zip``), used for the local copy."""
        safe_ref = re.sub(r"[^A-Za-z0-9._-]", "-", ref or self.ref)
        return f"{self.folder}-{safe_ref}.zip"


@dataclass(frozen=True)
class KaggleSource:
    """A source that needs a Kaggle account: we only print how to fetch it."""

    name: str
    slug: str  # owner/dataset on Kaggle
    folder: str  # top folder the Kaggle zip unpacks into
    description: str

    def command(self, dest: str | os.PathLike) -> str:
        return f"kaggle datasets download -d {self.slug} -p {shlex.quote(str(dest))} --unzip"


#: Sources downloadable without an account. Refs are pinned as in shared/data/SOURCES.md where it
#: gives one; SOURCES.md pins no ieee8023 commit (the holdout used the fork hida6/... @ 584034aa),
#: so the Cohen collection follows ``master`` and the fetched commit is recorded in FETCHED.json.
GITHUB_SOURCES: tuple[GitHubSource, ...] = (
    GitHubSource(
        name="cohen",
        repo="ieee8023/covid-chestxray-dataset",
        ref="master",
        folder="covid-chestxray-dataset",
        marker="metadata.csv",
        description="COVID-19 image data collection (Cohen et al.), metadata.csv + images/",
    ),
    GitHubSource(
        name="actualmed",
        repo="agchung/Actualmed-COVID-chestxray-dataset",
        ref="27240dd8dec9454bc97f9f3c0c432ef434de2517",
        folder="Actualmed-COVID-chestxray-dataset",
        marker="metadata.csv",
        description="Actualmed COVID-19 chest X-rays, metadata.csv + images/",
    ),
    GitHubSource(
        name="figure1",
        repo="agchung/Figure1-COVID-chestxray-dataset",
        ref="95bb569e55f4110d3b734c0f355340e04e16989a",
        folder="Figure1-COVID-chestxray-dataset",
        marker="metadata.csv",
        description="Figure 1 COVID-19 chest X-rays, metadata.csv + images/",
    ),
)

KAGGLE_SOURCES: tuple[KaggleSource, ...] = (
    KaggleSource(
        name="covid19_radiography",
        slug="tawsifurrahman/covid19-radiography-database",
        folder="COVID-19_Radiography_Dataset",
        description="COVID-19 Radiography Database: COVID/, Normal/, Viral Pneumonia/, Lung_Opacity/",
    ),
    KaggleSource(
        name="kermany",
        slug="paultimothymooney/chest-xray-pneumonia",
        folder="chest_xray",
        description="Kermany pediatric set: chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}",
    ),
)


def default_base_url() -> str:
    """``$CXR_FETCH_BASE_URL`` when set, else https://github.com."""
    return os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def get_source(name: str) -> GitHubSource:
    for source in GITHUB_SOURCES:
        if source.name == name:
            return source
    raise FetchError(f"unknown source {name!r} (known: {[s.name for s in GITHUB_SOURCES]})")


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


def _record(dest: Path, name: str, record: dict) -> None:
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


# --------------------------------------------------------------------------------------------- unpack


def _check_member(info: zipfile.ZipInfo, archive: Path) -> list[str]:
    """Path parts of a safe member; DataError for absolute, escaping or symlink entries."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(f"{archive}: refusing absolute path {name!r} in the archive")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: refusing path {name!r} that escapes the target folder (zip-slip)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{archive}: refusing symbolic link {name!r} in the archive")
    if not parts:
        raise DataError(f"{archive}: entry with an empty name")
    return parts


def safe_unpack(archive: str | os.PathLike, target: str | os.PathLike, *, progress: bool = False) -> Optional[str]:
    """Unpack a GitHub archive into ``target``, dropping its single ``<repo>-<ref>/`` top folder.

    Every entry is checked before anything is written: absolute paths, ``..`` components and
    symbolic links raise DataError. ``target`` must not exist; it appears whole (unpacked into a
    temporary sibling, then renamed). Returns the archive comment (GitHub puts the commit there).
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise DataError(f"{target}: already exists; remove it first")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc}); delete it and fetch again") from exc
    with zf:
        members = [(info, _check_member(info, archive)) for info in zf.infolist()]
        tops = {parts[0] for _, parts in members}
        if len(tops) != 1 or any(len(parts) == 1 and not info.is_dir() for info, parts in members):
            raise DataError(f"{archive}: expected one top folder like a GitHub archive, found {sorted(tops)[:5]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=target.parent))
        try:
            root = tmp.resolve()
            for info, parts in tqdm(members, desc=f"unpack {target.name}", unit="file", disable=not progress, leave=False):
                rest = parts[1:]
                if not rest:
                    continue
                out = tmp.joinpath(*rest)
                if not out.resolve().is_relative_to(root):
                    raise DataError(f"{archive}: refusing path {info.filename!r} outside the target folder")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            os.replace(tmp, target)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{archive}: corrupt archive ({exc}); delete it and fetch again") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        comment = zf.comment.decode("utf-8", "replace").strip()
    return comment or None


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

    _record(dest, source.name, {
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
