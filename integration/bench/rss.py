"""Resident memory of one process, sampled from /proc/<pid>/status while load runs."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType


def vmrss_kib(status_text: str) -> int | None:
    """The VmRSS value (kB) of a /proc/<pid>/status text, None when absent (zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


class RssSampler:
    """Samples VmRSS every ``interval`` seconds in a daemon thread; a context manager."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.interval = interval
        self.samples_kib: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                value = vmrss_kib(self.path.read_text())
            except OSError:
                return  # the process is gone
            if value is not None:
                self.samples_kib.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_mib(self) -> float | None:
        return max(self.samples_kib) / 1024.0 if self.samples_kib else None
