"""L7 rules through the running proxy (ARCHITECTURE.md 4.2), with profiles loaded from YAML:
deny beating allow, path canonicalization (issue 12 item 4), encoded slashes, GraphQL,
MCP, and audit mode. Plain HTTP to a loopback upstream; every exchange is real."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from supervisor.profiles.loader import load_profiles
from tests.proxy.harness import Env, recv_response

PROFILE = """\
id: l7
endpoints:
  - host: 127.0.0.1
    port: {port}
    protocol: rest
    allowed_ips: [127.0.0.0/8]
    rules:
      - allow: {{ method: "*", path: "/other" }}
      - allow: {{ method: "*", path: "/admin/**" }}
      - allow: {{ method: "*", path: "/secrets/**" }}
    deny_rules:
      - {{ method: DELETE, path: "/admin/**" }}
      - {{ method: "*", path: "/secrets/**", query: {{ reveal: "true" }} }}
  - host: 127.0.0.1
    port: {port}
    path: /ro/**
    protocol: rest
    access: read-only
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /npm/**
    protocol: rest
    access: read-only
    allow_encoded_slash: true
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /graphql
    protocol: graphql
    access: read-only
    graphql_max_body_bytes: 2048
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /mcp
    protocol: mcp
    allowed_ips: [127.0.0.0/8]
    rules:
      - allow: {{ method: initialize }}
      - allow: {{ method: tools/call, tool: {{ any: [search, list_issues] }} }}
    deny_rules:
      - {{ method: tools/call, tool: list_issues }}
  - host: 127.0.0.1
    port: {port}
    path: /audited/**
    protocol: rest
    access: read-only
    enforcement: audit
    allowed_ips: [127.0.0.0/8]
"""

# The configuration of issue 12 item 4's '..;' case: a writable subtree beside a read-only
# host; a servlet container resolves '/public/..;/admin' to '/admin'.
SUBTREE = """\
id: subtree
endpoints:
  - host: 127.0.0.1
    port: {port}
    protocol: rest
    access: read-only
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /public/**
    protocol: rest
    access: full
    allowed_ips: [127.0.0.0/8]
"""


@contextmanager
def l7_env(tmp_path: Path, text: str) -> Iterator[Env]:
    """A running proxy whose policy is the profile `text` ('{port}' = the upstream's),
    closed on the way out."""
    env = Env(None, None, str(tmp_path / "audit.jsonl"))  # type: ignore[arg-type]
    try:
        p = tmp_path / "profile.yaml"
        p.write_text(text.format(port=env.upstream.port))
        env.policy = load_profiles([str(p)]).table  # type: ignore[assignment]
        yield env
    finally:
        env.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with l7_env(tmp_path, PROFILE) as e:
        yield e


def send(env: Env, method: str, target: str, body: bytes = b"", *,
         headers: str = "", chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
    port = env.upstream.port
    s = env.connect()
    try:
        if chunked:
            frame = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
            s.sendall(f"{method} http://127.0.0.1:{port}{target} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n{headers}"
                      "Connection: close\r\n\r\n".encode() + frame)
        else:
            s.sendall(f"{method} http://127.0.0.1:{port}{target} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n{headers}"
                      "Connection: close\r\n\r\n".encode() + body)
        return recv_response(s, head_only=method == "HEAD")
    finally:
        s.close()


def forwarded(env: Env) -> list[str]:
    """Request lines the upstream received, in order."""
    return [line for line in env.upstream.received.decode("latin-1").split("\r\n")
            if line.endswith(" HTTP/1.1") and not line.startswith("Host")]


def audit_events(env: Env) -> list[dict[str, Any]]:
    env.audit.close()
    return [json.loads(x) for x in Path(env.audit_path or "").read_text().splitlines() if x]


def test_deny_beats_allow_and_is_not_dodged(env: Env) -> None:
    assert send(env, "DELETE", "/other")[0] == 200
    for target in ("/admin/users", "//admin/users", "/admin//users", "/admin;x/users",
                   "/%61dmin/users", "/ADMIN/users", "/x/..;/admin/users"):
        status, hdrs, body = send(env, "DELETE", target)
        assert status == 403, target
        assert json.loads(body)["error"] == "policy_denied", target
        assert hdrs["x-openshell-proxy-error"] == "policy_denied"
    assert send(env, "GET", "/admin/users")[0] == 200
    assert send(env, "GET", "/secrets/a?reveal=true")[0] == 403
    assert send(env, "GET", "/secrets/a?reveal=false")[0] == 200
    assert forwarded(env) == ["DELETE /other HTTP/1.1", "GET /admin/users HTTP/1.1",
                              "GET /secrets/a?reveal=false HTTP/1.1"]


def test_the_canonical_path_is_what_the_upstream_gets(env: Env) -> None:
    assert send(env, "GET", "//ro//a;jsessionid=1/b//c?q=%2F..")[0] == 200
    assert forwarded(env) == ["GET /ro/a/b/c?q=%2F.. HTTP/1.1"]  # query kept verbatim
    assert send(env, "GET", "/a/..;/..;/etc")[0] == 400  # above the root


def test_path_params_cannot_escape_a_subtree(tmp_path: Path) -> None:
    # Before canonicalization '/public/..;/admin/users' matched '/public/**' (access full)
    # and was forwarded as is; a servlet container then served '/admin/users'.
    with l7_env(tmp_path, SUBTREE) as env:
        assert send(env, "DELETE", "/public/a")[0] == 200
        assert send(env, "DELETE", "/public/..;/admin/users")[0] == 403
        assert send(env, "DELETE", "/public;x/..;/admin/users")[0] == 403
        assert send(env, "GET", "/public/..;/admin/users")[0] == 200
        assert forwarded(env) == ["DELETE /public/a HTTP/1.1", "GET /admin/users HTTP/1.1"]


def test_encoded_slash_only_where_allowed(env: Env) -> None:
    assert send(env, "GET", "/npm/@types%2fnode")[0] == 200
    assert forwarded(env) == ["GET /npm/@types%2Fnode HTTP/1.1"]
    status, _, body = send(env, "GET", "/ro/@types%2fnode")
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    assert send(env, "GET", "/npm/..%2f..%2fadmin")[0] == 400  # no dot segment behind it
    assert forwarded(env) == ["GET /npm/@types%2Fnode HTTP/1.1"]


def test_graphql_read_only(env: Env) -> None:
    query = json.dumps({"query": "query Q { viewer { login } }"}).encode()
    mutation = json.dumps({"query": "mutation { deleteRepository(id: 1) { id } }"}).encode()
    ct = "Content-Type: application/json\r\n"
    assert send(env, "POST", "/graphql", query, headers=ct)[0] == 200
    status, _, body = send(env, "POST", "/graphql", mutation, headers=ct)
    assert status == 403 and "GraphQL" in json.loads(body)["detail"]
    assert send(env, "POST", "/graphql", mutation, headers=ct, chunked=True)[0] == 403
    assert send(env, "POST", "/graphql", query, headers=ct, chunked=True)[0] == 200
    big = json.dumps({"query": "{ viewer { login } }", "pad": "x" * 4096}).encode()
    assert send(env, "POST", "/graphql", big, headers=ct)[0] == 403  # over the limit
    assert send(env, "GET", "/graphql?query=%7Bviewer%7Bid%7D%7D")[0] == 200
    assert send(env, "GET", "/graphql?query=mutation%7Bx%7D")[0] == 403
    # The judged body is forwarded, re-framed with Content-Length (chunked came in).
    got = env.upstream.received
    assert got.count(b"POST /graphql HTTP/1.1") == 2
    assert b"Transfer-Encoding" not in got and b"mutation" not in got


def test_mcp_denied_tool(env: Env) -> None:
    def call(name: str) -> int:
        msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": name, "arguments": {}}}
        return send(env, "POST", "/mcp", json.dumps(msg).encode(),
                    headers="Content-Type: application/json\r\n")[0]

    assert call("search") == 200
    assert call("list_issues") == 403  # deny beats allow
    assert call("execute_code") == 403  # not allowed
    init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}})
    assert send(env, "POST", "/mcp", init.encode())[0] == 200
    assert forwarded(env).count("POST /mcp HTTP/1.1") == 2


def test_audit_mode_forwards_and_logs(env: Env) -> None:
    status, _, _ = send(env, "DELETE", "/audited/x")
    assert status == 200 and forwarded(env) == ["DELETE /audited/x HTTP/1.1"]
    events = audit_events(env)
    (ev,) = [e for e in events if "violated" in json.dumps(e)]
    assert "DELETE /audited/x not permitted" in json.dumps(ev)


def test_plain_http_undeclared_path_and_host(env: Env) -> None:
    # A path no rule of the declared host allows (the host-wide endpoint has explicit rules).
    assert send(env, "GET", "/undeclared")[0] == 403
    s = env.connect()
    try:
        s.sendall(b"GET http://127.0.0.9:1/x HTTP/1.1\r\nHost: 127.0.0.9:1\r\n\r\n")
        assert recv_response(s)[0] == 403
    finally:
        s.close()
    assert forwarded(env) == []


def test_a_placeholder_in_a_denied_path_never_reaches_the_log(env: Env) -> None:
    status, _, body = send(env, "DELETE", "/admin/openshell:resolve:env:GITHUB_TOKEN")
    assert status == 403 and b"[CREDENTIAL]" in body
    env.audit.close()  # flushes the writer
    log = Path(env.audit_path or "").read_text()
    assert "openshell:resolve" not in log and "GITHUB_TOKEN" not in log
    assert "[CREDENTIAL]" in log
