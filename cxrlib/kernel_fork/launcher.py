"""The server's owner: starts it for a run and stops it after."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from .spec import MODULE, kernel_command

log = logging.getLogger(__name__)


class KernelForkServer:
    """Starts the server (``with KernelForkServer(spec_argv, preload) as server: ... server.path``) and stops it
    on exit; ``path`` is None when the kernel spec is not ipykernel's or the server did not start."""

    def __init__(self, spec_argv: Sequence[str], preload: Sequence[str], log_file: Optional[Path] = None):
        self.spec_argv, self.preload, self.log_file = list(spec_argv), list(preload), log_file
        self.path: Optional[str] = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        self._proc: Optional[subprocess.Popen] = None

    def start(self) -> Optional[str]:
        parts = kernel_command(self.spec_argv)
        if parts is None or not hasattr(socket, "send_fds") or not hasattr(os, "pidfd_open"):
            return None
        self._dir = tempfile.TemporaryDirectory(prefix="cxr-kernels-")
        path = os.path.join(self._dir.name, "server.sock")
        if self.log_file:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:  # its own session: a Ctrl-C at the terminal reaches the runner, which stops the jobs in order
            self._proc = subprocess.Popen([*parts[0], "-m", MODULE, "serve", path, *self.preload],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        except OSError as exc:
            log.warning("kernel fork server did not start (%s); every notebook starts its own kernel", exc)
            self.stop()
            return None
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not os.path.exists(path):
            log.warning("kernel fork server exited early; every notebook starts its own kernel")
            self.stop()
            return None
        self.path = path
        return path

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self.path = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> "KernelForkServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
