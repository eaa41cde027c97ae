"""CONNECT: raw tunnels, plain HTTP inside a tunnel, TLS interception with injection."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.harness import (
    SECRET,
    Env,
    FakePolicy,
    FakeTokens,
    binding,
    endpoint,
    recv_response,
)
from tests.proxy.tlscerts import make_pki


class Interceptor:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.hosts: list[str] = []

    def server_context(self, host: str) -> ssl.SSLContext:
        self.hosts.append(host)
        return self.ctx


def _tls_env(tmp_path: Path, *, trust_upstream: bool) -> tuple[Env, Path, Interceptor]:
    pki = make_pki(tmp_path)
    agent_side, ca_path, upstream_server = pki.agent_side, pki.ca_path, pki.upstream_server
    upstream_client = ssl.create_default_context(
        cafile=str(pki.upstream_ca_path if trust_upstream else ca_path)
    )
    upstream_client.set_alpn_protocols(["http/1.1"])
    interceptor = Interceptor(agent_side)
    env = Env(
        FakePolicy(),
        FakeTokens(),
        str(tmp_path / "audit-tls.jsonl"),
        upstream_ssl=upstream_client,
        interceptor=interceptor,
    )
    # Restart the recording upstream with TLS.
    env.upstream.server.close()  # type: ignore[union-attr]
    env.call(env.upstream.start(upstream_server))
    ep = endpoint("127.0.0.1", env.upstream.port, tls="terminate")
    env.policy.endpoints.append(ep)
    env.policy.bindings.append(binding(ep))
    return env, ca_path, interceptor


def _connect_tunnel(env: Env) -> socket.socket:
    s = env.connect()
    a = f"127.0.0.1:{env.upstream.port}"
    s.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
    status, _, _ = recv_response(s, head_only=True)
    assert status == 200
    return s


def test_intercepted_tls_injects_and_keeps_alive(tmp_path: Path) -> None:
    env, ca_path, interceptor = _tls_env(tmp_path, trust_upstream=True)
    try:
        raw = _connect_tunnel(env)
        client = ssl.create_default_context(cafile=str(ca_path))
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            for _ in range(3):
                s.sendall(
                    f"GET /headers?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{env.upstream.port}\r\n"
                    "Authorization: Bearer stolen\r\n\r\n".encode()
                )
                status, _, body = recv_response(s)  # type: ignore[arg-type]
                assert status == 200
                lines = body.decode().lower().split("\r\n")
                assert [ln for ln in lines if ln.startswith("authorization")] == [
                    f"authorization: bearer {SECRET.lower()}"
                ]
            s.sendall(b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            status, hdrs, _ = recv_response(s)  # type: ignore[arg-type]
            assert status == 403
            assert hdrs["x-openshell-proxy-error"] == "request_authority_mismatch"
        assert interceptor.hosts == ["127.0.0.1"]
        assert env.upstream.connections == 1
        assert b"stolen" not in env.upstream.received
    finally:
        env.close()
    assert SECRET not in (tmp_path / "audit-tls.jsonl").read_text()


def test_upstream_certificate_failure_is_502(tmp_path: Path) -> None:
    env, ca_path, _ = _tls_env(tmp_path, trust_upstream=False)
    try:
        raw = _connect_tunnel(env)
        client = ssl.create_default_context(cafile=str(ca_path))
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{env.upstream.port}\r\n\r\n".encode())
            status, hdrs, body = recv_response(s)  # type: ignore[arg-type]
        assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"
        assert "certificate verification failed" in json.loads(body)["detail"]
        assert env.upstream.requests == 0
    finally:
        env.close()


def test_agent_tls_handshake_failure_is_logged(tmp_path: Path) -> None:
    env, _, _ = _tls_env(tmp_path, trust_upstream=True)
    try:
        raw = _connect_tunnel(env)
        client = ssl.create_default_context()  # does not trust the sandbox CA
        try:
            client.wrap_socket(raw, server_hostname="127.0.0.1").close()
        except ssl.SSLError:
            pass
        raw.close()
    finally:
        env.close()
    text = (tmp_path / "audit-tls.jsonl").read_text()
    assert "agent TLS handshake failed" in text


def test_raw_tunnel_for_endpoint_without_inspection(make_env: Any) -> None:
    env = make_env(bind=False)
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(
            f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode()
            + b"GET /headers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mine\r\n\r\n"
        )
        status, _, _ = recv_response(s, head_only=True)
        assert status == 200
        status, _, body = recv_response(s)
        assert status == 200 and b"Authorization: Bearer mine" in body
    assert env.proxy.counters.tunnels == 1


def test_plain_http_inside_connect_is_inspected(make_env: Any) -> None:
    class NoTls:
        def server_context(self, host: str) -> Any:
            raise AssertionError("not TLS")

    env = make_env(interceptor=NoTls())
    with _connect_tunnel(env) as s:
        s.sendall(
            b"GET /headers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer stolen\r\n"
            b"\r\n".replace(b"127.0.0.1", f"127.0.0.1:{env.upstream.port}".encode())
        )
        status, _, body = recv_response(s)
    assert status == 200
    assert b"stolen" not in body and f"Bearer {SECRET}".encode() in body


def test_connect_needing_inspection_without_interceptor_is_denied(make_env: Any) -> None:
    env = make_env()
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
        status, hdrs, _ = recv_response(s)
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert env.upstream.connections == 0


def test_connect_to_undeclared_or_control_port(make_env: Any) -> None:
    env = make_env(bind=False)
    for target, code in (
        (f"localhost:{env.upstream.port}", "policy_denied"),
        ("127.0.0.1:10250", "ssrf_denied"),
    ):
        with env.connect() as s:
            s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            status, hdrs, _ = recv_response(s)
        assert status == 403 and hdrs["x-openshell-proxy-error"] == code
    assert env.upstream.connections == 0


def test_interceptor_without_certificate_closes_tunnel(make_env: Any) -> None:
    class Uncovered:
        def server_context(self, host: str) -> ssl.SSLContext:
            raise LookupError(f"{host} not covered")

    env = make_env(interceptor=Uncovered())
    raw = _connect_tunnel(env)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()
    assert env.upstream.connections == 0
    env.audit.close()
    assert "no interception certificate" in open(env.audit_path).read()


def test_upstream_name_is_verified_against_its_certificate(tmp_path: Path) -> None:
    """The upstream TLS client verifies the endpoint's host name, not only the chain."""
    env, ca_path, _ = _tls_env(tmp_path, trust_upstream=True)

    async def resolver(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    try:
        env.proxy._resolver = resolver  # "upstream.test" -> 127.0.0.1; its cert names the IP
        ep = endpoint("upstream.test", env.upstream.port, tls="terminate")
        env.policy.endpoints.append(ep)
        env.policy.bindings.append(binding(ep))
        s = env.connect()
        a = f"upstream.test:{env.upstream.port}"
        s.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
        assert recv_response(s, head_only=True)[0] == 200
        client = ssl.create_default_context(cafile=str(ca_path))
        client.check_hostname = False  # the test interceptor's leaf names 127.0.0.1
        with client.wrap_socket(s, server_hostname="upstream.test") as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
            status, hdrs, body = recv_response(tls)  # type: ignore[arg-type]
        assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"
        assert "certificate verification failed" in json.loads(body)["detail"]
        assert env.upstream.requests == 0
    finally:
        env.close()
