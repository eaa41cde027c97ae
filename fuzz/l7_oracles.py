"""Invariants of the L7 cores (path canonicalization, GraphQL and JSON-RPC/MCP
classification, rule decisions) checked on arbitrary input. Raise AssertionError on a
violation; any other exception escaping a core is a finding too."""

from __future__ import annotations

from supervisor.profiles.canonical import CanonicalError, canonicalize, query_params
from supervisor.profiles.graphql_ops import classify as classify_graphql
from supervisor.profiles.jsonrpc import MCP_TOOL_NAME
from supervisor.profiles.jsonrpc import classify as classify_jsonrpc
from supervisor.profiles.model import Endpoint, L7Rule, ValueMatcher
from supervisor.profiles.rules import L7Request, judge

_LITERAL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@%/")


_ADMIN = Endpoint(
    host="api.example.com", ports=(443,), path=None, protocol="rest", tls="auto",
    access="full", enforcement="enforce", allowed_ips=(),
    deny_rules=(L7Rule(method="*", path="/admin/**"),),
)


def check_canonical_path(text: str) -> None:
    for allow in (False, True):
        try:
            out = canonicalize(text, allow_encoded_slash=allow)
        except CanonicalError:
            continue
        p = out.path
        assert p.startswith("/"), p
        assert "//" not in p, p
        assert ";" not in p, p  # parameters are stripped from every segment
        assert set(p) <= _LITERAL, p
        segs = p[1:].split("/")
        assert not any(s in (".", "..") for s in segs), p
        for s in segs:
            for part in s.split("%2F"):
                assert part not in (".", ".."), p
        assert allow or "%2F" not in p, p
        # Idempotent: judging the forwarded path again gives the same path.
        assert canonicalize(p, allow_encoded_slash=allow).path == p, p
        # What the upstream is sent is what was judged: a request reaching /admin (in
        # any case, through //, ;params or dot segments) meets the /admin/** deny rule.
        first = segs[0].lower()
        verdict = judge([_ADMIN], L7Request("DELETE", p))
        assert verdict.allowed == (first != "admin"), (p, verdict)


def check_graphql(data: bytes) -> None:
    method = "GET" if data[:1] == b"G" else "POST"
    params = query_params(data.decode("latin-1")) if method == "GET" else {}
    info = classify_graphql(method, params, data)
    assert (info.error is None) == bool(info.operations), info
    for op in info.operations:
        assert op.operation_type in ("query", "mutation", "subscription", ""), op
        assert op.operation_type or op.persisted_hash or op.persisted_id, op


_EP = Endpoint(
    host="mcp.example.com", ports=(443,), path=None, protocol="mcp", tls="auto",
    access=None, enforcement="enforce", allowed_ips=(),
    rules=(L7Rule(method="initialize"), L7Rule(method="tools/call",
                                                tool=ValueMatcher(("search",)))),
    deny_rules=(L7Rule(method="tools/call", tool=ValueMatcher(("rm*",))),),
)


def check_jsonrpc(data: bytes) -> None:
    for mcp in (False, True):
        info = classify_jsonrpc(data, mcp=mcp)
        if info.error is not None:
            assert not info.calls, info
        for call in info.calls:
            assert call.method, call
            assert call.tool is None or call.method == "tools/call", call
            if mcp and call.tool is not None:
                assert MCP_TOOL_NAME.fullmatch(call.tool), call
    info = classify_jsonrpc(data, mcp=True)
    verdict = judge([_EP], L7Request("POST", "/mcp", {}, jsonrpc=info))
    if verdict.allowed:
        # Allowed only when every call is initialize or tools/call of 'search' (or the
        # body only answers the server: MCP relays client responses).
        assert info.error is None and (info.calls or info.has_response), info
        for call in info.calls:
            assert call.method == "initialize" or call.tool == "search", info
