"""train.retain_memory: freed blocks stay in the process instead of being page-faulted in again every step."""

import subprocess
import sys

import pytest

from cxrlib.config import load_config

FAULTS = r"""
import resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from cxrlib.allocator import retain_freed_memory
    assert retain_freed_memory() and retain_freed_memory()  # applied, and idempotent
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a training step's pattern: several ~25 MB activation buffers alive at once, then all freed
    buffers = [np.ones(6_000_000, dtype=np.float32) for _ in range(4)]
    del buffers
step()
before = faults()
for _ in range(10):
    step()
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_retained_memory_is_not_faulted_in_again():
    default, retained = _faults("default"), _faults("retain")
    assert default > 10 * 1000  # glibc trims the freed heap top: megabytes faulted in again every step
    assert retained < default / 20


def test_retain_memory_is_a_validated_train_param():
    assert load_config(None).train.retain_memory is True
    assert load_config(None, ["train.retain_memory=false"]).train.retain_memory is False
