"""L7 decisions on loaded profiles: plan → (body) → verdict, as the proxy takes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.profiles.canonical import CanonicalError
from supervisor.profiles.l7 import judge_request, plan_request, websocket_text_denial
from supervisor.profiles.loader import load_profiles
from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.rules import Verdict

# In the shape of OpenShell's github.yaml and pypi.yaml (written here).
FORGE = """\
id: forge
endpoints:
  - host: api.forge.test
    port: 443
    protocol: rest
    access: read-only
  - host: api.forge.test
    port: 443
    path: /graphql
    protocol: graphql
    access: read-only
  - host: forge.test
    port: 443
    protocol: rest
    rules:
      - allow: { method: GET, path: "**" }
      - allow: { method: HEAD, path: "**" }
      - allow: { method: OPTIONS, path: "**" }
      - allow: { method: POST, path: "/**/git-upload-pack" }
"""
MIRROR = """\
id: mirror
endpoints:
  - host: forge.test
    port: 443
  - host: api.forge.test
    port: 443
  - host: files.mirror.test
    port: 443
"""
MORE = """\
id: more
endpoints:
  - host: admin.test
    port: 443
    protocol: rest
    access: full
    deny_rules:
      - { method: DELETE, path: "/admin/**" }
      - { method: "*", path: "/secrets/**", query: { reveal: "true" } }
  - host: audit.test
    port: 443
    protocol: rest
    access: read-only
    enforcement: audit
  - host: registry.test
    port: 443
    protocol: rest
    access: read-only
    allow_encoded_slash: true
  - host: strict-registry.test
    port: 443
    protocol: rest
    access: read-only
  - host: tags.test
    port: 443
    protocol: rest
    rules:
      - allow: { method: GET, path: "/tags", query: { tag: { any: ["v1.*", "v2.*"] } } }
  - host: gql.test
    port: 443
    path: /graphql
    protocol: graphql
    rules:
      - allow: { operation_type: query, fields: [viewer, repository] }
      - allow: { operation_type: mutation, operation_name: "Issue*", fields: [createIssue] }
    deny_rules:
      - { operation_type: "*", fields: [deleteRepository] }
    persisted_queries: allow_registered
    graphql_persisted_queries:
      h1: { operation_type: query, fields: [viewer] }
      h2: { operation_type: mutation, fields: [deleteRepository] }
  - host: mcp.test
    port: 443
    path: /mcp
    protocol: mcp
    rules:
      - allow: { method: initialize }
      - allow: { method: notifications/initialized }
      - allow: { method: tools/call, tool: search }
      - allow: { method: tools/call, tool: { any: [create_issue, list_issues] } }
    deny_rules:
      - { method: tools/call, tool: create_issue }
  - host: rpc.test
    port: 443
    path: /rpc
    protocol: json-rpc
    rules:
      - allow: { method: "*" }
    deny_rules:
      - { method: reports.delete }
