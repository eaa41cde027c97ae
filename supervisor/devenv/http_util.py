"""A small threaded HTTP server on loopback for the development servers (stdlib only)."""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_FETCH_BYTES = 1 << 20


class _QuietHTTPServer(ThreadingHTTPServer):
    """A client that goes away mid-answer (e.g. a grant timeout) is normal here, not an
    error worth a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackHTTPServer:
    """Runs ``handler`` on ``host:port`` (0 = ephemeral) in a daemon thread."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._server = _QuietHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            # Handshakes happen in the accept loop: fine for a development server.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    @property
    def server(self) -> ThreadingHTTPServer:
        return self._server

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"{self._scheme}://{shown}:{port}"

    def start(self) -> None:
        # A short poll interval keeps stop() (and so test teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="devenv-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: Any,
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(body).encode()
    send_bytes(handler, status, data, "application/json", headers)


def send_bytes(
    handler: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Cache-Control", "no-store")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def fetch_json(url: str, timeout: float = 5.0) -> Any:
    """GET a JSON document over plain HTTP, ignoring proxy environment variables.

    (urllib would honour HTTP_PROXY; the development servers must never do that.)
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("only http:// URLs are supported by the development servers")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        data = resp.read(MAX_FETCH_BYTES + 1)
        if resp.status != 200 or len(data) > MAX_FETCH_BYTES:
            raise ValueError(f"GET {parts.path} answered {resp.status}")
        return json.loads(data)
    finally:
        conn.close()


def wait_for_termination() -> None:
    """Block a standalone development server's main thread until SIGINT or SIGTERM."""
    import signal

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
