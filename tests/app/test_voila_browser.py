"""`make app`'s page: Voila serves notebooks/browser.ipynb over a tiny fake run; headless Chromium (driven over
the DevTools protocol) loads it, moves the example slider and sees the picture change."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cam.test_examples_stats import fake_run  # noqa: F401  (fixture: a trained fold over synthetic images)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import voila  # noqa: F401
    import websocket
except ImportError as exc:  # pragma: no cover
    MISSING = str(exc)
else:
    MISSING = ""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(bool(MISSING), reason=f"voila / websocket-client missing: {MISSING}"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url}")


class DevTools:
    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def wait(self, expr: str, timeout: float):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expr)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {expr}")


def test_slider_changes_the_picture(fake_run, tmp_path):  # noqa: F811
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  cache_dir: {fake_run / 'cache'}\ncam:\n  n_examples: 2\n")
    port, debug = free_port(), free_port()
    env = {**os.environ, "CXR_RUN_DIR": str(fake_run / "run"), "CXR_TASK": "multiclass", "CXR_PARAMS": str(params),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "voila", "--Voila.ip=127.0.0.1", f"--port={port}", "--no-browser",
                               str(ROOT / "notebooks")], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "voila.log", "w"))
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={debug}",
                                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 60)
        targets = json.loads(wait_http(f"http://127.0.0.1:{debug}/json", 30))
        page = next(t for t in targets if t["type"] == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        dt.call("Page.navigate", url=f"http://127.0.0.1:{port}/voila/render/browser.ipynb")
        img = "(() => {const i = document.querySelector('.widget-output img'); return i && i.src.length > 100 ? i.src : null})()"
        first = dt.wait(img, 240)
        box = dt.wait("(() => {const h = document.querySelector('.widget-slider .noUi-handle, .widget-slider .ui-slider-handle');"
                      " if (!h) return null; const r = h.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]})()", 30)
        dt.js("document.querySelector('.widget-slider .noUi-handle').focus()")
        for kind in ("keyDown", "keyUp"):
            dt.call("Input.dispatchKeyEvent", type=kind, key="ArrowRight", code="ArrowRight", windowsVirtualKeyCode=39)
        changed = dt.wait(f"(() => {{const s = {img}; return s && s !== {json.dumps(first)} ? s : null}})()", 120)
        assert changed != first and box
    finally:
        browser.terminate()
        server.terminate()
        browser.wait(10)
        server.wait(10)
