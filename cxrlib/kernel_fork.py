"""Notebook kernels forked from one process that has already imported what the notebooks import.

A fresh kernel spends ~4 s of CPU importing torch, torchvision, scikit-learn and cxrlib before its first cell;
a study renders ~18 notebooks. ``KernelForkServer`` starts one server process per run that imports the
notebooks' modules once (``notebook_imports``) and then forks a kernel per request. jupyter_client still
launches a process per kernel (``fork_kernel_manager``'s command): a small client that hands the server its
environment, working directory, kernel arguments and standard streams, forwards the signals it receives, and
exits with the kernel's exit code. Per request the server forks a middle process that forks the kernel and
watches both ends: the client gone (even by SIGKILL) kills the kernel, the kernel gone ends the client.

The forked kernel starts like a fresh one: the client's environment and directory, fresh Python/NumPy random
state, the thread pools sized as the environment says (``apply_job_env``), no exit handlers of the server. When
the server is not there, refuses (it could not stay single-threaded while importing) or the kernel spec is not
ipykernel's, the client runs the kernel spec's own command instead: forking is only ever a shortcut.
"""

from __future__ import annotations

import ast
import atexit
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

log = logging.getLogger(__name__)

MODULE = "cxrlib.kernel_fork"  # outside cxrlib.runner: the client starts per kernel and imports nothing heavy
#: modules whose kernels the server can fork: ipykernel's launchers
KERNEL_MODULES = ("ipykernel_launcher", "ipykernel")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # what ipykernel sets when MPLBACKEND is unset
_HEADER = struct.Struct("!I")


# -- what to import -------------------------------------------------------------------------------------------

def notebook_imports(notebooks: Iterable[str | os.PathLike]) -> list[str]:
    """Modules imported by the code cells of ``notebooks`` (``import a.b``, ``from a.b import c``), sorted; cells
    that are not plain Python (magics) are skipped."""
    import nbformat

    found: set[str] = set()
    for path in notebooks:
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
    return sorted(found)


def kernel_command(argv: Sequence[str]) -> Optional[tuple[list[str], list[str]]]:
    """(interpreter with its options, the kernel's own arguments) of an ipykernel kernel spec command such as
    ``python -Xfrozen_modules=off -m ipykernel_launcher -f {connection_file}``; None for any other kernel."""
    argv = list(argv)
    if "-m" not in argv:
        return None
    i = argv.index("-m")
    if i + 1 >= len(argv) or argv[i + 1] not in KERNEL_MODULES:
        return None
    return argv[:i], argv[i + 2:]


# -- the server -----------------------------------------------------------------------------------------------

def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(path: str, preload: Sequence[str]) -> None:
    """Listen on the unix socket ``path``, import ``preload``, then fork a kernel per request until killed."""
    _die_with_parent(signal.SIGTERM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # clients wait in the backlog while the imports run
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # OpenBLAS would start its pool at import; kernels size their own
    failed = []
    for name in ("cxrlib.cores", "cxrlib.allocator", "threadpoolctl", "ipykernel.kernelapp", *preload):
        try:
            __import__(name)
        except Exception as exc:  # a notebook's import that fails here fails again, visibly, in the notebook
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
    if failed:
        print(f"kernel fork server: not preloaded: {'; '.join(failed)}", file=sys.stderr, flush=True)
    threads = _threads()
    refuse = threads > 1  # forking a process with other threads leaves their locks held in the child
    if refuse:
        print(f"kernel fork server: {threads} threads after the imports; clients start their own kernels",
              file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # middles are reaped by the kernel
    while True:
        conn, _ = listener.accept()
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError, json.JSONDecodeError):
            conn.close()
            continue
        if refuse:
            _send_line(conn, "refused")
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            listener.close()
            _middle(conn, request, fds)  # never returns
        conn.close()
        for fd in fds:
            os.close(fd)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(head) != _HEADER.size:
        raise ValueError("short header")
    (size,) = _HEADER.unpack(head)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("short request")
        body += chunk
    return json.loads(body), list(fds)


def _send_line(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall((text + "\n").encode())
    except OSError:
        pass


def _middle(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """Fork the kernel, then relay: signals from the client to the kernel, the kernel's exit to the client."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _kernel(request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        _send_line(conn, f"pid {pid}")
        pidfd = os.pidfd_open(pid)
        buffer = b""
        while True:
            ready, _, _ = select.select([conn, pidfd], [], [])
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                _send_line(conn, f"exit {os.waitstatus_to_exitcode(status)}")
                code = 0
                break
            data = conn.recv(256)
            if not data:  # the client is gone (killed): its kernel goes too
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.startswith(b"sig "):
                    try:
                        os.kill(pid, int(line[4:]))
                    except (ValueError, ProcessLookupError):
                        pass
    finally:
        os._exit(code)


def _kernel(request: dict, fds: list[int]) -> None:
    """Become the kernel the client asked for."""
    code = 1
    try:
        for sig in FORWARDED + (signal.SIGCHLD,):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(signal.SIGKILL)  # the middle gone means the client is gone
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        env = request["env"]
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(env)
        os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
        sys.path[0] = request["cwd"]  # as `python -m` puts it
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        sys.path[1:1] = extra
        _fresh_state(env)
        atexit._clear()  # the server's exit handlers are not this kernel's
        from ipykernel import kernelapp

        sys.argv = ["ipykernel_launcher", *request["args"]]
        if env.get("JPY_PARENT_PID"):  # a class default read from the environment when the server imported it
            sys.argv.append(f"--IPKernelApp.parent_handle={int(env['JPY_PARENT_PID'])}")
        try:
            kernelapp.launch_new_instance()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        atexit._run_exitfuncs()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _fresh_state(env: dict) -> None:
    """What a freshly started interpreter would have: its own random state, thread pools as ``env`` says."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    from .cores import apply_job_env

    if "CXR_THREADS" not in env:
        try:
            from threadpoolctl import threadpool_limits

            blas = env.get("OPENBLAS_NUM_THREADS")
            threadpool_limits(limits=int(blas) if blas else len(os.sched_getaffinity(0)), user_api="blas")
        except Exception:  # the pool keeps its size; a speed matter only
            pass
    apply_job_env(env)


def _die_with_parent(sig: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


# -- the client: what jupyter_client launches -----------------------------------------------------------------

def client(server: str, command: list[str]) -> int:
    """Have the server at ``server`` fork the kernel of ``command`` (the kernel spec's), wait for it and return
    its exit code; run ``command`` itself when the server cannot."""
    parts = kernel_command(command)
    sock = None
    if parts is not None and server:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(server)
            body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "args": parts[1]}).encode()
            socket.send_fds(sock, [_HEADER.pack(len(body))], [0, 1, 2])
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


def fork_kernel_manager(server: str):
    """A jupyter_client ``KernelManager`` class whose kernels come from the server at ``server``."""
    from jupyter_client.manager import KernelManager

    class ForkKernelManager(KernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            parts = kernel_command(cmd)
            if parts is None:
                return cmd
            return [*parts[0], "-m", MODULE, "client", server, "--", *cmd]

    return ForkKernelManager


# -- the server's owner ---------------------------------------------------------------------------------------

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


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"] and len(args) >= 2:
        serve(args[1], args[2:])
    elif args[:1] == ["client"] and len(args) >= 4 and args[2] == "--":
        sys.exit(client(args[1], args[3:]))
    else:
        sys.exit(f"usage: python -m {MODULE} serve SOCKET [MODULE ...] | client SOCKET -- KERNEL_COMMAND ...")


if __name__ == "__main__":
    main()
