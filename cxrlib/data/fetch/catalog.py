"""The public sources ``fetch`` knows: GitHub repositories (downloadable) and Kaggle data sets (instructions)."""

from __future__ import annotations

import os
import re
import shlex
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional


from ...errors import CxrError


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

