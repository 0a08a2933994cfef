"""Downloader tests against a local HTTP server (127.0.0.1) that serves GitHub-style archives."""

from __future__ import annotations

import hashlib
import io as stdio
import json
import re
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from cxrlib.data import fetch
from cxrlib.errors import CxrError, DataError

COHEN = fetch.get_source("cohen")
REF = "0123456789abcdef0123456789abcdef01234567"
ARCHIVE_PATH = f"/{COHEN.repo}/archive/{REF}.zip"


def _image_bytes(fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(48, 40), dtype=np.uint8)
    buf = stdio.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format=fmt)
    return buf.getvalue()


def cohen_zip(ref: str = REF, extra: dict[str, bytes] | None = None, n_images: int = 3) -> bytes:
    """A zip shaped like GitHub's archive of the Cohen repository: one ``<repo>-<ref>/`` top folder."""
    top = f"covid-chestxray-dataset-{ref}/"
    rows = ["patientid,finding,view,filename,folder"]
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(top, b"")
        zf.writestr(top + "images/", b"")
        for i in range(n_images):
            fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
            name = f"img{i}.{ext}"
            zf.writestr(top + "images/" + name, _image_bytes(fmt, i))
            rows.append(f"{i},Pneumonia/Viral/COVID-19,PA,{name},images")
        zf.writestr(top + "metadata.csv", "\n".join(rows) + "\n")
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
        zf.comment = ref.encode()
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        state = self.server.state
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        state.requests.append({"path": self.path, "range": rng, "if_range": if_range})
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        honour = rng and not state.ignore_range and (if_range is None or if_range == state.etag)
        if honour:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if state.etag:
            self.send_header("ETag", state.etag)
        payload = body[start:]
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if state.drop_after is not None:  # send part of the body, then cut the connection
            cut, state.drop_after = state.drop_after, None
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class ArchiveServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.drop_after: int | None = None
        self.ignore_range = False
        self.etag: str | None = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.state = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        return False


@pytest.fixture
def server():
    with ArchiveServer() as srv:
        srv.files[ARCHIVE_PATH] = cohen_zip()
        yield srv


def _fetch(dest, srv, logs=None, **kwargs):
    kwargs.setdefault("ref", REF)
    log = logs.append if logs is not None else (lambda msg: None)
    return fetch.fetch_source(COHEN, dest, base_url=srv.url, progress=False, timeout=5, log=log, **kwargs)


def test_fetch_unpacks_native_layout_and_records_checksum(tmp_path, server):
    result = _fetch(tmp_path, server)
    target = tmp_path / "covid-chestxray-dataset"
    assert result.status == "fetched" and result.folder == target
    assert (target / "metadata.csv").read_text().startswith("patientid,finding")
    assert sorted(p.name for p in (target / "images").iterdir()) == ["img0.png", "img1.jpg", "img2.png"]
    assert Image.open(target / "images" / "img1.jpg").size == (40, 48)
    assert not (tmp_path / f"covid-chestxray-dataset-{REF}").exists()
    manifest = json.loads((tmp_path / "FETCHED.json").read_text())["sources"]["cohen"]
    assert manifest["sha256"] == hashlib.sha256(server.files[ARCHIVE_PATH]).hexdigest() == result.sha256
    assert manifest["ref"] == REF and manifest["commit"] == REF
    assert manifest["url"] == server.url + ARCHIVE_PATH
    assert manifest["bytes"] == len(server.files[ARCHIVE_PATH])
    # only the folder and the manifest are left: no archive, .part or temporary folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FETCHED.json", "covid-chestxray-dataset"]


def test_second_fetch_is_skipped_without_a_request(tmp_path, server):
    _fetch(tmp_path, server)
    n_requests = len(server.requests)
    logs = []
    result = _fetch(tmp_path, server, logs)
    assert result.status == "skipped"
    assert len(server.requests) == n_requests
    assert any("already fetched" in m and "skipped" in m for m in logs)


