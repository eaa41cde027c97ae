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
    traffic_fds: int  # TCP sockets carrying requests: agent side and upstream services

    @property
    def stable_fds(self) -> int:
        """Everything else (files, pipes, epoll, gRPC and issuer channels, listener): the
        figure a leak shows in, without the swing of in-flight connections."""
        return self.fds - self.traffic_fds


def _socket_inodes(pid: int) -> tuple[int, set[str]]:
    count, inodes = 0, set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        count += 1
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return count, inodes


def _hex_v4(text: str) -> tuple[str, int]:
    addr, port = text.split(":")
    return ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)), int(port, 16)


def traffic_sockets(inodes: set[str], local_port: int, remote_hosts: frozenset[str]) -> int:
    """TCP (v4) sockets among ``inodes`` on ``local_port`` or connected to ``remote_hosts``."""
    n = 0
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[9] not in inodes:
                continue
            _, lport = _hex_v4(cols[1])
            rhost, _ = _hex_v4(cols[2])
            n += lport == local_port or rhost in remote_hosts
    return n


def sample(
    pid: int, t: float, local_port: int = 0, remote_hosts: frozenset[str] = frozenset()
) -> Sample | None:
    """One sample, None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
        fds, inodes = _socket_inodes(pid)
        traffic = traffic_sockets(inodes, local_port, remote_hosts)
    except (OSError, StopIteration):
        return None
    return None if rss is None else Sample(t, rss, fds, traffic)


@dataclass
class Series:
    """Samples over time; the growth figures compare two windows by their medians."""

    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    local_port: int = 0  # the proxy's listening port
    remote_hosts: frozenset[str] = frozenset()  # the upstream services' addresses

    def take(self, pid: int) -> Sample | None:
        s = sample(pid, time.monotonic() - self.started, self.local_port, self.remote_hosts)
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
