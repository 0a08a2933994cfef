"""The client jupyter_client launches as the kernel's process, and the KernelManager that launches it."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
from typing import Optional

from .spec import FORWARDED, HEADER, MODULE, kernel_command

PARENT_POLL_S = 1.0  # as ipykernel's parent poller


def client(server: str, command: list[str]) -> int:
    """Have the server at ``server`` fork the kernel of ``command`` (the kernel spec's), wait for it and return
    its exit code; run ``command`` itself when the server cannot. Like a kernel jupyter_client starts itself, it
    ends (and the middle kills the kernel) when the process that launched it dies without shutting it down."""
    parent = os.getppid()
    parts = kernel_command(command)
    sock = None
    if parts is not None and server:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(server)
            body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "args": parts[1]}).encode()
            socket.send_fds(sock, [HEADER.pack(len(body))], [0, 1, 2])
            sock.sendall(body)
            reply = _read_line(sock)
        except OSError:
            reply = None
        if reply is None or not reply.startswith("pid "):
            sock.close()
            sock = None
    if sock is None:
        os.execv(command[0], command)  # the kernel spec's own command (raises if it cannot)

    def forward(signum, frame):
        try:
            sock.sendall(f"sig {signum}\n".encode())
        except OSError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        if not select.select([sock], [], [], PARENT_POLL_S)[0]:
            if os.getppid() != parent:  # the kernel manager was killed: no one will shut this kernel down
                sock.close()  # the middle sees it and kills the kernel
                return 1
            continue
        line = _read_line(sock)
        if line is None:
            return 1  # the middle went away without a word
        if line.startswith("exit "):
            code = int(line[5:])
            return 128 - code if code < 0 else code


def _read_line(sock: socket.socket) -> Optional[str]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return None
        data += chunk
    return data.decode().strip()


def fork_kernel_manager(server: str, base: Optional[type] = None):
    """A jupyter_client kernel manager class whose kernels come from the server at ``server``: a subclass of
    ``base``, by default the ``AsyncKernelManager`` nbclient expects (with a blocking one its event loop stalls
    in the client's polls, and an interrupted job waits for the cell to end)."""
    if base is None:
        from jupyter_client.manager import AsyncKernelManager as base

    class ForkKernelManager(base):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            parts = kernel_command(cmd)
            if parts is None:
                return cmd
            return [*parts[0], "-m", MODULE, "client", server, "--", *cmd]

    return ForkKernelManager
