"""The server: imports the notebooks' modules once, then per request forks a middle process that forks the kernel
and relays signals one way and the exit code the other."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import sys
from typing import Sequence

from ..lifetime import die_with_parent
from .spec import FORWARDED, HEADER

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # what ipykernel sets when MPLBACKEND is unset
#: read by libraries when they load, so the server drops them: the kernels size their own pools
POOL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(path: str, preload: Sequence[str]) -> None:
    """Listen on the unix socket ``path``, import ``preload``, then fork a kernel per request until killed."""
    die_with_parent(signal.SIGTERM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # clients wait in the backlog while the imports run
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    for name in POOL_VARS:  # the pools take the library defaults (all cores) until a kernel sizes them
        os.environ.pop(name, None)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # except OpenBLAS, which would start its threads at import
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
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the OS reaps the middles: no zombies
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
    head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    try:
        if len(head) != HEADER.size:
            raise ValueError("short header")
        (size,) = HEADER.unpack(head)
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("short request")
            body += chunk
        return json.loads(body), list(fds)
    except BaseException:  # a malformed request must not leave the client's streams open in the server
        for fd in fds:
            os.close(fd)
        raise


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
        die_with_parent(signal.SIGKILL)  # the middle gone means the client is gone
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
        if "matplotlib" in sys.modules and os.environ["MPLBACKEND"] != INLINE_BACKEND:
            sys.modules["matplotlib"].rcParams["backend"] = os.environ["MPLBACKEND"]  # read at its import
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
    from ..cores import apply_job_env

    if "CXR_THREADS" not in env:  # no job budget: what the environment asks for, else the libraries' defaults
        try:
            if env.get("OMP_NUM_THREADS") and "torch" in sys.modules:  # OpenMP read the server's, without it
                sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
            from threadpoolctl import threadpool_limits

            blas = env.get("OPENBLAS_NUM_THREADS")
            threadpool_limits(limits=int(blas) if blas else len(os.sched_getaffinity(0)), user_api="blas")
        except Exception:  # the pools keep their size; a speed matter only
            pass
    apply_job_env(env)
