"""The proxy over real loopback sockets: injection, keep-alive, policy, framing."""

from __future__ import annotations

import json
import socket
from typing import Any

from supervisor.grants.errors import GrantError
from supervisor.proxy.server import Limits
from tests.proxy.harness import (
    LOOPBACK,
    SECRET,
    FakeTokens,
    binding,
    closed,
    endpoint,
    recv_response,
)


def get(
    port: int,
    path: str,
    *,
    host: str = "127.0.0.1",
    extra: str = "",
    method: str = "GET",
    version: str = "HTTP/1.1",
) -> bytes:
    return (
        f"{method} http://{host}:{port}{path} {version}\r\nHost: {host}:{port}\r\n{extra}\r\n"
    ).encode()


def audit_events(env: Any) -> list[dict[str, Any]]:
    env.audit.close()
    path = env.audit_path
    return [json.loads(line) for line in open(path) if line.strip()]


def test_agent_credential_replaced_by_exactly_one_injected_header(make_env: Any) -> None:
    env = make_env()
    with env.connect() as s:
        s.sendall(
            get(
                env.upstream.port,
                "/headers?q=secretquery",
                extra=(
                    "Authorization: Bearer stolen\r\nauthorization: other\r\n"
                    "Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
                    "Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Keep: yes\r\n"
                ),
            )
        )
        status, _, body = recv_response(s)
    assert status == 200
    text = body.decode()
    assert "stolen" not in text and "other" not in text
    lines = [ln.lower() for ln in text.split("\r\n")]
    auth = [ln for ln in lines if ln.startswith("authorization")]
    assert auth == [f"authorization: bearer {SECRET.lower()}"]
    assert not any(ln.startswith(("proxy-", "x-hop", "keep-alive", "connection")) for ln in lines)
    assert "x-keep: yes" in lines
    assert text.startswith("GET /headers?q=secretquery HTTP/1.1\r\n")
    assert env.tokens.calls == 1
    events = audit_events(env)
    granted = [e for e in events if e.get("message") == "credential injected"]
    assert granted and granted[0]["class_uid"] == 4002
    assert granted[0]["severity_id"] == 1 and granted[0]["action_id"] == 1
    assert "secretquery" not in json.dumps(events)


def test_header_style_credential(make_env: Any) -> None:
    env = make_env(bind=False)
    ep = env.policy.endpoints[0]
    env.policy.bindings.append(binding(ep, header="X-Api-Key", style="header"))
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/headers", extra="x-api-key: mine\r\n"))
        _, _, body = recv_response(s)
    lines = body.decode().lower().split("\r\n")
    assert [ln for ln in lines if ln.startswith("x-api-key")] == [f"x-api-key: {SECRET.lower()}"]


def test_no_binding_forwards_unchanged(make_env: Any) -> None:
    env = make_env(bind=False)
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/headers", extra="Authorization: Bearer mine\r\n"))
        _, _, body = recv_response(s)
    assert b"Authorization: Bearer mine" in body
    assert env.tokens.calls == 0


def test_grant_failure_is_502_and_nothing_reaches_upstream(make_env: Any) -> None:
    env = make_env(tokens=FakeTokens(error=GrantError("token_endpoint", "issuer said\r\nno")))
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/headers"))
        status, hdrs, body = recv_response(s)
    assert status == 502
    assert hdrs["x-openshell-proxy-error"] == "token_grant_failed"
    doc = json.loads(body)
    assert doc["error"] == "token_grant_failed" and "\r" not in doc["detail"]
    assert env.upstream.connections == 0 and env.upstream.received == b""
    denied = [e for e in audit_events(env) if "issuer said" in e.get("status_detail", "")]
    assert denied and denied[0]["severity_id"] == 3 and denied[0]["action_id"] == 2


def test_malformed_token_fails_closed(make_env: Any) -> None:
    env = make_env(tokens=FakeTokens(token="abc\r\nX-Evil: 1"))
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/headers"))
        status, hdrs, _ = recv_response(s)
    assert status == 502 and hdrs["x-openshell-proxy-error"] == "token_grant_failed"
    assert env.upstream.received == b""


def test_undeclared_host_denied_and_upstream_sees_nothing(make_env: Any) -> None:
    env = make_env()
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/headers", host="localhost"))
        status, hdrs, body = recv_response(s)
    assert status == 403
    assert json.loads(body)["error"] == "policy_denied"
    assert hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert env.upstream.connections == 0


def test_loopback_without_allowed_ips_is_ssrf_denied(make_env: Any) -> None:
    env = make_env(bind=False)
    env.policy.endpoints[0] = endpoint("127.0.0.1", env.upstream.port, allowed_ips=())
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/"))
        status, hdrs, _ = recv_response(s)
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "ssrf_denied"
    assert env.upstream.connections == 0


