"""Resident memory and open file descriptors of one process, sampled from /proc."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the soak started
    rss_kib: int
    fds: int


def sample(pid: int, t: float) -> Sample | None:
    """One sample, None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None
    return None if rss is None else Sample(t, rss, fds)


@dataclass
class Series:
    """Samples over time; the growth figures compare two windows by their medians."""

    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def take(self, pid: int) -> Sample | None:
        s = sample(pid, time.monotonic() - self.started)
        if s is not None:
            self.samples.append(s)
        return s

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]


def growth(before: list[int], after: list[int]) -> float | None:
    """Relative growth of the median of ``after`` over the median of ``before``."""
    if not before or not after:
        return None
    base = statistics.median(before)
    return (statistics.median(after) - base) / base if base else None
