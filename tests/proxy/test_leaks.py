"""What the agent may learn from a refusal (issue 12 items 3 and 11): nothing the audit
log alone should hold -- the resolved address of a refused name, the issuer's own words."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from supervisor.grants.errors import GrantError
from tests.proxy.harness import FakeTokens, endpoint, recv_response


def _audit(env: Any) -> list[dict[str, Any]]:
    assert env.audit_path is not None
    env.audit.close()  # flush
    with open(env.audit_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _resolving_to(address: str) -> Any:
    async def resolver(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address(address)]

    return resolver


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.9.8.7", ()),  # private, no allowed_ips
        ("100.64.3.9", ()),  # CGNAT
        ("8.8.4.4", (ipaddress.ip_network("1.1.1.0/24"),)),  # outside allowed_ips
        ("169.254.169.254", ()),  # metadata
    ],
)
@pytest.mark.parametrize("connect", [False, True])
def test_ssrf_denial_does_not_tell_the_agent_the_address(
    make_env: Any, address: str, allowed: tuple[Any, ...], connect: bool
) -> None:
    """A name under a wildcard host resolved by the proxy: the agent must not learn where
    it points (a DNS oracle); the audit log records it for the operator."""
    env = make_env(bind=False, resolver=_resolving_to(address))
    env.policy.endpoints.append(endpoint("db.internal.test", 443, allowed_ips=allowed))
    with env.connect() as s:
        if connect:
            s.sendall(b"CONNECT db.internal.test:443 HTTP/1.1\r\nHost: db.internal.test:443\r\n\r\n")
        else:
            s.sendall(
                b"GET http://db.internal.test:443/ HTTP/1.1\r\nHost: db.internal.test:443\r\n\r\n"
            )
        status, hdrs, body = recv_response(s)
    assert status == 403 and hdrs["x-openshell-proxy-error"] == "ssrf_denied"
    assert address.encode() not in body, body
    detail = json.loads(body)["detail"]
    assert "db.internal.test" in detail
    events = [e for e in _audit(env) if e.get("action_id") == 2]
    assert events and address in events[-1]["status_detail"]


def test_grant_failure_shows_step_and_status_but_not_the_issuer_text(make_env: Any) -> None:
    error = GrantError(
        "token_endpoint",
        "token endpoint answered 401: invalid_client",
        retryable=False,
        audit_detail="token endpoint answered 401: invalid_client (user alice not in realm)",
    )
    env = make_env(tokens=FakeTokens(error=error))
    a = f"127.0.0.1:{env.upstream.port}"
    with env.connect() as s:
        s.sendall(f"GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
        status, hdrs, body = recv_response(s)
    assert status == 502 and hdrs["x-openshell-proxy-error"] == "token_grant_failed"
    detail = json.loads(body)["detail"]
    assert detail == "token_endpoint: token endpoint answered 401: invalid_client"
    events = [e for e in _audit(env) if e.get("action_id") == 2]
    assert "user alice not in realm" in events[-1]["status_detail"]
    assert events[-1]["status_detail"].startswith("token_endpoint: ")