def test_control_plane_port_always_refused(make_env: Any) -> None:
    env = make_env(bind=False)
    env.policy.endpoints.append(endpoint("127.0.0.1", 6443))
    with env.connect() as s:
        s.sendall(get(6443, "/"))
        status, hdrs, _ = recv_response(s)
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "ssrf_denied"


def test_resolved_name_connects_to_checked_address(make_env: Any) -> None:
    calls: list[str] = []

    async def resolver(host: str, port: int) -> list[Any]:
        import ipaddress

        calls.append(host)
        return [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("127.0.0.1")]

    env = make_env(bind=False, resolver=resolver)
    env.policy.endpoints.append(endpoint("svc.test", env.upstream.port))
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/", host="svc.test"))
        status, _, body = recv_response(s)
    # 10.1.2.3 is outside allowed_ips (127/8) and skipped; the checked 127.0.0.1 is used.
    assert status == 200 and body == b"ok" and calls == ["svc.test"]


def test_read_only_access_enforced_and_audited(make_env: Any) -> None:
    env = make_env(bind=False)
    port = env.upstream.port
    env.policy.endpoints[0] = endpoint("127.0.0.1", port, access="read-only")
    with env.connect() as s:
        s.sendall(get(port, "/upload", method="POST", extra="Content-Length: 3\r\n") + b"abc")
        status, hdrs, _ = recv_response(s)
        assert status == 403 and hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert env.upstream.connections == 0
    env.policy.endpoints[0] = endpoint("127.0.0.1", port, access="read-only", enforcement="audit")
    with env.connect() as s:
        s.sendall(get(port, "/upload", method="POST", extra="Content-Length: 3\r\n") + b"abc")
        status, _, body = recv_response(s)
    assert status == 200 and body == b"3"
    violations = [e for e in audit_events(env) if "enforcement: audit" in e["message"]]
    # Let through, but a policy violation: Allowed with severity Medium (not Informational).
    assert len(violations) == 1
    assert violations[0]["action_id"] == 1 and violations[0]["severity_id"] == 3


def test_keep_alive_and_pipelining_reuse_connections(make_env: Any) -> None:
    env = make_env()
    port = env.upstream.port
    with env.connect() as s:
        for _ in range(5):
            s.sendall(get(port, "/"))
            assert recv_response(s)[2] == b"ok"
        s.sendall(get(port, "/") * 3 + get(port, "/headers"))
        for _ in range(3):
            assert recv_response(s)[2] == b"ok"
        assert recv_response(s)[0] == 200
    assert env.upstream.connections == 1
    assert env.proxy.counters.upstream_reused == 8
    assert env.proxy.counters.connections == 1


def test_head_204_304_and_chunked_framing(make_env: Any) -> None:
    env = make_env(bind=False)
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(get(port, "/", method="HEAD"))
        status, hdrs, _ = recv_response(s, head_only=True)
        assert status == 200 and hdrs["content-length"] == "2"
        for code in (204, 304):
            s.sendall(get(port, f"/nobody/{code}"))
            assert recv_response(s)[0] == code
        s.sendall(get(port, "/chunked/5000"))
        status, hdrs, body = recv_response(s)
        assert hdrs["transfer-encoding"] == "chunked" and body == b"y" * 5000
        s.sendall(
            get(port, "/upload", method="POST", extra="Transfer-Encoding: chunked\r\n")
            + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        assert recv_response(s)[2] == b"5"
        s.sendall(get(port, "/"))  # still in sync
        assert recv_response(s)[2] == b"ok"
    assert env.upstream.connections == 1


def test_http10_request_closes(make_env: Any) -> None:
    env = make_env(bind=False)
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/", version="HTTP/1.0"))
        status, hdrs, body = recv_response(s)
        assert status == 200 and body == b"ok" and hdrs["connection"] == "close"
        assert closed(s)


def test_upstream_down_is_502(make_env: Any) -> None:
    env = make_env(bind=False)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()[1]
    probe.close()
    env.policy.endpoints.append(endpoint("127.0.0.1", dead))
    with env.connect() as s:
        s.sendall(get(dead, "/"))
        status, hdrs, _ = recv_response(s)
    assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"


def test_close_is_graceful(make_env: Any) -> None:
    env = make_env(bind=False, limits=Limits(close_grace=1.0))
    with env.connect() as s:
        s.sendall(get(env.upstream.port, "/"))
        assert recv_response(s)[2] == b"ok"
        env.call(env.proxy.close())
        assert closed(s)


def test_loopback_allowed_ips_constant() -> None:
    assert str(LOOPBACK[0]) == "127.0.0.0/8"