"""


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> PolicyTable:
    d = tmp_path_factory.mktemp("l7")
    paths = []
    for name, text in (("forge", FORGE), ("mirror", MIRROR), ("more", MORE)):
        (d / f"{name}.yaml").write_text(text)
        paths.append(str(d / f"{name}.yaml"))
    return load_profiles(paths).table


def verdict(table: PolicyTable, method: str, host: str, target: str, body: bytes | None = None,
            **kw: bool) -> Verdict:
    path, _, query = target.partition("?")
    plan = plan_request(table, host, 443, method, path, query,
                        accept_event_stream=kw.pop("sse", False), has_body=body is not None)
    return judge_request(plan, method, body, **kw)


def ok(table: PolicyTable, *args: object, **kw: bool) -> bool:
    return verdict(table, *args, **kw).allowed  # type: ignore[arg-type]


def test_git_smart_http_rules_beside_an_l4_entry(table: PolicyTable) -> None:
    assert ok(table, "GET", "forge.test", "/o/r.git/info/refs?service=git-upload-pack")
    assert ok(table, "POST", "forge.test", "/o/r.git/git-upload-pack")
    assert ok(table, "HEAD", "forge.test", "/o/r.git/HEAD")
    v = verdict(table, "POST", "forge.test", "/o/r.git/git-receive-pack")
    assert not v.allowed and v.reason == "POST /o/r.git/git-receive-pack not permitted by policy"
    # The L4 entry of another profile on the same host:port never downgrades the rules.
    assert table.route("forge.test", 443, "/x").inspected
    assert not ok(table, "DELETE", "forge.test", "/o/r")


def test_l4_only_host_is_not_judged(table: PolicyTable) -> None:
    plan = plan_request(table, "files.mirror.test", 443, "DELETE", "/x", "")
    assert not plan.route.inspected and judge_request(plan, "DELETE").allowed


def test_read_only_preset_and_graphql_route(table: PolicyTable) -> None:
    assert ok(table, "GET", "api.forge.test", "/repos/o/r")
    assert not ok(table, "POST", "api.forge.test", "/repos/o/r/issues")
    q = json.dumps({"query": "query { viewer { login } }"}).encode()
    m = json.dumps({"query": "mutation { createIssue(input: {}) { id } }"}).encode()
    assert ok(table, "POST", "api.forge.test", "/graphql", q)
    v = verdict(table, "POST", "api.forge.test", "/graphql", m)
    assert not v.allowed and "GraphQL" in v.reason
    # GET carries the operation in the query string: a mutation stays refused even though
    # the REST read-only endpoint allows GET (the GraphQL endpoint is authoritative).
    assert ok(table, "GET", "api.forge.test", "/graphql?query=%7Bviewer%7Bid%7D%7D")
    assert not ok(table, "GET", "api.forge.test", "/graphql?query=mutation%7Bx%7D")


def test_graphql_rules_fields_names_deny_and_persisted(table: PolicyTable) -> None:
    def gql(doc: dict[str, object]) -> bool:
        return ok(table, "POST", "gql.test", "/graphql", json.dumps(doc).encode())

    assert gql({"query": "{ viewer { id } repository { id } }"})
    assert not gql({"query": "{ viewer { id } organization { id } }"})  # every field must match
    assert gql({"query": "mutation IssueNew { createIssue { id } }"})
    assert not gql({"query": "mutation Other { createIssue { id } }"})
    assert not gql({"query": "query { viewer { id } deleteRepository { id } }"})
    assert gql({"extensions": {"persistedQuery": {"sha256Hash": "h1"}}})
    assert not gql({"extensions": {"persistedQuery": {"sha256Hash": "h2"}}})  # deny rule
    v = verdict(table, "POST", "gql.test", "/graphql",
                json.dumps({"extensions": {"persistedQuery": {"sha256Hash": "zz"}}}).encode())
    assert not v.allowed and "not registered" in v.reason
    assert not gql({"query": "{ viewer "})  # parse error: fail closed
    assert not ok(table, "POST", "gql.test", "/graphql", b"not json")
    assert not gql([{"query": "{ viewer { id } }"}, {"query": "mutation { createIssue }"}])  # type: ignore[arg-type]


def test_mcp_tools(table: PolicyTable) -> None:
    def call(method: str, params: dict[str, object] | None = None, rid: int | None = 1) -> bool:
        msg: dict[str, object] = {"jsonrpc": "2.0", "method": method}
        if rid is not None:
            msg["id"] = rid
        if params is not None:
            msg["params"] = params
        return ok(table, "POST", "mcp.test", "/mcp", json.dumps(msg).encode())

    assert call("initialize", {})
    assert call("notifications/initialized", rid=None)
    assert call("tools/call", {"name": "search", "arguments": {}})
    assert call("tools/call", {"name": "list_issues"})
    assert not call("tools/call", {"name": "create_issue"})  # deny beats allow
    assert not call("tools/call", {"name": "execute_code"})
    assert not call("tools/list")
    assert not call("tools/call", {"name": "bad name!"})  # strict tool names
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search"}},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "rm"}}]
    assert not ok(table, "POST", "mcp.test", "/mcp", json.dumps(batch).encode())
    assert ok(table, "GET", "mcp.test", "/mcp", sse=True)  # the receive stream
    assert not ok(table, "GET", "mcp.test", "/mcp")


def test_jsonrpc(table: PolicyTable) -> None:
    def call(method: str) -> bool:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        return ok(table, "POST", "rpc.test", "/rpc", body)

    assert call("reports.list") and not call("reports.delete")
    resp = json.dumps({"jsonrpc": "2.0", "id": 1, "result": 3}).encode()
    assert not ok(table, "POST", "rpc.test", "/rpc", resp)
    assert not ok(table, "POST", "rpc.test", "/rpc", b'{"jsonrpc": "1.0", "method": "x"}')


def test_deny_beats_allow_and_cannot_be_dodged(table: PolicyTable) -> None:
    assert ok(table, "DELETE", "admin.test", "/other")
    for target in ("/admin/users", "//admin/users", "/admin//users", "/admin;x/users",
                   "/x/../admin/users", "/%61dmin/users", "/Admin/users", "/ADMIN;jsessionid=1/u"):
        assert not ok(table, "DELETE", "admin.test", target), target
    assert not ok(table, "GET", "admin.test", "/secrets/a?reveal=true")
    assert not ok(table, "GET", "admin.test", "/secrets/a?reveal=no&reveal=true")
    assert ok(table, "GET", "admin.test", "/secrets/a?reveal=no")
    assert ok(table, "GET", "admin.test", "/secrets/a")


def test_query_matchers(table: PolicyTable) -> None:
    assert ok(table, "GET", "tags.test", "/tags?tag=v1.2")
    assert ok(table, "GET", "tags.test", "/tags?tag=v2.0&tag=v1.9")
    assert not ok(table, "GET", "tags.test", "/tags?tag=v1.2&tag=v3")  # every value
    assert not ok(table, "GET", "tags.test", "/tags")  # the parameter must be there
    assert not ok(table, "GET", "tags.test", "/tags?tag=v1.2.3")  # '.' separates, as OpenShell


def test_encoded_slash(table: PolicyTable) -> None:
    plan = plan_request(table, "registry.test", 443, "GET", "/@types%2fnode", "")
    assert plan.path == "/@types%2Fnode" and judge_request(plan, "GET").allowed
    with pytest.raises(CanonicalError):
        plan_request(table, "strict-registry.test", 443, "GET", "/@types%2fnode", "")
    with pytest.raises(CanonicalError):
        plan_request(table, "registry.test", 443, "GET", "/a/..%2fsecret", "")


def test_audit_mode_reports_what_it_would_deny(table: PolicyTable) -> None:
    plan = plan_request(table, "audit.test", 443, "DELETE", "/x", "")
    assert plan.audit_only and not judge_request(plan, "DELETE").allowed


def test_every_construct_together_with_real_shapes(tmp_path: Path) -> None:
    # Bindings survive next to rules: a token-grant profile on another host still binds.
    (tmp_path / "g.yaml").write_text(
        "id: grant\ncredentials:\n  - name: c\n    token_grant: {token_endpoint: "
        "'https://auth.test/token'}\nendpoints:\n  - {host: api.grant.test, port: 443}\n")
    (tmp_path / "f.yaml").write_text(FORGE + MORE.split("endpoints:\n", 1)[1])
    ps = load_profiles([str(tmp_path / "g.yaml"), str(tmp_path / "f.yaml")])
    assert [b.id for b in ps.bindings] == ["grant/c@api.grant.test:443"]
    t = ps.table
    assert ok(t, "GET", "api.grant.test", "/x") and not ok(t, "POST", "api.grant.test", "/x")
    assert not ok(t, "POST", "forge.test", "/o/r/git-receive-pack")


WS = """\
id: ws
endpoints:
  - {host: rw.ws.test, port: 443, protocol: websocket, access: read-write}
  - {host: ro.ws.test, port: 443, protocol: websocket, access: read-only}
  - host: deny.ws.test
    port: 443
    protocol: websocket
    access: full
    deny_rules:
      - {method: WEBSOCKET_TEXT, path: "/admin/**"}