def test_other_ref_of_a_fetched_source_needs_force(tmp_path, server):
    _fetch(tmp_path, server)
    other = "f" * 40
    server.files[f"/{COHEN.repo}/archive/{other}.zip"] = cohen_zip(other, n_images=1)
    with pytest.raises(fetch.FetchError, match="--force"):
        _fetch(tmp_path, server, ref=other)
    result = _fetch(tmp_path, server, ref=other, force=True)
    assert result.status == "fetched"
    assert [p.name for p in (tmp_path / COHEN.folder / "images").iterdir()] == ["img0.png"]
    assert fetch.read_manifest(tmp_path)["cohen"]["ref"] == other
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_folder_placed_by_hand_is_left_alone(tmp_path, server):
    (tmp_path / COHEN.folder).mkdir()
    logs = []
    assert _fetch(tmp_path, server, logs).status == "skipped"
    assert server.requests == [] and "not fetched by this tool" in logs[0]


def test_interrupted_download_resumes_with_range(tmp_path, server):
    body = server.files[ARCHIVE_PATH]
    server.drop_after = len(body) // 2
    logs = []
    result = _fetch(tmp_path, server, logs, retries=2)
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(body) // 2}-"]
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert (tmp_path / COHEN.folder / "metadata.csv").exists()
    assert any("interrupted" in m for m in logs)


def test_interrupted_download_keeps_part_and_the_next_run_resumes(tmp_path, server):
    body = server.files[ARCHIVE_PATH]
    server.drop_after = 1000
    with pytest.raises(fetch.FetchError, match="Run the same command again to resume"):
        _fetch(tmp_path, server, retries=0)
    part = tmp_path / (COHEN.archive_name(REF) + ".part")
    assert part.read_bytes() == body[:1000]
    assert not (tmp_path / COHEN.folder).exists()
    result = _fetch(tmp_path, server)
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path, server):
    server.ignore_range = True
    (tmp_path / (COHEN.archive_name(REF) + ".part")).write_bytes(b"stale bytes from elsewhere")
    logs = []
    result = _fetch(tmp_path, server, logs)
    assert server.requests[0]["range"] == "bytes=26-"
    assert result.sha256 == hashlib.sha256(server.files[ARCHIVE_PATH]).hexdigest()
    assert any("ignored the range request" in m for m in logs)


def test_changed_archive_is_not_spliced_onto_an_old_part(tmp_path, server):
    server.etag = '"v1"'
    server.drop_after = 500
    with pytest.raises(fetch.FetchError):
        _fetch(tmp_path, server, retries=0)
    new_body = cohen_zip(n_images=2)
    server.files[ARCHIVE_PATH], server.etag = new_body, '"v2"'
    result = _fetch(tmp_path, server)
    assert server.requests[-1]["if_range"] == '"v1"'
    assert result.sha256 == hashlib.sha256(new_body).hexdigest()


def test_part_longer_than_the_archive_restarts(tmp_path, server):
    body = server.files[ARCHIVE_PATH]
    (tmp_path / (COHEN.archive_name(REF) + ".part")).write_bytes(b"x" * (len(body) + 10))
    result = _fetch(tmp_path, server)  # the server answers 416, the client starts over
    assert result.sha256 == hashlib.sha256(body).hexdigest()


def test_known_checksum_mismatch_is_an_error(tmp_path, server):
    with pytest.raises(fetch.FetchError, match="checksum mismatch.*expected sha256 0{64}"):
        _fetch(tmp_path, server, sha256="0" * 64)
    assert not (tmp_path / COHEN.folder).exists()
    assert not (tmp_path / fetch.MANIFEST_NAME).exists()
    good = hashlib.sha256(server.files[ARCHIVE_PATH]).hexdigest()
    assert _fetch(tmp_path, server, sha256=good.upper()).sha256 == good


def test_zip_slip_entry_is_rejected(tmp_path, server):
    server.files[ARCHIVE_PATH] = cohen_zip(extra={f"covid-chestxray-dataset-{REF}/../../evil.txt": b"x"})
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="zip-slip"):
        _fetch(dest, server)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / COHEN.folder).exists()
    assert not any(p.name.endswith(".unpacking") for p in dest.iterdir())


