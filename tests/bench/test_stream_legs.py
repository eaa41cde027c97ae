"""The stream server with the bench's clients on loopback: SSE stamps, WebSocket echo,
the upload sink, idle connections and first requests; and interleaved start-up timing."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from integration.bench import stream_server
from integration.bench.certs import make_pki
from integration.bench.conns import first_request, idle_connections
from integration.bench.startup import time_commands
from integration.bench.streams import (
    SSE,
    WS,
    NotAvailable,
    StreamLeg,
    run_streams,
    sse_latencies,
    ws_round_trips,
)
from integration.bench.wrk import CLIENT_TOKEN


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    listeners = stream_server.serve(["plain", "tls"], ctx)
    yield listeners[0].getsockname()[1], listeners[1].getsockname()[1], pki.ca_cert
    for sock in listeners:
        sock.close()


def test_sse_and_websocket_direct_plain_and_tls(server: tuple[int, int, Path]) -> None:
    plain, tls, ca = server
    legs = [StreamLeg("p", plain, client_auth=True), StreamLeg("t", tls, ca, client_auth=True)]
    results = run_streams(legs, rounds=2, events=15, interval_us=200, show=False)
    assert {(r.leg, r.kind) for r in results} == {("p", SSE), ("p", WS), ("t", SSE), ("t", WS)}
    for r in results:
        assert not r.error
        assert len(r.p50_us) == 2 and r.samples == 2 * 5  # 10 warm-up messages dropped
        assert 0 < r.median_p50_us <= r.median_p99_us  # type: ignore[operator]


def test_without_a_token_the_stream_is_refused(server: tuple[int, int, Path]) -> None:
    plain, _, _ = server
    with pytest.raises(ConnectionError, match="401"):
        sse_latencies(StreamLeg("p", plain), 12, 100)


class _Relay(threading.Thread):
    """A forward 'proxy' that drops Upgrade headers, as a proxy without WebSocket support."""

    def __init__(self, upstream: int) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream = upstream

    def run(self) -> None:
        conn, _ = self.listener.accept()
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"upgrade")]
            lines[0] = lines[0].replace(f"http://127.0.0.1:{self.upstream}".encode(), b"")
            up.sendall(b"\r\n".join(lines))
            conn.sendall(up.recv(65536))


def test_websocket_through_a_proxy_that_drops_the_upgrade_is_not_available(
    server: tuple[int, int, Path],
) -> None:
    plain, _, _ = server
    relay = _Relay(plain)
    relay.start()
    with pytest.raises(NotAvailable, match="through the proxy the upgrade was answered 400"):
        ws_round_trips(StreamLeg("ours", plain, proxy_port=relay.port, client_auth=True), 12)
    relay.listener.close()


def test_sink_reads_length_and_chunked_bodies(server: tuple[int, int, Path]) -> None:
    plain, _, _ = server
    head = f"POST /sink HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\n"
    with socket.create_connection(("127.0.0.1", plain)) as s:
        s.sendall(f"{head}Content-Length: 300000\r\n\r\n".encode() + b"a" * 300_000)
        s.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + b"5\r\nhello\r\n0\r\n\r\n")
        got = b""
        while got.count(b"received") < 2:
            got += s.recv(4096)
    assert b'{"received": 300000}' in got and b'{"received": 5}' in got


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def ok_server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_idle_connections_and_first_requests(ok_server: int) -> None:
    readings = iter([1000, 1500, 1100])
    idle = idle_connections(ok_server, 80, 20, lambda: next(readings), settle_s=0.01)
    assert (idle.answered, idle.before_kib, idle.idle_kib, idle.after_close_kib) == (
        20, 1000, 1500, 1100)  # fmt: skip
    assert idle.per_connection_kib == 25.0
    first = first_request(ok_server, 80, via_proxy=True, n=5)
    assert len(first.cold_ms) == len(first.warm_ms) == 5
    assert min(first.cold_ms) > 0 and min(first.warm_ms) > 0


def test_start_up_runs_interleave_and_failures_are_dropped() -> None:
    samples = time_commands(
        [("ok", ["/bin/true"], "true"), ("bad", ["/bin/false"], "false")], runs=3
    )
    ok, bad = samples
    assert len(ok.samples_ms) == 3 and ok.median_ms is not None and not ok.error
    assert bad.error and bad.median_ms is None and bad.exit_code == 1
