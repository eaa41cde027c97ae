"""Runner process: the upstream for uploads and streams (nginx serves the downloads).

* ``POST /sink``: reads the whole body (Content-Length or chunked), then answers
  ``{"received": N}``; a real API answers an upload after receiving it, and nginx's
  ``return`` answers before the body is read.
* ``GET /sse?n=N&interval_us=U``: N server-sent events, each ``data: <CLOCK_MONOTONIC ns>``
  stamped just before it is written (one clock for every process on the machine).
* ``GET /ws``: a WebSocket echo (RFC 6455).

Every request needs an ``Authorization: Bearer`` header (401 otherwise), so a proxy that
fails to inject shows up as errors. One thread per connection; plain and TLS listeners.
Usage: python -m integration.bench.stream_server --cert PEM --key PEM --listen plain
       --listen tls [...]; prints READY {"ports": [...]} in --listen order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from integration.bench.procs import LOOPBACK
from integration.bench.runner_io import announce, serve_commands
from integration.bench.wire import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    ChunkedReader,
    FrameReader,
    WireError,
    chunk,
    sse_event,
    ws_accept,
    ws_frame,
)

HEAD_LIMIT = 64 * 1024
SINK_BUFFER = 1 << 20


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], rest: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers  # lower-case names; a repeated name keeps the last value
        self.rest = rest  # bytes read past the head


def read_request(sock: socket.socket, pending: bytes) -> Request | None:
    """The next request head on ``sock``; None when the peer closed between requests."""
    buf = bytearray(pending)
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_LIMIT:
            raise WireError("request head too large")
        data = sock.recv(65536)
        if not data:
            if buf:
                raise WireError("connection closed inside a request head")
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers, rest)


def respond(sock: socket.socket, status: str, body: bytes, close: bool = False) -> None:
    conn = "Connection: close\r\n" if close else ""
    sock.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{conn}"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


def sink(sock: socket.socket, req: Request) -> bytes:
    """Read and discard the body; answer with its size. Returns bytes read past it."""
    received = 0
    leftover = b""
    if req.headers.get("transfer-encoding", "").lower() == "chunked":
        reader = ChunkedReader()
        received += len(reader.feed(req.rest))
        while not reader.done:
            data = sock.recv(SINK_BUFFER)
            if not data:
                raise WireError("connection closed inside a chunked body")
            received += len(reader.feed(data))
        leftover = reader.leftover
    else:
        length = int(req.headers.get("content-length", "0"))
        first = req.rest[:length]
        leftover = req.rest[length:]
        received = len(first)
        buf = memoryview(bytearray(SINK_BUFFER))
        while received < length:
            n = sock.recv_into(buf, min(SINK_BUFFER, length - received))
            if n == 0:
                raise WireError("connection closed inside the body")
            received += n
    respond(sock, "200 OK", json.dumps({"received": received}).encode())
    return leftover


def sse(sock: socket.socket, query: dict[str, list[str]]) -> None:
    n = int(query.get("n", ["100"])[0])
    interval = int(query.get("interval_us", ["5000"])[0]) / 1e6
    sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    next_at = time.monotonic()
    for _ in range(n):
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendall(chunk(sse_event(str(time.monotonic_ns()).encode())))
    sock.sendall(chunk(b""))


def websocket(sock: socket.socket, req: Request) -> None:
    key = req.headers.get("sec-websocket-key", "")
    if req.headers.get("upgrade", "").lower() != "websocket" or not key:
        # What arrived: a proxy that drops the upgrade headers shows up here.
        got = f"upgrade={req.headers.get('upgrade', '')!r} connection={req.headers.get('connection', '')!r}"
        respond(sock, "400 Bad Request", json.dumps({"error": "not a websocket upgrade",
                                                     "received": got}).encode(), close=True)
        return
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + ws_accept(key).encode() + b"\r\n\r\n"
    )
    reader = FrameReader()
    frames = reader.feed(req.rest)
    while True:
        for frame in frames:
            if frame.opcode == OP_CLOSE:
                sock.sendall(ws_frame(OP_CLOSE, frame.payload[:2]))
                return
            reply = OP_PONG if frame.opcode == OP_PING else frame.opcode
            sock.sendall(ws_frame(reply, frame.payload))
        data = sock.recv(65536)
        if not data:
            return
        frames = reader.feed(data)


def serve_connection(sock: socket.socket) -> None:
    pending = b""
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            req = read_request(sock, pending)
            if req is None:
                return
            pending = b""
            url = urlsplit(req.target)
            if not req.headers.get("authorization", "").startswith("Bearer "):
                # Its body (if any) is not read: close instead of parsing it as a request.
                respond(sock, "401 Unauthorized", b'{"error": "no bearer token"}', close=True)
                return
            if url.path == "/sink" and req.method in ("POST", "PUT"):
                pending = sink(sock, req)
            elif url.path == "/sse" and req.method == "GET":
                sse(sock, parse_qs(url.query))
            elif url.path == "/ws" and req.method == "GET":
                websocket(sock, req)
                return
            else:
                respond(sock, "404 Not Found", b'{"error": "no such path"}')


def _guarded(conn: socket.socket) -> None:
    with contextlib.suppress(OSError, WireError, ValueError):
        serve_connection(conn)


def accept_loop(listener: socket.socket, wrap: Callable[[socket.socket], socket.socket]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # the listener was closed

        def handle(conn: socket.socket = conn) -> None:
            try:
                wrapped = wrap(conn)
            except (OSError, ssl.SSLError):
                conn.close()
                return
            _guarded(wrapped)

        threading.Thread(target=handle, daemon=True).start()


def serve(kinds: list[str], ctx: ssl.SSLContext) -> list[socket.socket]:
    """Listen on 127.0.0.1 (ephemeral ports), one listener per kind ("plain"/"tls"), each
    served by a daemon thread; closing a listener ends its thread."""
    listeners = []
    for kind in kinds:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(4096)
        listeners.append(listener)

        def wrap(conn: socket.socket, tls: bool = kind == "tls") -> socket.socket:
            return ctx.wrap_socket(conn, server_side=True) if tls else conn

        threading.Thread(target=accept_loop, args=(listener, wrap), daemon=True).start()
    return listeners


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.bench.stream_server")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--listen", action="append", choices=["plain", "tls"], required=True)
    args = p.parse_args(argv)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    listeners = serve(args.listen, ctx)
    announce("READY", {"ports": [sock.getsockname()[1] for sock in listeners]})
    serve_commands(lambda: {"threads": threading.active_count()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