def _zip_with(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("repo-ref/metadata.csv", b"a\n")
        zf.writestr(info, data)
    return buf.getvalue()


def _symlink_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("repo-ref/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "info, message",
    [
        (zipfile.ZipInfo("/etc/evil"), "absolute path"),
        (zipfile.ZipInfo("repo-ref/a/../../../evil"), "zip-slip"),
        (_symlink_info(), "symbolic link"),
    ],
    ids=["absolute", "dotdot", "symlink"],
)
def test_safe_unpack_rejects_unsafe_entries(tmp_path, info, message):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_with(info, b"/etc/passwd"))
    with pytest.raises(DataError, match=message):
        fetch.safe_unpack(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_safe_unpack_needs_one_top_folder(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("one/metadata.csv", b"a")
        zf.writestr("two/metadata.csv", b"a")
    with pytest.raises(DataError, match="one top folder"):
        fetch.safe_unpack(archive, tmp_path / "out")


def test_truncated_archive_placed_by_hand_is_a_clear_error(tmp_path, server):
    (tmp_path / COHEN.archive_name(REF)).write_bytes(server.files[ARCHIVE_PATH][:300])
    with pytest.raises(DataError, match="not a readable zip archive"):
        _fetch(tmp_path, server)
    assert server.requests == []


def test_archive_placed_by_hand_is_unpacked_without_download(tmp_path, server):
    (tmp_path / COHEN.archive_name(REF)).write_bytes(server.files[ARCHIVE_PATH])
    assert _fetch(tmp_path, server).status == "fetched"
    assert server.requests == []
    assert (tmp_path / COHEN.folder / "metadata.csv").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_gives_a_clear_offline_error(tmp_path):
    base = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(fetch.OfflineError) as info:
        fetch.fetch_source(COHEN, tmp_path, ref=REF, base_url=base, progress=False, log=lambda m: None)
    message = str(info.value)
    assert isinstance(info.value, CxrError)
    assert f"{base}{ARCHIVE_PATH}" in message
    assert "seems to be offline" in message
    assert str(tmp_path / COHEN.archive_name(REF)) in message  # where to put a hand-downloaded copy
    assert not (tmp_path / COHEN.folder).exists()


def test_http_404_names_the_url(tmp_path, server):
    with pytest.raises(fetch.FetchError, match=r"/archive/nope\.zip: HTTP 404.*ref"):
        _fetch(tmp_path, server, ref="nope")


def test_base_url_from_environment(tmp_path, server, monkeypatch):
    monkeypatch.setenv(fetch.BASE_URL_ENV, server.url)
    result = fetch.fetch_source(COHEN, tmp_path, ref=REF, progress=False, log=lambda m: None)
    assert result.status == "fetched" and server.requests[0]["path"] == ARCHIVE_PATH


def test_cli_fetch_list_and_kaggle_commands(tmp_path, server, capsys):
    dest = tmp_path / "data"
    argv = ["--dest", str(dest), "--base-url", server.url, "--source", "cohen", "--ref", f"cohen={REF}", "--no-progress"]
    assert fetch.fetch_main(argv) == 0
    out = capsys.readouterr().out
    assert "kaggle datasets download -d tawsifurrahman/covid19-radiography-database" in out
    assert "kaggle datasets download -d paultimothymooney/chest-xray-pneumonia" in out
    assert (dest / COHEN.folder / "metadata.csv").exists()

    (dest / "chest_xray").mkdir()
    assert fetch.fetch_main(["--dest", str(dest), "--list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"cohen .*\[fetched @ {REF} sha256 [0-9a-f]{{12}}\]", listing)
    assert re.search(r"actualmed .*\[missing\]", listing)
    assert re.search(r"kermany .*chest_xray\s+\[present\]", listing)
    assert re.search(r"covid19_radiography .*\[missing\]", listing)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    argv = ["--dest", str(tmp_path), "--base-url", f"http://127.0.0.1:{_closed_port()}", "--source", "actualmed"]
    assert fetch.fetch_main(argv + ["--no-progress"]) == 1
    assert "seems to be offline" in capsys.readouterr().err
    assert fetch.fetch_main(["--dest", str(tmp_path), "--ref", "cohen"]) == 1
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert fetch.fetch_main(["--dest", str(tmp_path), "--ref", "nosuch=abc"]) == 1
    assert "unknown source 'nosuch'" in capsys.readouterr().err


def test_registry_urls_and_folders():
    assert [s.folder for s in fetch.GITHUB_SOURCES] == [
        "covid-chestxray-dataset", "Actualmed-COVID-chestxray-dataset", "Figure1-COVID-chestxray-dataset",
    ]
    assert fetch.get_source("actualmed").url(fetch.DEFAULT_BASE_URL) == (
        "https://github.com/agchung/Actualmed-COVID-chestxray-dataset/archive/"
        "27240dd8dec9454bc97f9f3c0c432ef434de2517.zip"
    )
    assert fetch.get_source("figure1").ref == "95bb569e55f4110d3b734c0f355340e04e16989a"
