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

from .launcher import KernelForkServer
from .spec import MODULE, kernel_command, notebook_imports
from .client import fork_kernel_manager

__all__ = ["MODULE", "KernelForkServer", "fork_kernel_manager", "kernel_command", "notebook_imports"]
