"""Stream latency: per server-sent event (server stamp to client receipt) and per WebSocket
message round trip (client send to echo received), direct and through a proxy.

Blocking sockets, one stream at a time: the latency of one event, not a throughput. The
stream server stamps events with CLOCK_MONOTONIC, which every process on the machine
shares. Rounds interleave the legs; each leg keeps every round's p50 and p99 and reports
their medians.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from integration.bench.procs import LOOPBACK
from integration.bench.stats import median
from integration.bench.tlsload import parse_head, percentile, read_head
from integration.bench.wire import (
    OP_BINARY,
    OP_CLOSE,
    ChunkedReader,
    EventReader,
    FrameReader,
    ws_accept,
    ws_frame,
)
from integration.bench.wrk import CLIENT_TOKEN

SSE = "sse"
WS = "websocket"
KINDS = (SSE, WS)
WARMUP_MESSAGES = 10  # first events / round trips not counted (connection set-up, caches)
IO_TIMEOUT = 10.0


class NotAvailable(Exception):
    """The leg cannot run against this build (e.g. no WebSocket support in the proxy)."""


@dataclass(frozen=True)
class StreamLeg:
    name: str
    port: int  # the stream server's port (plain or TLS)
    tls_ca: Path | None = None  # TLS to the server, trusting this CA
    proxy_port: int | None = None  # forward (plain) or CONNECT then TLS (tls_ca set)
    client_auth: bool = False


@dataclass
class StreamResult:
    leg: str
    kind: str
    p50_us: list[float] = field(default_factory=list)  # one per round
    p99_us: list[float] = field(default_factory=list)
    samples: int = 0
    error: str = ""

    @property
    def median_p50_us(self) -> float | None:
        return median(self.p50_us) if self.p50_us and not self.error else None

    @property
    def median_p99_us(self) -> float | None:
        return median(self.p99_us) if self.p99_us and not self.error else None


def _read_head(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """(status, head, bytes after the head)."""
    head, rest = read_head(sock)
    return parse_head(head + b"\r\n\r\n")[0], head, rest


def open_stream(leg: StreamLeg) -> tuple[socket.socket, str]:
    """A connected socket and the request target to use on it."""
    authority = f"{LOOPBACK}:{leg.port}"
    sock = socket.create_connection((LOOPBACK, leg.proxy_port or leg.port), IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    prefix = ""
    if leg.proxy_port is not None and leg.tls_ca is not None:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        status, _, _ = _read_head(sock)
        if status != 200:
            sock.close()
            raise ConnectionError(f"CONNECT answered {status}")
    elif leg.proxy_port is not None:
        prefix = f"http://{authority}"  # absolute form for the forward proxy
    if leg.tls_ca is not None:
        ctx = ssl.create_default_context(cafile=str(leg.tls_ca))
        sock = ctx.wrap_socket(sock, server_hostname=LOOPBACK)
    return sock, prefix


def _request(leg: StreamLeg, target: str, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {CLIENT_TOKEN}\r\n" if leg.client_auth else ""
    host = f"{LOOPBACK}:{leg.port}"
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}\r\n".encode()


def sse_latencies(leg: StreamLeg, events: int, interval_us: int) -> list[float]:
    """Microseconds from the server's stamp to the client's receipt, per event."""
    sock, prefix = open_stream(leg)
    out: list[float] = []
    with sock:
        sock.sendall(_request(leg, f"{prefix}/sse?n={events}&interval_us={interval_us}"))
        status, head, rest = _read_head(sock)
        if status != 200:
            raise ConnectionError(f"SSE request answered {status}")
        if b"chunked" not in head.lower():
            raise ConnectionError("SSE response is not chunked")
        chunks, parser = ChunkedReader(), EventReader()
        data = rest
        while True:
            stamped = parser.feed(chunks.feed(data))
            now = time.monotonic_ns()
            out += [(now - int(e)) / 1000.0 for e in stamped]
            if chunks.done:
                break
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("stream closed early")
    if len(out) != events:
        raise ConnectionError(f"received {len(out)} of {events} events")
    return out[WARMUP_MESSAGES:]


def ws_round_trips(leg: StreamLeg, messages: int, size: int = 64) -> list[float]:
    """Microseconds per echoed binary message; NotAvailable when the upgrade is refused."""
    sock, prefix = open_stream(leg)
    key = "YmVuY2gtd2Vic29ja2V0LWtleQ=="  # any 16 bytes, base64
    rtts: list[float] = []
    with sock:
        sock.sendall(_request(leg, f"{prefix}/ws", (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )))  # fmt: skip
        status, head, rest = _read_head(sock)
        if status != 101:
            detail = rest[:160].decode(errors="replace").strip()
            via = "through the proxy " if leg.proxy_port is not None else ""
            raise NotAvailable(f"{via}the upgrade was answered {status} {detail}".strip())
        if ws_accept(key).encode() not in head:
            raise ConnectionError("wrong Sec-WebSocket-Accept")
        reader = FrameReader()
        pending = reader.feed(rest)
        payload = os.urandom(size)
        for _ in range(messages):
            start = time.perf_counter_ns()
            sock.sendall(ws_frame(OP_BINARY, payload, mask=os.urandom(4)))
            while not pending:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed mid-stream")
                pending = reader.feed(data)
            rtts.append((time.perf_counter_ns() - start) / 1000.0)
            frame = pending.pop(0)
            if frame.payload != payload:
                raise ConnectionError("echo differs from the message")
        sock.sendall(ws_frame(OP_CLOSE, b"\x03\xe8", mask=os.urandom(4)))
    return rtts[WARMUP_MESSAGES:]


def run_streams(
    legs: list[StreamLeg], rounds: int, events: int, interval_us: int, show: bool = True
) -> list[StreamResult]:
    results = {(leg.name, k): StreamResult(leg.name, k) for leg in legs for k in KINDS}
    for round_no in range(1, rounds + 1):
        for leg in legs:
            for kind in KINDS:
                cell = results[(leg.name, kind)]
                if cell.error:
                    continue
                try:
                    if kind == SSE:
                        values = sse_latencies(leg, events, interval_us)
                    else:
                        values = ws_round_trips(leg, events)
                except NotAvailable as err:
                    cell.error = f"not available: {err}"  # the build lacks it: no retry
                except (OSError, ValueError) as err:
                    cell.error = f"{type(err).__name__}: {err}"
                if cell.error:
                    if show:
                        print(f"round {round_no}  {kind:<9} {leg.name:<16} {cell.error}")
                    continue
                ordered = sorted(values)
                cell.p50_us.append(percentile(ordered, 50))
                cell.p99_us.append(percentile(ordered, 99))
                cell.samples += len(values)
                if show:
                    print(f"round {round_no}  {kind:<9} {leg.name:<16} p50 "
                          f"{cell.p50_us[-1] / 1000:.3f} ms  p99 {cell.p99_us[-1] / 1000:.3f} ms")  # fmt: skip
    return list(results.values())


def find_stream(results: list[StreamResult], leg: str, kind: str) -> StreamResult | None:
    for r in results:
        if r.leg == leg and r.kind == kind:
            return r
    return None


def added_ms(results: list[StreamResult], leg: str, base: str, kind: str, key: str) -> float | None:
    """Median-of-rounds percentile ``key`` ("p50"/"p99") of ``leg`` minus ``base``'s, in ms."""
    a, b = find_stream(results, leg, kind), find_stream(results, base, kind)
    if a is None or b is None:
        return None
    va = a.median_p50_us if key == "p50" else a.median_p99_us
    vb = b.median_p50_us if key == "p50" else b.median_p99_us
    return None if va is None or vb is None else (va - vb) / 1000.0
