"""Kernels forked from a pre-imported server (cxrlib.kernel_fork): they start like fresh kernels (environment,
directory, threads, random state), answer interrupts, die with their client, and fall back to the kernel spec's
own command whenever the server cannot serve."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager, KernelManager

from cxrlib.kernel_fork import KernelForkServer, fork_kernel_manager, kernel_command, notebook_imports

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux-only")

THREAD_VARS = ("OMP_NUM_THREADS", "CXR_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SPEC = [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def test_notebook_imports_lists_every_imported_module_and_skips_magics(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import json, os.path as p\nfrom cxrlib.layout import RunLayout"),
                nbformat.v4.new_code_cell("%matplotlib inline\nimport skipped_because_of_the_magic"),
                nbformat.v4.new_code_cell("def f():\n    from collections import abc\n    from . import rel"),
                nbformat.v4.new_markdown_cell("import not_code")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert notebook_imports([tmp_path / "a.ipynb"]) == ["collections", "cxrlib.layout", "json", "os.path"]


def test_kernel_command_takes_only_ipykernel_specs():
    assert kernel_command(SPEC) == ([sys.executable, "-Xfrozen_modules=off"], ["-f", "{connection_file}"])
    assert kernel_command(["python", "-m", "ipykernel", "kernel", "-f", "c.json"]) == (
        ["python"], ["kernel", "-f", "c.json"])
    assert kernel_command(["/opt/ir/bin/R", "--slave", "-f", "c.json"]) is None
    assert kernel_command(["python", "-m", "other_kernel", "-f", "c.json"]) is None


def _kernel_spec_dir(tmp_path: Path) -> Path:
    import json

    spec = tmp_path / "share" / "jupyter" / "kernels" / "forktest"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": SPEC, "display_name": "fork test", "language": "python"}))
    return tmp_path / "share" / "jupyter"


@pytest.fixture
def kernels(tmp_path, monkeypatch):
    """start(server_path, env=...) -> (manager, client, run(code) -> stdout); every kernel is shut down after."""
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec_dir(tmp_path)))
    started = []

    def start(server, cwd=tmp_path, **env):
        km = fork_kernel_manager(server, KernelManager)(kernel_name="forktest")  # blocking API for the tests
        base = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}  # the test's own budget aside
        km.start_kernel(cwd=str(cwd), env={**base, **env})
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        started.append((km, kc))

        def run(code: str, timeout: float = 120) -> tuple[str, dict]:
            out = []
            reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: out.append(
                m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
            return "".join(out), reply["content"]

        return km, kc, run

    yield start
    for km, kc in started:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _wait_gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_forked_kernel_has_the_preloads_and_starts_like_a_fresh_one(kernels, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the server's own environment must not size the kernels' pools
    preload = ["cxrlib.layout", "numpy", "torch", "matplotlib.pyplot"]
    with KernelForkServer(SPEC, preload, log_file=tmp_path / "server.log") as server:
        assert server.path
        work = tmp_path / "work"
        work.mkdir()
        km, _, run = kernels(server.path, cwd=work, CXR_THREADS="1", OMP_NUM_THREADS="1", CXR_MARK="a")
        out, _ = run("import os, sys, random, numpy\n"
                     "print('cxrlib.layout' in sys.modules, 'cxrlib.cam' in sys.modules, os.getcwd(),"
                     " os.environ['CXR_MARK'])\n"
                     "print(os.getpid(), random.random(), numpy.random.rand())")
        first, second = out.splitlines()
        assert first == f"True False {work} a"  # preloaded before any cell ran; the client's env and directory
        pid = int(second.split()[0])
        assert pid != km.provisioner.process.pid  # forked by the server, not the launched process
        assert Path(f"/proc/{pid}/status").read_text().count("Threads") == 1

        _, _, run2 = kernels(server.path, CXR_MARK="b")
        out2, _ = run2("import os, random, numpy\nprint(os.environ['CXR_MARK'], os.getpid(), random.random(), "
                       "numpy.random.rand())")
        mark, pid2, *draws = out2.split()
        assert mark == "b" and int(pid2) != pid
        assert draws != second.split()[1:]  # each kernel its own random state, as fresh interpreters have

        assert run("import torch; print(torch.get_num_threads())")[0].strip() == "1"  # the job's thread budget
        fresh = len(os.sched_getaffinity(0))
        assert run2("import matplotlib; print(matplotlib.get_backend())")[0].strip().endswith("backend_inline")
        _, _, run3 = kernels(server.path, MPLBACKEND="agg")
        assert run3("import matplotlib; print(matplotlib.get_backend())")[0].strip() == "agg"  # as a fresh one
        out3, _ = run2("import torch; print(torch.get_num_threads())")
        assert int(out3) == min(fresh, torch_default())  # no budget: torch's own default, as in a fresh kernel
        log = (tmp_path / "server.log").read_text() if (tmp_path / "server.log").exists() else ""
        assert "not preloaded" not in log


def torch_default() -> int:
    import subprocess

    code = "import torch; print(torch.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout)


def test_interrupt_reaches_the_forked_kernel_and_its_death_ends_the_client(kernels, tmp_path):
    with KernelForkServer(SPEC, ["json"]) as server:
        km, kc, run = kernels(server.path)
        out, _ = run("import os; print(os.getpid())")
        pid = int(out)
        msg_id = kc.execute("import time; time.sleep(60)")
        time.sleep(1.0)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["ename"] == "KeyboardInterrupt"
        client = km.provisioner.process
        os.kill(pid, signal.SIGKILL)  # the kernel dies: its client exits instead of hanging on
        assert client.wait(timeout=20) == 128 + signal.SIGKILL


def test_killing_the_client_kills_the_forked_kernel(kernels, tmp_path):
    with KernelForkServer(SPEC, ["json"]) as server:
        km, _, run = kernels(server.path)
        pid = int(run("import os; print(os.getpid())")[0])
        km.provisioner.process.kill()  # what papermill's immediate shutdown does
        assert _wait_gone(pid)


def test_without_a_server_the_client_runs_the_kernel_itself(kernels, tmp_path):
    km, _, run = kernels(str(tmp_path / "no-such-server.sock"))
    out, _ = run("import os, sys; print(os.getpid(), 'cxrlib.layout' in sys.modules)")
    pid, preloaded = out.split()
    assert int(pid) == km.provisioner.process.pid and preloaded == "False"


def test_a_server_that_is_not_single_threaded_refuses_and_kernels_start_anyway(kernels, tmp_path, monkeypatch):
    (tmp_path / "threaded_mod.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with KernelForkServer(SPEC, ["threaded_mod"], log_file=tmp_path / "server.log") as server:
        km, _, run = kernels(server.path)
        out, _ = run("import os, sys; print(os.getpid(), 'threaded_mod' in sys.modules)")
        pid, preloaded = out.split()
        assert int(pid) == km.provisioner.process.pid and preloaded == "False"
    assert "threads after the imports" in (tmp_path / "server.log").read_text()


def test_a_non_ipykernel_spec_gets_no_server():
    server = KernelForkServer(["/opt/ir/bin/R", "--slave", "-f", "{connection_file}"], ["json"])
    assert server.start() is None and server.path is None


WORKER = """
import signal, sys
import papermill
from cxrlib.kernel_fork import fork_kernel_manager

