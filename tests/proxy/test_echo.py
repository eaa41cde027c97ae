"""Attacks that make an upstream echo the request back (issue 12, items 1 and 7).

The harness upstream echoes TRACE/TRACK as Apache does by default; ``/headers`` echoes the
head it received on any method. The agent's goal: get the injected token into a response.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.harness import SECRET, closed, recv_response
from tests.proxy.test_tunnels import _connect_tunnel, _tls_env


def _request(env: Any, method: str, path: str = "/", extra: str = "") -> bytes:
    a = f"127.0.0.1:{env.upstream.port}"
    return f"{method} http://{a}{path} HTTP/1.1\r\nHost: {a}\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "trace", "Track"])
def test_trace_to_a_credentialed_echoing_upstream_is_refused(make_env: Any, method: str) -> None:
    env = make_env()  # access: full, a bearer binding on the upstream's host
    with env.connect() as s:
        s.sendall(_request(env, method, extra="Max-Forwards: 5\r\n"))
        status, hdrs, body = recv_response(s)
    assert SECRET.encode() not in body and b"Bearer" not in body
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert f"method {method} " in json.loads(body)["detail"]
    assert env.upstream.requests == 0 and env.tokens.calls == 0


def test_trace_without_a_binding_is_refused_too(make_env: Any) -> None:
    env = make_env(bind=False)
    with env.connect() as s:
        s.sendall(_request(env, "TRACE"))
        status, hdrs, _ = recv_response(s)
        # A refused TRACE keeps the connection: the next request is served.
        s.sendall(_request(env, "GET"))
        assert recv_response(s)[0] == 200
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert env.upstream.requests == 1


@pytest.mark.parametrize(
    "override", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]
)
def test_trace_smuggled_as_a_method_override_is_refused(make_env: Any, override: str) -> None:
    env = make_env()
    with env.connect() as s:
        s.sendall(_request(env, "GET", extra=f"{override}: trace\r\n"))
        status, hdrs, body = recv_response(s)
    assert SECRET.encode() not in body
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert env.upstream.requests == 0


def test_trace_inside_an_intercepted_tls_tunnel_is_refused(tmp_path: Path) -> None:
    env, ca_path, _ = _tls_env(tmp_path, trust_upstream=True)
    try:
        raw = _connect_tunnel(env)
        client = ssl.create_default_context(cafile=str(ca_path))
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(f"TRACE / HTTP/1.1\r\nHost: 127.0.0.1:{env.upstream.port}\r\n\r\n".encode())
            status, hdrs, body = recv_response(s)  # type: ignore[arg-type]
        assert SECRET.encode() not in body
        assert status == 403 and hdrs["x-openshell-proxy-error"] == "policy_denied"
        assert env.upstream.requests == 0
    finally:
        env.close()


def test_options_asterisk_is_refused_before_any_upstream_byte(make_env: Any) -> None:
    """``OPTIONS *`` names no resource the policy could judge: refused, in or out of a tunnel."""
    env = make_env()
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(f"OPTIONS * HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
        status, hdrs, _ = recv_response(s)
        assert closed(s)
    assert (status, hdrs["x-openshell-proxy-error"]) == (400, "bad_request")
    assert env.upstream.requests == 0


def _max_forwards_seen(env: Any) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in env.upstream.received.decode("latin-1").split("\r\n")
        if line.lower().startswith("max-forwards:")
    ]


def test_options_max_forwards_zero_is_answered_by_the_proxy(make_env: Any) -> None:
    """RFC 9110 7.6.2: at Max-Forwards 0 the proxy is the final recipient (nothing goes
    upstream, so no credential either); otherwise it forwards the value decremented."""
    env = make_env()
    with env.connect() as s:
        s.sendall(_request(env, "OPTIONS", "/headers", "Max-Forwards: 0\r\n"))
        status, hdrs, body = recv_response(s)
        assert (status, body) == (200, b"") and "x-openshell-proxy-error" not in hdrs
        assert env.upstream.requests == 0 and env.tokens.calls == 0
        s.sendall(_request(env, "OPTIONS", "/headers", "Max-Forwards: 3\r\n"))
        status, _, body = recv_response(s)
        assert status == 200
    assert _max_forwards_seen(env) == ["2"]


@pytest.mark.parametrize("value", ["-1", "x", "1, 2", "99999999999999999999"])
def test_options_with_a_bad_max_forwards_is_a_bad_request(make_env: Any, value: str) -> None:
    env = make_env()
    with env.connect() as s:
        s.sendall(_request(env, "OPTIONS", "/", f"Max-Forwards: {value}\r\n"))
        status, hdrs, _ = recv_response(s)
    assert (status, hdrs["x-openshell-proxy-error"]) == (400, "bad_request")
    assert env.upstream.requests == 0


def _upstream_hosts(env: Any) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in env.upstream.received.decode("latin-1").split("\r\n")
        if line.lower().startswith("host:")
    ]


@pytest.mark.parametrize("nominated", ["host", "Host, close", "keep-alive, HOST"])
def test_connection_host_does_not_strip_host(make_env: Any, nominated: str) -> None:
    """A ``Connection``-nominated Host would reach the upstream without Host but with the
    token (a virtual-host server then routes it to its default site)."""
    env = make_env()
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(_request(env, "GET", "/headers", f"Connection: {nominated}\r\n"))
        status, _, _ = recv_response(s)
    assert status == 200
    assert _upstream_hosts(env) == [a], env.upstream.received


def test_host_is_regenerated_from_the_target(make_env: Any) -> None:
    """Whatever spelling the agent used, the upstream gets the authority the policy judged."""
    env = make_env()
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(
            f"GET http://{a}/headers HTTP/1.1\r\nX-A: 1\r\nhOsT: {a.upper()}\r\n\r\n".encode()
        )
        assert recv_response(s)[0] == 200
    assert _upstream_hosts(env) == [a]
    assert b"\r\nHost: " + a.encode() in env.upstream.received


@pytest.mark.parametrize(
    "nominated", ["content-length", "transfer-encoding", "authorization", "expect"]
)
def test_connection_nominating_framing_keeps_the_body_intact(
    make_env: Any, nominated: str
) -> None:
    """Framing is regenerated from the parsed request, whatever ``Connection`` names; the
    injected credential is added after the nominated headers are gone."""
    env = make_env()
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(
            f"POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nConnection: {nominated}\r\n"
            "Content-Length: 5\r\n\r\nhello".encode()
        )
        status, _, body = recv_response(s)
        assert (status, body) == (200, b"5")
        s.sendall(
            f"POST http://{a}/upload HTTP/1.1\r\nHost: {a}\r\nConnection: {nominated}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".encode()
        )
        status, _, body = recv_response(s)
        assert (status, body) == (200, b"3")
    text = env.upstream.received.decode("latin-1")
    assert text.count(f"Authorization: Bearer {SECRET}") == 2
