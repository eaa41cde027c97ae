"""The whole OpenShell provider-profile schema (ARCHITECTURE.md 4.1): every field and construct
that OpenShell's built-in profiles use, in profiles written here, and the load-time rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor.profiles.model import McpOptions, ValueMatcher
from tests.profiles.helpers import errors, fields, load, warnings

# One profile per construct family, in the shapes OpenShell's providers/ use.
STATIC = """\
id: static-llm
display_name: Static LLM
description: |
  A static API key, substituted by placeholder.

  Second paragraph of a block-scalar description.
category: inference
inference_capable: true
resource_version: 3
annotations: {team: ml, tier: gold}
credentials:
  - name: api_key
    description: the key
    env_vars: [LLM_API_KEY, LLM_KEY]
    required: true
    auth_style: header
    header_name: x-api-key
  - name: query_key
    env_vars: [LLM_QUERY_KEY]
    auth_style: query
    query_param: key
  - name: path_key
    env_vars: [LLM_PATH_KEY]
    auth_style: path
    path_template: /bot{credential}/send
  - name: basic
    env_vars: [LLM_BASIC]
    auth_style: basic
discovery:
  credentials: [api_key]
endpoints:
  - host: api.llm.example.com
    port: 443
    protocol: rest
    access: read-write
    enforcement: enforce
    request_body_credential_rewrite: true
    websocket_credential_rewrite: true
  - host: telemetry.llm.example.com
    port: 443
    allow_uninspected_credentials: true
binaries:
  - /usr/bin/llm
  - {path: /usr/local/bin/llm, harness: true}
"""

REFRESHED = """\
id: cloud-sts
display_name: Cloud STS
description: gateway-minted temporary credentials, signed requests
category: other
credentials:
  - name: access_key_id
    env_vars: [AWS_ACCESS_KEY_ID]
    required: true
    refresh:
      strategy: aws_sts_assume_role
      refresh_before_seconds: 300
      max_lifetime_seconds: 3600
      additional_outputs:
        - {output: secret_access_key, credential: secret_access_key}
      material:
        - {name: role_arn, description: role to assume, required: true, secret: false}
        - {name: aws_secret_access_key, secret: true}
  - name: secret_access_key
    env_vars: [AWS_SECRET_ACCESS_KEY]
    required: true
endpoints:
  - host: "*.store.cloud.example.com"
    port: 443
    protocol: rest
    tls: terminate
    access: read-write
    enforcement: enforce
    credential_signing: sigv4
    signing_service: s3
    signing_region: us-east-1
  - host: "store.*.cloud.example.com"
    port: 443
    protocol: rest
    access: read-write
    credential_signing: "sigv4:no_body"
    signing_service: s3
binaries: [/usr/bin/aws]
"""

RULES = """\
id: forge
display_name: Forge
description: REST API read-only, GraphQL read-only, git transport by rules
category: source_control
credentials:
  - name: api_token
    env_vars: [FORGE_TOKEN]
    auth_style: bearer
    header_name: authorization
discovery:
  credentials: [api_token]
endpoints:
  - host: api.forge.example.com
    port: 443
    protocol: rest
    access: read-only
    enforcement: enforce
  - host: api.forge.example.com
    port: 443
    path: /graphql
    protocol: graphql
    access: read-only
    enforcement: enforce
    graphql_max_body_bytes: 32768
    persisted_queries: allow_registered
    graphql_persisted_queries:
      abc123: {operation_type: query, operation_name: Viewer, fields: [viewer]}
  - host: forge.example.com
    port: 443
    protocol: rest
    enforcement: enforce
    rules:
      - allow: { method: GET, path: "**" }
      - allow: { method: POST, path: "/**/git-upload-pack", query: {service: "git-*"} }
      - allow: { method: GET, path: "/tags", query: {tag: {any: ["v1.*", "v2.*"]}} }
    deny_rules:
      - { method: "*", path: "/admin/**" }
  - host: registry.forge.example.com
    port: 443
    protocol: rest
    access: read-only
    allow_encoded_slash: true
  - host: mcp.forge.example.com
    port: 443
    path: /mcp
    protocol: mcp
    mcp: {max_body_bytes: 131072, strict_tool_names: true}
    rules:
      - allow: {method: initialize}
      - allow: {method: tools/call, tool: search}
      - allow: {method: tools/call, params: {name: {any: [create_issue, list_issues]}}}
    deny_rules:
      - {method: tools/call, tool: delete_repo}
  - host: rpc.forge.example.com
    port: 443
    path: /rpc
    protocol: json-rpc
    json_rpc: {max_body_bytes: 4096}
    rules:
      - allow: {method: "*"}
    deny_rules:
      - {method: reports.delete}
  - host: ws.forge.example.com
    port: 443
    protocol: websocket
    access: read-write
    deny_rules:
      - {method: WEBSOCKET_TEXT, path: "/admin/**"}
