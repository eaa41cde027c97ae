"""L7 decisions, as OpenShell's policy engine takes them (ARCHITECTURE.md 4.2). Pure: no I/O.

Per request on an inspected host:port, given every endpoint whose host, port and
``path`` match (``matching``):

* an endpoint's allow set is its ``rules``, else its ``access`` preset expanded for its
  protocol (REST: read-only = GET/HEAD/OPTIONS, read-write = + POST/PUT/PATCH, full = any;
  WebSocket: upgrade, + client text messages; GraphQL: query, + mutation, any), else
  MCP's allow-all profile, else nothing (an L4 entry allows nothing at L7: it never
  downgrades inspection);
* the request is allowed when ANY matching endpoint allows it and NO matching endpoint's
  ``deny_rules`` denies it; a GraphQL endpoint is authoritative for the requests routed to
  it (an operation its rules do not allow is denied even if a broader REST rule allows
  the HTTP request), and so is a JSON-RPC/MCP endpoint (deliberate: OpenShell's engine
  lets a broad REST rule on the same host allow any call; here the routed endpoint's
  method and tool rules always hold); client-to-server JSON-RPC responses are denied on
  ``json-rpc``;
* matchers: method (``*`` any, case-insensitive, a ``GET`` rule also allows ``HEAD``),
  path glob (``globs.py``; deny rules also match case-insensitively, see
  ``canonical.py``, and with an allowed ``%2F`` read as ``/`` too), query matchers on
  decoded names (allow: the parameter is present and every value of it, in any case of
  its name, matches; deny: every configured parameter is present in some case and some
  value matches), GraphQL type/name/root fields (allow: every root field matches a pattern;
  deny: any does), JSON-RPC method (exact or ``*``), MCP method glob and tool name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from supervisor.profiles.globs import compile_path_glob, compile_value_glob
from supervisor.profiles.graphql_ops import GraphqlInfo, Operation
from supervisor.profiles.jsonrpc import Call, JsonRpcInfo
from supervisor.profiles.model import Endpoint, L7Rule, ValueMatcher

WEBSOCKET_TEXT = "WEBSOCKET_TEXT"

_REST_PRESETS: dict[str, tuple[str, ...]] = {
    "read-only": ("GET", "HEAD", "OPTIONS"),
    "read-write": ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"),
    "full": ("*",),
}
_WS_PRESETS: dict[str, tuple[str, ...]] = {
    "read-only": ("GET",),
    "read-write": ("GET", WEBSOCKET_TEXT),
    "full": ("*",),
}
_GRAPHQL_PRESETS: dict[str, tuple[str, ...]] = {
    "read-only": ("query",),
    "read-write": ("query", "mutation"),
    "full": ("*",),
}


@dataclass(frozen=True, slots=True)
class L7Request:
    method: str  # upper-case HTTP method, or WEBSOCKET_TEXT for a client text message
    path: str  # canonical (canonical.py); never the query
    query: dict[str, list[str]] = field(default_factory=dict)  # decoded
    graphql: GraphqlInfo | None = None  # set when routed to a graphql endpoint
    jsonrpc: JsonRpcInfo | None = None  # set when routed to a json-rpc/mcp endpoint


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str  # log-safe: method and path, never the query or a body value


def effective_rules(ep: Endpoint) -> tuple[L7Rule, ...]:
    return _compiled(ep).allow


_ALLOWED = Verdict(True, "")


def judge(matching: Sequence[Endpoint], req: L7Request) -> Verdict:
    """Allowed iff some matching endpoint allows and none denies (see module doc)."""
    gq = req.graphql
    jr = req.jsonrpc
    if gq is None and jr is None:  # plain REST: the common case, without the checks below
        for e in matching:
            if _denies(e, req):
                return Verdict(False, f"{req.method} {req.path} blocked by deny rule")
        for e in matching:
            if _allows(e, req):
                return _ALLOWED
        return Verdict(False, f"{req.method} {req.path} not permitted by policy")
    what = f"{req.method} {req.path}"
    if gq is not None and gq.error is not None:
        return Verdict(False, f"{what}: GraphQL request rejected: {gq.error}")
    if jr is not None and jr.error is not None:
        return Verdict(False, f"{what}: JSON-RPC request rejected: {jr.error}")
    if jr is not None and jr.has_response and any(e.protocol == "json-rpc" for e in matching):
        return Verdict(False, f"{what}: JSON-RPC response frames are not permitted from "
                       "client to server")
    if gq is not None and any(
        _persisted_key(o) is not None and not _registered(o, e)
        for o in gq.operations for e in matching if e.protocol == "graphql"
    ):
        return Verdict(False, f"{what}: GraphQL persisted query is not registered")
    denied = any(_denies(e, req) for e in matching)
    if denied:
        if gq is not None and gq.operations:
            return Verdict(False, f"{what}: GraphQL operation blocked by endpoint policy")
        return Verdict(False, f"{what} blocked by deny rule")
    if any(_allows(e, req) for e in matching):
        return _ALLOWED
    if gq is not None and gq.operations:
        return Verdict(False, f"{what}: GraphQL operation not permitted by policy")
    if jr is not None and jr.calls:
        methods = ",".join(sorted({c.method for c in jr.calls}))[:200]
        return Verdict(False, f"{what}: JSON-RPC {methods} not permitted by policy")
    return Verdict(False, f"{what} not permitted by policy")


def denied_by(endpoints: Sequence[Endpoint], req: L7Request) -> bool:
    """Does one of ``endpoints`` deny ``req`` (its deny rules, or a GraphQL/JSON-RPC
    endpoint's own rules, which are authoritative)?"""
    return any(_denies(e, req) for e in endpoints)


# ---- compiled endpoint ----


@dataclass(frozen=True, slots=True)
class _Compiled:
    allow: tuple[L7Rule, ...]
    deny: tuple[L7Rule, ...]
    tool_narrowed: bool  # MCP: tool-specific allow rules exist (tools/call is narrowed)


def _compiled(ep: Endpoint) -> _Compiled:
    cached = ep.l7_cache
    if isinstance(cached, _Compiled):
        return cached
    compiled = _compile(ep)
    object.__setattr__(ep, "l7_cache", compiled)  # same value if two threads race
    return compiled


def _compile(ep: Endpoint) -> _Compiled:
    proto = ep.protocol
    allow: tuple[L7Rule, ...]
    if ep.rules is not None:
        allow = ep.rules
    elif proto == "mcp" and ep.mcp.allow_all_known_mcp_methods:
        allow = (L7Rule(method="*"),)
    elif ep.access is not None and proto not in ("json-rpc", "mcp"):
        if proto == "graphql":
            allow = tuple(L7Rule(operation_type=t) for t in _GRAPHQL_PRESETS[ep.access])
        else:
            presets = _WS_PRESETS if proto == "websocket" else _REST_PRESETS
            allow = tuple(L7Rule(method=m, path="**") for m in presets[ep.access])
    else:
        allow = ()
    if proto == "mcp" and ep.mcp.allow_all_known_mcp_methods:
        # The endpoint method profile: an omitted method is tools/call for a tool rule,
        # any method otherwise.
        allow = tuple(_mcp_default(r) for r in allow)
        deny = tuple(_mcp_default(r) for r in ep.deny_rules)
    else:
        deny = ep.deny_rules
    narrowed = proto == "mcp" and any(r.tool is not None for r in allow)
    return _Compiled(allow, deny, narrowed)


def _mcp_default(rule: L7Rule) -> L7Rule:
    if rule.method is not None:
        return rule
    return L7Rule(method="tools/call" if rule.tool is not None else "*", tool=rule.tool)


# ---- allow / deny for one endpoint ----


def _jsonrpc_family(ep: Endpoint) -> bool:
    return ep.protocol in ("json-rpc", "mcp")


def _allows(ep: Endpoint, req: L7Request) -> bool:
    c = _compiled(ep)
    if not c.allow:
        return False
    if _jsonrpc_family(ep):
        return _jsonrpc_allows(ep, c, req)
    for rule in c.allow:
        if rule.operation_type is not None:
            continue  # GraphQL rules are judged on the operations below
        if (rule.method is not None and _method_ok(req.method, rule.method)
                and _path_ok(req.path, rule.path, deny=False)
                and _query_allows(req.query, rule.query)):
            return True
    gq = req.graphql
    if gq is not None and gq.operations and any(r.operation_type for r in c.allow):
        return all(_op_allowed(o, ep, c.allow) for o in gq.operations)
    return False


def _denies(ep: Endpoint, req: L7Request) -> bool:
    c = _compiled(ep)
    gq = req.graphql
    if _jsonrpc_family(ep):
        jr = req.jsonrpc
        if jr is None:
            return False
        # Authoritative for what is routed to it, like a GraphQL endpoint (deliberate: a
        # broader REST rule on the host must not let an unlisted tool or method through).
        if not _jsonrpc_allows(ep, c, req):
            return True
        return req.method == "POST" and any(
            _call_matches(ep, call, rule) for call in jr.calls for rule in c.deny
            if rule.method is not None
        )
    for rule in c.deny:
        if rule.operation_type is not None:
            if gq is not None and any(_op_denied(o, ep, rule) for o in gq.operations):
                return True
            continue
        if (rule.method is not None and _method_ok(req.method, rule.method)
                and _path_ok(req.path, rule.path, deny=True)
                and _query_denies(req.query, rule.query)):
            return True
    # A GraphQL endpoint is authoritative for what is routed to it (OpenShell's rule).
    return (ep.protocol in ("graphql", "websocket") and gq is not None
            and not (gq.operations and all(_op_allowed(o, ep, c.allow) for o in gq.operations)))


def _jsonrpc_allows(ep: Endpoint, c: _Compiled, req: L7Request) -> bool:
    jr = req.jsonrpc
    if jr is None:
        return False
    if ep.protocol == "mcp" and req.method == "GET" and jr.receive_stream:
        return True  # the server-to-client SSE stream carries no client request
    if req.method != "POST":
        return False
    if jr.has_response and ep.protocol == "mcp" and not jr.calls:
        return True  # answers to server-initiated requests (e.g. elicitation)
    if not jr.calls:
        return False
    return all(_call_allowed(ep, c, call) for call in jr.calls)


def _call_allowed(ep: Endpoint, c: _Compiled, call: Call) -> bool:
    if (ep.protocol == "mcp" and ep.mcp.allow_all_known_mcp_methods and ep.rules is None
            and not (call.method == "tools/call" and c.tool_narrowed)):
        return True
    return any(_call_matches(ep, call, rule) for rule in c.allow if rule.method is not None)


def _call_matches(ep: Endpoint, call: Call, rule: L7Rule) -> bool:
    assert rule.method is not None
    if ep.protocol == "json-rpc":
        return rule.method == "*" or rule.method == call.method
    if not _value_ok(call.method, rule.method):
        return False
    if rule.tool is None:
        return True
    return call.tool is not None and _matcher_ok(call.tool, rule.tool)


# ---- GraphQL ----


def _persisted_key(op: Operation) -> str | None:
    return op.persisted_hash or op.persisted_id


def _registered(op: Operation, ep: Endpoint) -> bool:
    key = _persisted_key(op)
    return (ep.persisted_queries == "allow_registered" and key is not None
            and any(k == key for k, _ in ep.graphql_persisted_queries))


def _views(op: Operation, ep: Endpoint) -> tuple[Operation, ...] | None:
    """What the upstream may run for ``op``: its document and, when it carries a
    persisted identifier, the registered operation too (servers with an operation store
    run the stored document whatever ``query`` says); None if the identifier is not
    registered."""
    views = () if op.needs_registry else (op,)
    key = _persisted_key(op)
    if key is None:
        return views
    for k, reg in ep.graphql_persisted_queries:
        if k == key and ep.persisted_queries == "allow_registered":
            return (*views, Operation(reg.operation_type, reg.operation_name, reg.fields))
    return None


def _op_allowed(op: Operation, ep: Endpoint, rules: tuple[L7Rule, ...]) -> bool:
    views = _views(op, ep)
    return bool(views) and all(_view_allowed(v, rules) for v in views or ())


def _view_allowed(eff: Operation, rules: tuple[L7Rule, ...]) -> bool:
    for rule in rules:
        if rule.operation_type is None:
            continue
        if not (_type_ok(eff, rule) and _name_ok(eff, rule)):
            continue
        if not rule.fields:
            return True
        if eff.fields and all(any(_value_ok(f, p) for p in rule.fields) for f in eff.fields):
            return True
    return False


def _op_denied(op: Operation, ep: Endpoint, rule: L7Rule) -> bool:
    # An unregistered persisted identifier is refused before this.
    return any(_view_denied(v, rule) for v in _views(op, ep) or ())


def _view_denied(eff: Operation, rule: L7Rule) -> bool:
    if not (_type_ok(eff, rule) and _name_ok(eff, rule)):
        return False
    return not rule.fields or any(_value_ok(f, p) for f in eff.fields for p in rule.fields)


def _type_ok(op: Operation, rule: L7Rule) -> bool:
    t = rule.operation_type or ""
    return t == "*" or (bool(t) and op.operation_type.lower() == t.lower())


def _name_ok(op: Operation, rule: L7Rule) -> bool:
    if rule.operation_name is None:
        return True
    return _value_ok(op.operation_name or "", rule.operation_name)


# ---- matchers ----


def _method_ok(actual: str, expected: str) -> bool:
    if expected == "*":
        return True
    a, e = actual.upper(), expected.upper()
    return a == e or (a == "HEAD" and e == "GET")


@functools.lru_cache(maxsize=4096)
def _deny_path_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(compile_path_glob(pattern).pattern, re.DOTALL | re.IGNORECASE)


def _path_ok(path: str, pattern: str | None, *, deny: bool) -> bool:
    if pattern is None:
        return False
    if pattern == "**":
        return True
    if not deny:
        return compile_path_glob(pattern).fullmatch(path) is not None
    regex = _deny_path_regex(pattern)
    # nginx and many routers decode an allowed %2F before routing: a denial holds for
    # the path read either way.
    return regex.fullmatch(path) is not None or (
        "%2F" in path and regex.fullmatch(path.replace("%2F", "/")) is not None)


def _value_ok(value: str, pattern: str) -> bool:
    return compile_value_glob(pattern).fullmatch(value) is not None


def _matcher_ok(value: str, matcher: ValueMatcher) -> bool:
    return any(_value_ok(value, g) for g in matcher.globs)


def _any_case(query: dict[str, list[str]], name: str) -> list[str]:
    """The values of every parameter whose name equals ``name`` in any case: ASP.NET
    (and others) read query names case-insensitively, joining the variants."""
    folded = name.casefold()
    return [v for k, vs in query.items() if k.casefold() == folded for v in vs]


def _query_allows(query: dict[str, list[str]],
                  rules: tuple[tuple[str, ValueMatcher], ...]) -> bool:
    # The exact name must be there; every value of every case variant must match.
    for name, matcher in rules:
        if not query.get(name):
            return False
        if not all(_matcher_ok(v, matcher) for v in _any_case(query, name)):
            return False
    return True


def _query_denies(query: dict[str, list[str]],
                  rules: tuple[tuple[str, ValueMatcher], ...]) -> bool:
    for name, matcher in rules:
        values = _any_case(query, name)
        if not values or not any(_matcher_ok(v, matcher) for v in values):
            return False
    return True
