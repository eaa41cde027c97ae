"""Per-connection costs of the proxy: the memory of idle keep-alive agent connections, and
the extra latency of a connection's first request over a warm one.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from integration.bench.procs import LOOPBACK
from integration.bench.stats import median
from integration.bench.tlsload import parse_head, read_head

SETTLE_S = 1.0  # after the last connection: let the proxy's buffers and pools settle


def raise_fd_limit(need: int) -> None:
    """Soft RLIMIT_NOFILE up to ``need`` (at most the hard limit) for this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _get(target_port: int, via_proxy: bool, close: bool = False) -> bytes:
    authority = f"{LOOPBACK}:{target_port}"
    target = f"http://{authority}/" if via_proxy else "/"
    conn = "Connection: close\r\n" if close else ""
    return f"GET {target} HTTP/1.1\r\nHost: {authority}\r\n{conn}\r\n".encode()


@dataclass
class IdleResult:
    connections: int
    answered: int  # requests answered 200 before the connections went idle
    before_kib: int
    idle_kib: int  # with every connection open and idle
    after_close_kib: int

    @property
    def cost_mib(self) -> float:
        return (self.idle_kib - self.before_kib) / 1024.0

    @property
    def per_connection_kib(self) -> float:
        return (self.idle_kib - self.before_kib) / max(1, self.connections)


async def _idle(
    proxy_port: int, target_port: int, n: int, rss_kib: Callable[[], int], settle_s: float
) -> IdleResult:
    request = _get(target_port, via_proxy=True)
    before = rss_kib()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    answered = 0
    try:
        for _ in range(n):  # one at a time: the cost of idle connections, not of a burst
            reader, writer = await asyncio.open_connection(LOOPBACK, proxy_port)
            conns.append((reader, writer))
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, length, _ = parse_head(head)
            await reader.readexactly(length)
            answered += status == 200
        await asyncio.sleep(settle_s)
        idle = rss_kib()
    finally:
        for _, writer in conns:
            writer.close()
    await asyncio.sleep(settle_s)
    return IdleResult(n, answered, before, idle, rss_kib())


def idle_connections(
    proxy_port: int, target_port: int, n: int, rss_kib: Callable[[], int],
    settle_s: float = SETTLE_S,
) -> IdleResult:  # fmt: skip
    """Open ``n`` agent connections, one request each (a token injected, kept alive), and
    read the proxy's RSS before, while all are idle, and after they closed."""
    raise_fd_limit(n + 256)
    return asyncio.run(_idle(proxy_port, target_port, n, rss_kib, settle_s))


@dataclass
class FirstRequestResult:
    cold_ms: list[float]  # connect + first request + response, per fresh connection
    warm_ms: list[float]  # one request on an already used keep-alive connection

    @property
    def added_ms(self) -> float:
        return median(self.cold_ms) - median(self.warm_ms)


def _exchange(sock: socket.socket, request: bytes) -> int:
    sock.sendall(request)
    head, body = read_head(sock)
    status, length, _ = parse_head(head + b"\r\n\r\n")
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside a response")
        body += data
    return status


def first_request(connect_port: int, target_port: int, via_proxy: bool, n: int) -> FirstRequestResult:
    """Alternates a request on a fresh connection with one on a warm connection, ``n`` each,
    so both see the same disturbances. Any answer but 200 is an error."""
    warm_request = _get(target_port, via_proxy)
    cold_request = _get(target_port, via_proxy, close=True)
    cold: list[float] = []
    warm: list[float] = []
    with socket.create_connection((LOOPBACK, connect_port), 10) as keep:
        keep.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(3):  # warm the kept connection (and the proxy's upstream pool)
            _exchange(keep, warm_request)
        for _ in range(n):
            start = time.perf_counter_ns()
            with socket.create_connection((LOOPBACK, connect_port), 10) as fresh:
                fresh.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                status = _exchange(fresh, cold_request)
            cold.append((time.perf_counter_ns() - start) / 1e6)
            start = time.perf_counter_ns()
            warm_status = _exchange(keep, warm_request)
            warm.append((time.perf_counter_ns() - start) / 1e6)
            if status != 200 or warm_status != 200:
                raise ConnectionError(f"answered {status} (cold) / {warm_status} (warm)")
    return FirstRequestResult(cold, warm)
