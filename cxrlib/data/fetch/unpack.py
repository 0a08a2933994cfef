"""Safe unpacking of a downloaded archive into its native layout (no paths outside the target)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from ...errors import DataError
from .catalog import CHUNK


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


