"""A recording HTTP CONNECT proxy for tests (the operator's egress proxy, played on loopback).

It records every CONNECT (target and ``Proxy-Authorization``), tunnels to loopback targets
only (tests never send traffic elsewhere), and can be told to refuse with a status, to
demand credentials, to close without answering, or to speak TLS itself (an ``https://``
proxy). Any other method than CONNECT is recorded and refused: the supervisor must never
forward-proxy through it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    authorization: str | None


class RecordingConnectProxy:
    def __init__(
        self,
        *,
        refuse: int | None = None,
        require_auth: str | None = None,
        close_without_answer: bool = False,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.refuse = refuse
        self.require_auth = require_auth
        self.close_without_answer = close_without_answer
        self.tls = tls
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        self.port = self._server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def targets(self) -> list[str]:
        with self._lock:
            return [s.target for s in self.seen]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            head, _, early = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            self._record(Seen(method, target, fields.get("proxy-authorization")))
            if self.close_without_answer:
                return
            if method != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            if self.refuse is not None:
                conn.sendall(b"HTTP/1.1 %d Refused By Test\r\nContent-Length: 5\r\n\r\nnope\n"
                             % self.refuse)
                return
            if self.require_auth is not None and fields.get("proxy-authorization") != self.require_auth:
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=test\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            if not ipaddress.ip_address(host).is_loopback:  # tests stay on loopback
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection((host, int(port)), timeout=10)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if early:
                    upstream.sendall(early)
                _splice(conn, upstream)


def _splice(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        with contextlib.suppress(OSError):
            if isinstance(dst, ssl.SSLSocket):
                dst.close()
            else:
                dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join(30)