def stop(signum, frame):
    raise KeyboardInterrupt(signum)  # as the runner's job worker does on SIGTERM

signal.signal(signal.SIGTERM, stop)
server, src, out = sys.argv[1:]
papermill.execute_notebook(src, out, kernel_name="forktest", language="python", progress_bar=False,
                           kernel_manager_class=fork_kernel_manager(server))
"""


def _papermill_worker(server: str, tmp_path: Path):
    """A process running a notebook the way a job worker does, through the forked kernel; (process, kernel pid)
    once its long second cell is running. The callers take the ``kernels`` fixture for its kernel spec."""
    import subprocess

    pid_file = tmp_path / "kernel.pid"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import os; open({str(pid_file)!r}, 'w').write(str(os.getpid()))"),
                nbformat.v4.new_code_cell("import time; time.sleep(300)")]
    nbformat.write(nb, tmp_path / "slow.ipynb")
    (tmp_path / "worker.py").write_text(WORKER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), server, str(tmp_path / "slow.ipynb"),
                             str(tmp_path / "out.ipynb")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.1)
    assert pid_file.exists() and pid_file.read_text(), "the notebook's first cell did not run within 120 s"
    time.sleep(0.5)  # into the sleeping cell
    return proc, int(pid_file.read_text())


def test_the_runner_gets_the_async_manager_nbclient_expects():
    assert issubclass(fork_kernel_manager("/x.sock"), AsyncKernelManager)


def test_an_interrupted_notebook_run_ends_without_waiting_for_the_cell_and_takes_its_kernel(kernels, tmp_path):
    """A stopped run (SIGTERM to a job worker) must not wait for the running cell: with a blocking manager
    nbclient's event loop sat in the client's poll until the cell ended, and the runner killed the worker."""
    with KernelForkServer(SPEC, ["json"]) as server:
        proc, kernel = _papermill_worker(server.path, tmp_path)
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)  # the cell sleeps 300 s
            assert proc.returncode != 0
            assert _wait_gone(kernel)
        finally:
            _kill(proc, kernel)


def test_a_killed_kernel_manager_takes_its_forked_kernel_along(kernels, tmp_path):
    """As ipykernel's parent poller does for a kernel jupyter_client started itself."""
    with KernelForkServer(SPEC, ["json"]) as server:
        proc, kernel = _papermill_worker(server.path, tmp_path)
        try:
            proc.kill()
            proc.wait()
            assert _wait_gone(kernel)
        finally:
            _kill(proc, kernel)


def _kill(proc, kernel: int) -> None:
    """Leave no process behind when a test fails."""
    proc.kill()
    proc.wait()
    try:
        os.kill(kernel, signal.SIGKILL)
    except ProcessLookupError:
        pass
