"""Hostile raw bytes to a real proxy: each is refused and the upstream receives nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from supervisor.proxy.server import Limits
from tests.proxy.harness import closed, recv_response

H = "127.0.0.1:{port}"

CASES: dict[str, tuple[str, int]] = {
    "cl_and_te": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two_different_cl": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\n"
        "Content-Length: 6\r\n\r\nabcdef",
        400,
    ),
    "te_gzip_chunked": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        "0\r\n\r\n",
        400,
    ),
    "te_chunked_chunked": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked, chunked\r\n"
        "\r\n0\r\n\r\n",
        400,
    ),
    "te_two_headers": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bare_lf": ("GET http://{a}/ HTTP/1.1\nHost: {a}\n\n", 400),
    "bare_lf_in_one_line": ("GET http://{a}/ HTTP/1.1\r\nHost: {a}\nX: y\r\n\r\n", 400),
    "obs_fold": ("GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nX-A: b\r\n c\r\n\r\n", 400),
    "space_before_colon": (
        "GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nAuthorization : x\r\n\r\n",
        400,
    ),
    "two_hosts": ("GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n\r\n", 400),
    "no_host": ("GET http://{a}/ HTTP/1.1\r\n\r\n", 400),
    "host_disagrees": ("GET http://{a}/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
    "fragment": ("GET http://{a}/x#frag HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "control_in_target": ("GET http://{a}/x\x01y HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "tab_in_target": ("GET http://{a}/x\ty HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "non_ascii_target": ("GET http://{a}/caf\u00e9 HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "userinfo": ("GET http://u:p@{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "dot_segment": ("GET http://{a}/api/../admin HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "encoded_slash": ("GET http://{a}/api%2f..%2fadmin HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "origin_form_outside_tunnel": ("GET / HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "control_in_value": ("GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nX: a\x00b\r\n\r\n", 400),
    "bad_name": ("GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nX(y): 1\r\n\r\n", 400),
    "extra_space_request_line": ("GET  http://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n", 400),
    "http2_version": ("GET http://{a}/ HTTP/2.0\r\nHost: {a}\r\n\r\n", 400),
    "huge_chunk_size": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n"
        "ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "bad_chunk_size": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n"
        "-1\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "negative_cl": (
        "POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    "connect_without_port": ("CONNECT {h} HTTP/1.1\r\nHost: {h}\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rejected_before_anything_goes_upstream(make_env: Any, name: str) -> None:
    env = make_env()
    raw, want = CASES[name]
    a = H.format(port=env.upstream.port)
    payload = raw.format(a=a, h="127.0.0.1").encode("utf-8")
    with env.connect() as s:
        s.sendall(payload)
        status, hdrs, body = recv_response(s)
        assert status == want, body
        assert hdrs["x-openshell-proxy-error"] == "bad_request"
        assert json.loads(body)["error"] == "bad_request"
        assert closed(s)
    assert env.upstream.connections == 0
    assert env.upstream.received == b""
    assert env.tokens.calls == 0


def test_megabyte_of_header_is_431(make_env: Any) -> None:
    env = make_env()
    a = H.format(port=env.upstream.port)
    with env.connect() as s:
        s.sendall(f"GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\n".encode())
        try:
            for _ in range(64):
                s.sendall(b"X-Big: " + b"a" * 16000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, hdrs, _ = recv_response(s)
    assert status == 431 and hdrs["x-openshell-proxy-error"] == "bad_request"
    assert env.upstream.connections == 0


def test_slow_client_hits_head_timeout(make_env: Any) -> None:
    env = make_env(limits=Limits(head_timeout=0.6))
    a = H.format(port=env.upstream.port)
    data = f"GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n".encode()
    started = time.monotonic()
    with env.connect() as s:
        s.settimeout(0.2)
        sent = 0
        cut = False
        for byte in data:
            try:
                s.sendall(bytes([byte]))
                sent += 1
                if s.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
        assert cut and sent < len(data)
    assert time.monotonic() - started < 20
    assert env.upstream.received == b""
    assert env.proxy.counters.timeouts >= 1


def test_connect_then_request_for_another_host(make_env: Any) -> None:
    class NoTls:
        def server_context(self, host: str) -> Any:
            raise AssertionError("plain HTTP inside the tunnel needs no TLS")

    env = make_env(interceptor=NoTls())
    a = H.format(port=env.upstream.port)
    with env.connect() as s:
        s.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
        status, _, _ = recv_response(s, head_only=True)
        assert status == 200
        s.sendall(b"GET /headers HTTP/1.1\r\nHost: other.example\r\n\r\n")
        status, hdrs, _body = recv_response(s)
        assert status == 403
        assert hdrs["x-openshell-proxy-error"] == "request_authority_mismatch"
        s.sendall(
            f"GET http://other.example:{env.upstream.port}/ HTTP/1.1\r\n"
            f"Host: other.example:{env.upstream.port}\r\n\r\n".encode()
        )
        status, hdrs, _ = recv_response(s)
        assert hdrs["x-openshell-proxy-error"] == "request_authority_mismatch"
    assert env.upstream.received == b""