binaries: [/usr/bin/git]
"""

L4 = """\
id: mirror
display_name: Mirror
description: L4 tunnels, one overlapping another profile's inspected host
category: data
endpoints:
  - host: forge.example.com
    port: 443
  - host: files.mirror.example.com
    port: 443
    protocol: tcp
"""


def _write_all(tmp_path: Path, *texts: str) -> Any:
    from supervisor.profiles.loader import load_profiles

    paths = []
    for i, text in enumerate(texts):
        p = tmp_path / f"f{i}.yaml"
        p.write_text(text)
        paths.append(str(p))
    return load_profiles(paths)


def test_every_construct_loads_alone_and_together(tmp_path: Path) -> None:
    for text in (STATIC, REFRESHED, RULES, L4):
        _write_all(tmp_path, text)
    ps = _write_all(tmp_path, STATIC, REFRESHED, RULES, L4)
    assert [p.id for p in ps.profiles] == ["cloud-sts", "forge", "mirror", "static-llm"]
    assert ps.bindings == ()  # static credentials bind no token grant


def test_static_credentials_and_gateway_metadata_are_kept(tmp_path: Path) -> None:
    (p,) = _write_all(tmp_path, STATIC).profiles
    assert p.description.startswith("A static API key") and "\n\nSecond" in p.description
    assert (p.inference_capable, p.resource_version) == (True, 3)
    assert p.annotations == (("team", "ml"), ("tier", "gold"))
    assert p.discovery_credentials == ("api_key",)
    assert p.binaries == ("/usr/bin/llm", "/usr/local/bin/llm")
    key, query, path_cred, basic = p.credentials
    assert key.is_static and key.env_vars == ("LLM_API_KEY", "LLM_KEY") and key.required
    assert (key.auth_style, key.header_name) == ("header", "x-api-key")
    assert (query.auth_style, query.query_param) == ("query", "key")
    assert (path_cred.auth_style, path_cred.path_template) == ("path", "/bot{credential}/send")
    assert basic.auth_style == "basic"
    rest, telemetry = p.endpoints
    assert rest.request_body_credential_rewrite and rest.websocket_credential_rewrite
    assert rest.inspected and rest.protocol == "rest" and rest.access == "read-write"
    assert telemetry.allow_uninspected_credentials and telemetry.protocol is None
    assert not telemetry.inspected


def test_refresh_and_signing(tmp_path: Path) -> None:
    ps = _write_all(tmp_path, REFRESHED)
    (p,) = ps.profiles
    assert p.credentials[0].has_refresh and not p.credentials[1].has_refresh
    a, b = p.endpoints
    assert (a.credential_signing, a.signing_service, a.signing_region) == ("sigv4", "s3",
                                                                          "us-east-1")
    assert (b.credential_signing, b.signing_region) == ("sigv4:no_body", None)
    assert a.tls == "terminate"  # deprecated, automatic: still inspected
    assert a.inspected
    assert any("deprecated" in d.message for d in ps.diagnostics)


def test_rules_graphql_mcp_jsonrpc(tmp_path: Path) -> None:
    (p,) = _write_all(tmp_path, RULES).profiles
    api, gql, git, registry, mcp, rpc, ws = p.endpoints
    assert api.access == "read-only" and api.rules is None
    assert gql.protocol == "graphql" and gql.path == "/graphql"
    assert gql.graphql_max_body_bytes == 32768
    assert gql.persisted_queries == "allow_registered"
    ((key, op),) = gql.graphql_persisted_queries
    assert (key, op.operation_type, op.operation_name, op.fields) == (
        "abc123", "query", "Viewer", ("viewer",))
    assert git.access is None and git.rules is not None and len(git.rules) == 3
    assert git.rules[1].method == "POST" and git.rules[1].path == "/**/git-upload-pack"
    assert git.rules[1].query == (("service", ValueMatcher(("git-*",))),)
    assert git.rules[2].query == (("tag", ValueMatcher(("v1.*", "v2.*"))),)
    assert git.deny_rules[0].method == "*" and git.deny_rules[0].path == "/admin/**"
    assert registry.allow_encoded_slash
    assert mcp.mcp == McpOptions(strict_tool_names=True, max_body_bytes=131072)
    assert mcp.rules is not None
    assert mcp.rules[1].tool == ValueMatcher(("search",))
    assert mcp.rules[2].tool == ValueMatcher(("create_issue", "list_issues"))
    assert mcp.deny_rules[0].tool == ValueMatcher(("delete_repo",))
    assert rpc.json_rpc_max_body_bytes == 4096 and rpc.rules is not None
    assert ws.protocol == "websocket" and ws.deny_rules[0].method == "WEBSOCKET_TEXT"


def test_tcp_is_l4(tmp_path: Path) -> None:
    (p,) = _write_all(tmp_path, L4).profiles
    assert [e.protocol for e in p.endpoints] == [None, None]


def test_one_pass_reports_every_problem(tmp_path: Path) -> None:
    doc = {
        "id": "Bad_Id",
        "colour": "red",
        "inference_capable": "yes",
        "discovery": {"credentials": ["nope"]},
        "annotations": {"a": 1},
        "credentials": [
            {"name": "c", "env_vars": ["OK_VAR", "1BAD"], "auth_style": "query"},
            {"name": "d", "env_vars": ["D_VAR"], "refresh": {"strategy": "magic"}},
            {"name": "e", "env_vars": ["DUP"]},
            {"name": "f", "env_vars": ["DUP"]},
        ],
        "endpoints": [
            {"host": "a.example.com", "port": 443, "protocol": "rest", "weird": 1,
             "access": "read-only", "rules": [{"allow": {"method": "GET", "path": "**"}}]},
            {"host": "b.example.com", "port": 443, "protocol": "grpc"},
            {"host": "c.example.com", "port": 443, "protocol": "rest", "access": "full",
             "graphql_max_body_bytes": 0, "credential_signing": "sigv2"},
        ],
    }
    got = set(fields(errors(tmp_path, doc)))
    expected = {
        "id", "colour", "inference_capable", "discovery.credentials[0]", "annotations.a",
        "credentials[0].env_vars[1]", "credentials[0].query_param",
        "credentials[3].env_vars[0]", "credentials[1].refresh.strategy",
        "endpoints[0].weird", "endpoints[0].rules", "endpoints[1].protocol",
        "endpoints[2].graphql_max_body_bytes", "endpoints[2].credential_signing",
    }
    assert expected <= got, expected - got


@pytest.mark.parametrize("pid", ["github", "aws-s3", "a", "x1-y2-z3"])
def test_ids_accepted(pid: str, tmp_path: Path) -> None:
    load(tmp_path, {"id": pid, "endpoints": []})


@pytest.mark.parametrize("pid", ["GitHub", "a_b", "-a", "a-", "a--b", "a.b", "", "é"])
def test_ids_rejected(pid: str, tmp_path: Path) -> None:
    assert "id" in fields(errors(tmp_path, {"id": pid, "endpoints": []}))


@pytest.mark.parametrize(
    ("tls", "warned"),
    [(None, False), ("auto", False), ("none", False), ("skip", False),
     ("terminate", True), ("passthrough", True), ("Whatever", True)],
)
def test_tls_values(tls: str | None, warned: bool, tmp_path: Path) -> None:
    ep: dict[str, Any] = {"host": "a.example.com", "port": 8443, "protocol": "rest",
                          "access": "full"}
    if tls is not None:
        ep["tls"] = tls
    ps = load(tmp_path, {"id": "t", "endpoints": [ep]})
    assert any(d.field == "endpoints[0].tls" for d in ps.diagnostics) == warned
    assert ps.profiles[0].endpoints[0].inspected == (tls != "skip")


def _ep(**kw: Any) -> dict[str, Any]:
    return {"id": "t", "endpoints": [{"host": "a.example.com", "port": 443, **kw}]}


@pytest.mark.parametrize(
    ("endpoint", "field", "reason"),
    [
        ({"protocol": "rest", "access": "full", "rules": [{"allow": {"method": "GET",
                                                                     "path": "**"}}]},
         "endpoints[0].rules", "mutually exclusive"),
        ({"protocol": "rest", "rules": []}, "endpoints[0].rules", "cannot be empty"),
        ({"protocol": "rest", "access": "full", "deny_rules": []},
         "endpoints[0].deny_rules", "cannot be empty"),
        ({"protocol": "rest", "rules": [{}]}, "endpoints[0].rules", "deny all"),
        ({"protocol": "rest", "deny_rules": [{"method": "GET", "path": "**"}]},
         "endpoints[0].deny_rules", "base"),
        ({"deny_rules": [{"method": "GET", "path": "**"}], "access": "full"},
         "endpoints[0].deny_rules", "protocol"),
        ({"protocol": "rest"}, "endpoints[0].access", "requires access or rules"),
        ({"protocol": "json-rpc", "access": "full"}, "endpoints[0].access", "access"),
        ({"protocol": "mcp", "access": "full"}, "endpoints[0].access", "access"),
        ({"protocol": "mcp"}, "endpoints[0].rules", "requires rules"),
        ({"protocol": "json-rpc", "rules": [{"allow": {"method": "reports.*"}}]},
         "endpoints[0].rules[0].allow.method", "exact"),
        ({"protocol": "mcp", "rules": [{"allow": {"method": "initialize", "tool": "x"}}]},
         "endpoints[0].rules[0].allow.method", "tools/call"),
        ({"protocol": "mcp", "mcp": {"strict_tool_names": False},
          "rules": [{"allow": {"method": "tools/call", "tool": "a*"}}]},
         "endpoints[0].rules[0].allow.tool", "strict_tool_names"),
        ({"protocol": "mcp", "rules": [{"allow": {"method": "tools/call"}},
                                       {"allow": {"method": "tools/call", "tool": "a"}}]},
         "endpoints[0].rules[0].allow", "every tool call"),
        ({"protocol": "mcp", "rules": [{"allow": {"method": "tools/call", "tool": "a",
                                                  "params": {"name": "b"}}}]},
         "endpoints[0].rules[0].allow", "not both"),
        ({"protocol": "rest", "rules": [{"allow": {"method": "GET"}}]},
         "endpoints[0].rules[0].allow.path", "required"),
        ({"protocol": "rest", "rules": [{"allow": {"method": "GET", "path": "/a**"}}]},
         "endpoints[0].rules[0].allow.path", "whole segment"),
        ({"protocol": "rest", "rules": [{"allow": {"method": "GET", "path": "/[a"}}]},
         "endpoints[0].rules[0].allow.path", "unclosed"),
        ({"protocol": "rest", "access": "full", "deny_rules": [
            {"method": "GET", "path": "**", "query": {"q": {"glob": "a", "any": ["b"]}}}]},
         "endpoints[0].deny_rules[0].query.q", "not both"),
        ({"protocol": "graphql", "rules": [{"allow": {"operation_name": "X"}}]},
         "endpoints[0].rules[0].allow.operation_type", "required"),
        ({"protocol": "graphql", "access": "full", "persisted_queries": "yes"},
         "endpoints[0].persisted_queries", "must be one of"),
        ({"protocol": "rest", "access": "full", "credential_signing": "sigv4"},
         "endpoints[0].signing_service", "signing_service"),
        ({"protocol": "rest", "access": "full", "credential_signing": "sigv4",
          "signing_service": "s3", "request_body_credential_rewrite": True},
         "endpoints[0].credential_signing", "exclusive"),
        ({"protocol": "rest", "access": "full", "credential_binding": {"provider": "x"}},
         "endpoints[0].credential_binding", "sandbox policy"),
        ({"protocol": "sql", "access": "full"}, "endpoints[0].protocol", "not supported"),
        ({"protocol": "rest", "access": "full", "mcp": {"strict_tool_names": True}},
         "endpoints[0].mcp", "only valid for protocol mcp"),
    ],
)
def test_rule_rejections(endpoint: dict[str, Any], field: str, reason: str,
                         tmp_path: Path) -> None:
    diags = errors(tmp_path, _ep(**endpoint))
    assert any(d.field == field and reason in d.message for d in diags), [str(d) for d in diags]


def test_mcp_allow_all_needs_no_rules(tmp_path: Path) -> None:
    ps = load(tmp_path, _ep(protocol="mcp", mcp={"allow_all_known_mcp_methods": True},
                            deny_rules=[{"method": "tools/call", "tool": "rm"}]))
    assert ps.profiles[0].endpoints[0].mcp.allow_all_known_mcp_methods


@pytest.mark.parametrize(
    ("cred", "field"),
    [
        ({"name": "c", "auth_style": "path", "path_template": "/x"}, "credentials[0].path_template"),
        ({"name": "c", "auth_style": "path", "path_template": "/{credential}/{credential}"},
         "credentials[0].path_template"),
        ({"name": "c", "env_vars": ["OPENSHELL_TOKEN"]}, "credentials[0].env_vars[0]"),
        ({"name": "c", "env_vars": ["v2_TOKEN"]}, "credentials[0].env_vars[0]"),
        ({"name": "c", "env_vars": "TOKEN"}, "credentials[0].env_vars"),
        ({"name": "c", "auth_style": "query",
          "token_grant": {"token_endpoint": "https://a.example.com/t"}}, "credentials[0].auth_style"),
        ({"name": "c", "refresh": {"strategy": "static", "refresh_before_seconds": -1}},
         "credentials[0].refresh.refresh_before_seconds"),
    ],
)
def test_credential_rejections(cred: dict[str, Any], field: str, tmp_path: Path) -> None:
    assert field in fields(errors(tmp_path, {"id": "t", "credentials": [cred]}))


def test_unknown_category_is_a_warning(tmp_path: Path) -> None:
    diags = warnings(tmp_path, {"id": "t", "category": "test", "endpoints": []})
    assert [d.field for d in diags] == ["category"]


def test_token_grant_endpoint_without_protocol_is_inspected_read_only(tmp_path: Path) -> None:
    doc = {"id": "t", "credentials": [
        {"name": "c", "token_grant": {"token_endpoint": "https://a.example.com/t"}}],
        "endpoints": [{"host": "a.example.com", "port": 443},
                      {"host": "b.example.com", "port": 443, "access": "full"}]}
    a, b = load(tmp_path, doc).profiles[0].endpoints
    assert (a.protocol, a.access, a.inspected) == ("rest", "read-only", True)
    assert (b.protocol, b.access) == ("rest", "full")
    # A static credential on a raw tunnel needs the explicit opt-in (ARCHITECTURE.md 9).
    static = {"id": "s", "credentials": [{"name": "c", "env_vars": ["S_KEY"]}],
              "endpoints": [{"host": "a.example.com", "port": 443,
                             "allow_uninspected_credentials": True}]}
    (ep,) = load(tmp_path, static).profiles[0].endpoints
    assert (ep.protocol, ep.access, ep.inspected) == (None, None, False)