"""


def test_websocket_access_expansions(tmp_path: Path) -> None:
    (tmp_path / "ws.yaml").write_text(WS)
    t = load_profiles([str(tmp_path / "ws.yaml")]).table
    assert ok(t, "GET", "rw.ws.test", "/v1/realtime", upgrade=True)
    assert not ok(t, "GET", "rw.ws.test", "/v1/realtime")  # not an upgrade
    assert not ok(t, "POST", "rw.ws.test", "/v1/realtime", upgrade=True)
    # read-only = the handshake only: text messages are denied (the relay closes the
    # connection at the first one); read-write and full allow them, deny rules narrow.
    def text(host: str, path: str) -> str | None:
        return websocket_text_denial(plan_request(t, host, 443, "GET", path, ""))

    assert ok(t, "GET", "ro.ws.test", "/v1/realtime", upgrade=True)
    assert text("ro.ws.test", "/v1/realtime") is not None
    assert text("rw.ws.test", "/v1/realtime") is None
    assert ok(t, "GET", "deny.ws.test", "/admin/x", upgrade=True)
    assert text("deny.ws.test", "/v1/x") is None
    assert text("deny.ws.test", "/admin/x") is not None


def test_graphql_over_websocket_messages_fail_closed(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(
        "id: gws\nendpoints:\n  - host: gql.ws.test\n    port: 443\n    protocol: websocket\n"
        "    rules:\n      - allow: {method: GET, path: /graphql}\n"
        "      - allow: {operation_type: subscription, fields: [messageAdded]}\n")
    t = load_profiles([str(tmp_path / "g.yaml")]).table
    assert ok(t, "GET", "gql.ws.test", "/graphql", upgrade=True)
    assert websocket_text_denial(plan_request(t, "gql.ws.test", 443, "GET", "/graphql", ""))
