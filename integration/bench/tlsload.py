"""A Python asyncio HTTPS load client: wrk cannot send CONNECT, so this one does.

Each of N keep-alive connections optionally sends ``CONNECT host:port``, performs TLS with
the given CA, then sends GET requests back to back until the deadline, recording each
request's latency. It is a different (slower) client than wrk: only compare its numbers
with each other.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from integration.bench.procs import LOOPBACK
from integration.bench.wrk import CLIENT_TOKEN, PLOT_PERCENTILES, LoadResult

CLIENT = "python-asyncio"
HEAD_LIMIT = 64 * 1024


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: {"connect": 0, "status": 0, "io": 0})


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 < p <= 100); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil without floats drifting
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """A response head from ``sock`` (without its blank line) and the bytes read after it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a response head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content-length, keep-alive) of a response head ending in CRLFCRLF."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    length = 0
    keep_alive = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key == "content-length":
            length = int(value.strip())
        elif key == "connection":
            keep_alive = value.strip().lower() != "close"
    return status, length, keep_alive


async def _open(
    connect_port: int, target_port: int, via_proxy: bool, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(LOOPBACK, connect_port)
    if via_proxy:
        authority = f"{LOOPBACK}:{target_port}"
        writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status, _, _ = parse_head(head)
        if status != 200:
            writer.close()
            raise ConnectionError(f"CONNECT answered {status}")
    await writer.start_tls(ctx, server_hostname=LOOPBACK)
    return reader, writer


async def _worker(
    connect_port: int, target_port: int, via_proxy: bool, ctx: ssl.SSLContext,
    deadline: float, tally: _Tally, client_auth: bool,
) -> None:  # fmt: skip
    auth = f"Authorization: Bearer {CLIENT_TOKEN}\r\n" if client_auth else ""
    request = f"GET / HTTP/1.1\r\nHost: {LOOPBACK}:{target_port}\r\n{auth}\r\n".encode()
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < deadline:
        if writer is None:
            try:
                reader, writer = await _open(connect_port, target_port, via_proxy, ctx)
            except (OSError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError):  # fmt: skip
                tally.errors["connect"] += 1
                await asyncio.sleep(0.05)
                continue
        start = time.perf_counter_ns()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, keep_alive = parse_head(head)
            await reader.readexactly(length)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):  # fmt: skip
            tally.errors["io"] += 1
            writer.close()
            writer = None
            continue
        tally.latencies_ns.append(time.perf_counter_ns() - start)
        if status != 200:
            tally.errors["status"] += 1
        if not keep_alive:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _run(
    connect_port: int, target_port: int, via_proxy: bool, ca_file: Path,
    connections: int, duration_s: float, client_auth: bool,
) -> tuple[_Tally, float]:  # fmt: skip
    ctx = ssl.create_default_context(cafile=str(ca_file))
    tally = _Tally()
    start = time.monotonic()
    deadline = start + duration_s
    await asyncio.gather(
        *(
            _worker(connect_port, target_port, via_proxy, ctx, deadline, tally, client_auth)
            for _ in range(connections)
        )
    )
    return tally, time.monotonic() - start


def run_tls_load(
    target: str, connect_port: int, target_port: int, via_proxy: bool, ca_file: Path,
    connections: int, duration_s: float, client_auth: bool = False,
) -> LoadResult:  # fmt: skip
    """``client_auth``: the client sends the bearer token itself (no injecting proxy)."""
    tally, elapsed = asyncio.run(
        _run(connect_port, target_port, via_proxy, ca_file, connections, duration_s, client_auth)
    )
    return summarize(target, connections, tally.latencies_ns, tally.errors, elapsed)


def summarize(
    target: str, connections: int, latencies_ns: list[int], errors: dict[str, int],
    elapsed_s: float,
) -> LoadResult:  # fmt: skip
    values = sorted(ns / 1000.0 for ns in latencies_ns)
    pcts = {f"{p:g}": percentile(values, p) for p in PLOT_PERCENTILES}
    latency = {f"p{k}": v for k, v in pcts.items()}
    if values:
        latency.update(min=values[0], max=values[-1], mean=sum(values) / len(values))
    return LoadResult(
        target=target, client=CLIENT, connections=connections, duration_s=elapsed_s,
        requests=len(values), rps=len(values) / elapsed_s if elapsed_s > 0 else 0.0,
        latency_us=latency, percentiles_us=pcts, errors=dict(errors),
    )  # fmt: skip
