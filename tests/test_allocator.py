"""glibc malloc settings of the proxy: arenas shared by later threads, trim callable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from supervisor import allocator

# Threads that each allocate (blocks above Python's small-object allocator, so they go to
# malloc), all alive at once; then glibc's own report of its arenas, on stderr.
THREADS = """
import ctypes, sys, threading
from supervisor import allocator
if sys.argv[1] == "limit":
    assert allocator.limit_arenas(2)
go = threading.Barrier(7)
def work():
    held = [bytearray(4096) for _ in range(64)]
    go.wait()
    go.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
go.wait()
ctypes.CDLL(None).malloc_stats()
go.wait()
for t in threads:
    t.join()
"""


def _arenas(mode: str) -> int:
    proc = subprocess.run([sys.executable, "-c", THREADS, mode], capture_output=True,
                          text=True, timeout=60, check=True)
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(allocator._glibc() is None, reason="not glibc")
def test_later_threads_share_two_arenas() -> None:
    assert _arenas("limit") <= 2
    assert _arenas("default") > 2  # control: without the limit, threads get their own


def test_trim_and_limit_are_safe_to_call() -> None:
    assert isinstance(allocator.trim(), bool)
    if allocator._glibc() is None:
        assert allocator.limit_arenas() is False
