"""Endpoints and their L7 rules: raw YAML → ``Endpoint``, with OpenShell's load-time rules.

The rejections follow OpenShell's validator (``rules`` and ``access`` are exclusive,
``rules: []`` and ``deny_rules: []`` are errors, ``deny_rules`` need an inspected protocol
and a base allow set, ``json-rpc``/``mcp`` take no ``access``, MCP tool selectors, ...);
each is reported with the field it concerns, and all of them in one pass.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal, cast

from supervisor.profiles import validation as v
from supervisor.profiles.globs import check_path_glob, check_value_glob, is_wildcard
from supervisor.profiles.hosts import normalize_host
from supervisor.profiles.model import (
    DEFAULT_INSPECT_BODY_BYTES,
    INSPECTED_PROTOCOLS,
    Access,
    CredentialSigning,
    Endpoint,
    Enforcement,
    GraphqlOperation,
    IPNetwork,
    L7Rule,
    McpOptions,
    ValueMatcher,
)
from supervisor.profiles.patterns import parse_host_pattern, parse_path_pattern
from supervisor.profiles.schema_ctx import Ctx, join, type_name

ENDPOINT_KEYS = frozenset(
    {
        "host", "port", "ports", "path", "protocol", "tls", "access", "enforcement",
        "allowed_ips", "rules", "deny_rules", "allow_encoded_slash",
        "websocket_credential_rewrite", "request_body_credential_rewrite",
        "allow_uninspected_credentials", "credential_signing", "signing_service",
        "signing_region", "persisted_queries", "graphql_persisted_queries",
        "graphql_max_body_bytes", "json_rpc_max_body_bytes", "json_rpc", "mcp",
        "credential_binding",
    }
)
RULE_FIELDS = frozenset(
    {"method", "path", "command", "query", "operation_type", "operation_name", "fields",
     "params", "tool"}
)
MATCHER_KEYS = frozenset({"glob", "any"})
GRAPHQL_OP_KEYS = frozenset({"operation_type", "operation_name", "fields"})
MCP_KEYS = frozenset({"strict_tool_names", "allow_all_known_mcp_methods", "max_body_bytes"})
JSON_RPC_KEYS = frozenset({"max_body_bytes"})
ACCESS_VALUES = ("read-only", "read-write", "full")
ENFORCEMENT_VALUES = ("enforce", "audit")
SIGNING_VALUES = ("sigv4", "sigv4:body", "sigv4:no_body")
PERSISTED_VALUES = ("deny", "allow_registered")
OPERATION_TYPES = ("query", "mutation", "subscription", "*")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "*")
WEBSOCKET_METHODS = ("GET", "WEBSOCKET_TEXT", "*")
DEPRECATED_TLS = ("terminate", "passthrough")
AUTOMATIC_TLS = ("", "auto", "none")
FLAG_KEYS = ("allow_encoded_slash", "websocket_credential_rewrite",
             "request_body_credential_rewrite", "allow_uninspected_credentials")
MAX_BODY_LIMIT = 16 << 20  # bodies buffered for inspection: refuse absurd limits


def check_host(value: str) -> str | None:
    try:
        parse_host_pattern(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_path(value: str) -> str | None:
    try:
        parse_path_pattern(value)
    except ValueError as exc:
        return str(exc)
    return None


def _body_limit(value: int) -> str | None:
    if value <= 0:
        return "must be a positive integer"
    return None if value <= MAX_BODY_LIMIT else f"must be at most {MAX_BODY_LIMIT}"


def parse_endpoint(ctx: Ctx, raw: object, path: str) -> Endpoint | None:
    """Every field is read (and diagnosed) in one pass; None if any of them was an error."""
    m = ctx.mapping(raw, path, ENDPOINT_KEYS, ("host",))
    if m is None:
        return None
    before = ctx.sink.error_count
    host, ports, epath = _parse_address(ctx, m, path)
    protocol = _parse_protocol(ctx, m, path)
    tls = _parse_tls(ctx, m, path, protocol, ports)
    access = cast(Access | None, ctx.one_of(m, "access", path, ACCESS_VALUES, "") or None)
    enforcement = cast(
        Enforcement, ctx.one_of(m, "enforcement", path, ENFORCEMENT_VALUES, "enforce")
    )
    nets = _parse_networks(ctx, m, path)
    flags = {key: ctx.get(m, key, path, bool, False) for key in FLAG_KEYS}
    signing, service, region = _parse_signing(ctx, m, path, flags)
    mcp = _parse_mcp(ctx, m, path, protocol)
    jr_bytes = _parse_json_rpc_limit(ctx, m, path, protocol)
    gq_bytes, persisted, registry = _parse_graphql(ctx, m, path, protocol)
    _warn_inert_rewrites(ctx, path, protocol, flags)
    rules = _parse_rules(ctx, m, path, protocol, mcp, allow=True)
    deny = _parse_rules(ctx, m, path, protocol, mcp, allow=False)
    _check_semantics(ctx, path, protocol, access, rules, deny, mcp)
    if ctx.sink.error_count != before:
        return None
    return Endpoint(
        host, ports, epath, protocol, tls, access, enforcement, nets,
        rules=rules, deny_rules=deny or (),
        allow_encoded_slash=flags["allow_encoded_slash"],
        websocket_credential_rewrite=flags["websocket_credential_rewrite"],
        request_body_credential_rewrite=flags["request_body_credential_rewrite"],
        allow_uninspected_credentials=flags["allow_uninspected_credentials"],
        credential_signing=signing, signing_service=service, signing_region=region,
        persisted_queries=persisted, graphql_persisted_queries=registry,
        graphql_max_body_bytes=gq_bytes, json_rpc_max_body_bytes=jr_bytes, mcp=mcp,
    )


def _parse_address(
    ctx: Ctx, m: dict[str, Any], path: str
) -> tuple[str, tuple[int, ...], str | None]:
    """Host, ports and path glob (None = every path)."""
    host = normalize_host(ctx.get(m, "host", path, str, "", check_host))
    ports = _parse_ports(ctx, m, path)
    raw_path = ctx.get(m, "path", path, str, "")
    if raw_path in ("", "**"):  # OpenShell: empty or "**" = every path
        return host, ports, None
    message = check_path(raw_path)
    if message is not None:
        ctx.err(join(path, "path"), message)
    return host, ports, raw_path


def _parse_signing(
    ctx: Ctx, m: dict[str, Any], path: str, flags: dict[str, bool]
) -> tuple[CredentialSigning | None, str | None, str | None]:
    """Request signing (mode, service, region); ``credential_binding`` is policy-only."""
    signing = cast(
        CredentialSigning | None, ctx.one_of(m, "credential_signing", path, SIGNING_VALUES, "")
        or None,
    )
    service = ctx.opt_str(m, "signing_service", path, v.check_text)
    region = ctx.opt_str(m, "signing_region", path, v.check_text)
    if signing is not None and service is None:
        ctx.err(join(path, "signing_service"), "credential_signing needs signing_service")
    if signing is not None and flags["request_body_credential_rewrite"]:
        ctx.err(join(path, "credential_signing"),
                "credential_signing and request_body_credential_rewrite are exclusive")
    if m.get("credential_binding") is not None:
        ctx.err(join(path, "credential_binding"),
                "only valid in a sandbox policy endpoint, not in a provider profile")
    return signing, service, region


def _parse_graphql(
    ctx: Ctx, m: dict[str, Any], path: str, protocol: str | None
) -> tuple[int, Literal["deny", "allow_registered"], tuple[tuple[str, GraphqlOperation], ...]]:
    """Body limit, persisted-query mode and registry, with warnings when they do nothing."""
    gq_bytes = ctx.get(m, "graphql_max_body_bytes", path, int, DEFAULT_INSPECT_BODY_BYTES,
                       _body_limit)
    persisted = cast(
        Literal["deny", "allow_registered"],
        ctx.one_of(m, "persisted_queries", path, PERSISTED_VALUES, "deny"),
    )
    registry = _parse_registry(ctx, m, path)
    if protocol not in ("graphql", "websocket") and any(
        m.get(k) is not None
        for k in ("persisted_queries", "graphql_persisted_queries", "graphql_max_body_bytes")
    ):
        ctx.warn(path, "GraphQL fields have no effect unless protocol is graphql or websocket")
    if persisted == "allow_registered" and not registry:
        ctx.warn(join(path, "persisted_queries"),
                 "allow_registered without graphql_persisted_queries: every hash is denied")
    return gq_bytes, persisted, registry


def _warn_inert_rewrites(
    ctx: Ctx, path: str, protocol: str | None, flags: dict[str, bool]
) -> None:
    if flags["websocket_credential_rewrite"] and protocol not in ("rest", "websocket"):
        ctx.warn(join(path, "websocket_credential_rewrite"),
                 "has no effect unless protocol is rest or websocket")
    if flags["request_body_credential_rewrite"] and protocol != "rest":
        ctx.warn(join(path, "request_body_credential_rewrite"),
                 "has no effect unless protocol is rest")


def _parse_protocol(ctx: Ctx, m: dict[str, Any], path: str) -> str | None:
    raw = ctx.get(m, "protocol", path, str, "").strip().lower()
    if raw in ("", "tcp"):
        return None  # 'tcp' is OpenShell's explicit spelling of an L4 endpoint
    if raw == "sql":
        ctx.err(join(path, "protocol"), "protocol sql is not supported by this supervisor")
        return None
    if raw not in INSPECTED_PROTOCOLS:
        allowed = ", ".join(("tcp", *INSPECTED_PROTOCOLS))
        ctx.err(join(path, "protocol"), f"unknown protocol {raw!r} (expected {allowed})")
        return None
    return raw


def _parse_tls(
    ctx: Ctx, m: dict[str, Any], path: str, protocol: str | None, ports: tuple[int, ...]
) -> str:
    """ARCHITECTURE.md 4.1: skip; terminate/passthrough deprecated; others automatic."""
    tls = ctx.get(m, "tls", path, str, "auto", v.check_text).strip().lower()
    where = join(path, "tls")
    if tls in DEPRECATED_TLS:
        ctx.warn(where, f"'tls: {tls}' is deprecated and has no effect: interception is "
                 "automatic; use 'tls: skip' to disable it")
    elif tls not in (*AUTOMATIC_TLS, "skip"):
        ctx.warn(where, f"unknown tls value {tls!r}: treated as automatic")
    if tls == "skip" and protocol is not None and 443 in ports:
        ctx.warn(where, "'tls: skip' with an inspected protocol on port 443: requests "
                 "inside TLS cannot be inspected, so the tunnel is refused")
    return tls or "auto"


def _parse_ports(ctx: Ctx, m: dict[str, Any], path: str) -> tuple[int, ...]:
    has_port, has_ports = m.get("port") is not None, m.get("ports") is not None
    if has_port and has_ports:
        ctx.err(f"{path}.ports", "give either 'port' or 'ports', not both")
        return ()
    if has_port:
        port = ctx.get(m, "port", path, int, 0, v.check_port)
        return (port,) if port else ()
    if not has_ports:
        ctx.err(f"{path}.port", "required field is missing ('port' or 'ports')")
        return ()
    raw = m["ports"]
    if not isinstance(raw, list) or not raw:
        ctx.err(f"{path}.ports", "expected a non-empty list of ports")
        return ()
    out: list[int] = []
    for i, item in enumerate(raw):
        where = f"{path}.ports[{i}]"
        if not isinstance(item, int) or isinstance(item, bool):
            ctx.err(where, f"expected an integer, got {type_name(item)}")
        elif (message := v.check_port(item)) is not None:
            ctx.err(where, message)
        elif item in out:
            ctx.err(where, f"duplicate port {item}")
        else:
            out.append(item)
    return tuple(out)


def _parse_networks(ctx: Ctx, m: dict[str, Any], path: str) -> tuple[IPNetwork, ...]:
    raw = m.get("allowed_ips")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.err(f"{path}.allowed_ips", f"expected a list, got {type_name(raw)}")
        return ()
    out: list[IPNetwork] = []
    for i, item in enumerate(raw):
        where = f"{path}.allowed_ips[{i}]"
        if not isinstance(item, str):
            ctx.err(where, f"expected a CIDR string, got {type_name(item)}")
            continue
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as exc:
            ctx.err(where, f"not a valid CIDR ({exc})")
    return tuple(out)


def _parse_mcp(ctx: Ctx, m: dict[str, Any], path: str, protocol: str | None) -> McpOptions:
    raw = m.get("mcp")
    if raw is None:
        return McpOptions()
    where = join(path, "mcp")
    if protocol != "mcp":
        ctx.err(where, "mcp options are only valid for protocol mcp")
    mm = ctx.mapping(raw, where, MCP_KEYS)
    if mm is None:
        return McpOptions()
    return McpOptions(
        strict_tool_names=ctx.get(mm, "strict_tool_names", where, bool, True),
        allow_all_known_mcp_methods=ctx.get(mm, "allow_all_known_mcp_methods", where, bool,
                                            False),
        max_body_bytes=ctx.get(mm, "max_body_bytes", where, int, DEFAULT_INSPECT_BODY_BYTES,
                               _body_limit),
    )


def _parse_json_rpc_limit(
    ctx: Ctx, m: dict[str, Any], path: str, protocol: str | None
) -> int:
    """``json_rpc_max_body_bytes`` (the profile DTO) or ``json_rpc.max_body_bytes`` (docs)."""
    value = ctx.get(m, "json_rpc_max_body_bytes", path, int, 0, _body_limit)
    raw = m.get("json_rpc")
    if raw is not None:
        where = join(path, "json_rpc")
        mm = ctx.mapping(raw, where, JSON_RPC_KEYS)
        if mm is not None:
            nested = ctx.get(mm, "max_body_bytes", where, int, 0, _body_limit)
            if nested and value and nested != value:
                ctx.err(where, "json_rpc.max_body_bytes disagrees with json_rpc_max_body_bytes")
            value = value or nested
    if value and protocol not in ("json-rpc", "mcp"):
        ctx.warn(path, "JSON-RPC body limit has no effect unless protocol is json-rpc or mcp")
    return value or DEFAULT_INSPECT_BODY_BYTES


def _parse_registry(
    ctx: Ctx, m: dict[str, Any], path: str
) -> tuple[tuple[str, GraphqlOperation], ...]:
    raw = m.get("graphql_persisted_queries")
    if raw is None:
        return ()
    where = join(path, "graphql_persisted_queries")
    if not isinstance(raw, dict):
        ctx.err(where, f"expected a mapping keyed by hash or saved-query id, got {type_name(raw)}")
        return ()
    out: list[tuple[str, GraphqlOperation]] = []
    for key, value in raw.items():
        at = f"{where}[{key}]"
        if not isinstance(key, str) or not key:
            ctx.err(at, "keys must be non-empty strings")
            continue
        mm = ctx.mapping(value, at, GRAPHQL_OP_KEYS, ("operation_type",))
        if mm is None:
            continue
        op_type = ctx.one_of(mm, "operation_type", at, OPERATION_TYPES[:3], "")
        name = ctx.opt_str(mm, "operation_name", at, v.check_text)
        fields = ctx.str_list(mm, "fields", at, v.check_text) or ()
        if op_type:
            out.append((key, GraphqlOperation(op_type, name, fields)))
    return tuple(sorted(out))


# ---- rules ----


def _parse_rules(
    ctx: Ctx, m: dict[str, Any], path: str, protocol: str | None, mcp: McpOptions,
    *, allow: bool,
) -> tuple[L7Rule, ...] | None:
    key = "rules" if allow else "deny_rules"
    raw = ctx.raw_list(m, key, path)
    if raw is None:
        return None
    where = join(path, key)
    if not raw:
        ctx.err(where, "rules list cannot be empty (it would deny everything): use "
                "'access: full' or remove it" if allow else
                "deny_rules list cannot be empty (it would have no effect): remove it")
        return None
    out: list[L7Rule] = []
    empty = 0
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if allow:
            entry = ctx.mapping(item, at, frozenset({"allow"}))
            if entry is None:
                continue
            if entry.get("allow") is None:
                empty += 1  # OpenShell: an entry without 'allow' allows nothing
                continue
            at = f"{at}.allow"
            item = entry["allow"]
        rule = _parse_rule(ctx, item, at, protocol, mcp, allow=allow)
        if rule is not None:
            out.append(rule)
    if allow and empty == len(raw):
        ctx.err(where, "rules would deny all traffic (no entry has an 'allow'): use "
                "'access: full' or add allow clauses")
    return tuple(out)


def _parse_matcher(ctx: Ctx, raw: object, at: str) -> ValueMatcher | None:
    """A glob string, ``{glob: ...}`` or ``{any: [...]}`` (exactly one of them)."""
    if isinstance(raw, str):
        message = check_value_glob(raw)
        if message is not None:
            ctx.err(at, message)
            return None
        return ValueMatcher((raw,))
    mm = ctx.mapping(raw, at, MATCHER_KEYS)
    if mm is None:
        return None
    glob = ctx.opt_str(mm, "glob", at, check_value_glob)
    anys = ctx.str_list(mm, "any", at, check_value_glob) or ()
    if glob is not None and anys:
        ctx.err(at, "a matcher takes either glob or any, not both")
        return None
    if glob is None and not anys:
        ctx.err(at, "a matcher needs glob or a non-empty any list")
        return None
    return ValueMatcher((glob,) if glob is not None else anys)


def _parse_query(ctx: Ctx, raw: object, at: str) -> tuple[tuple[str, ValueMatcher], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        ctx.err(at, f"expected a mapping of parameter name to matcher, got {type_name(raw)}")
        return ()
    out: list[tuple[str, ValueMatcher]] = []
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            ctx.err(at, "parameter names must be non-empty strings")
            continue
        matcher = _parse_matcher(ctx, value, f"{at}.{name}")
        if matcher is not None:
            out.append((name, matcher))
    return tuple(sorted(out, key=lambda kv: kv[0]))


def _parse_rule(
    ctx: Ctx, raw: object, at: str, protocol: str | None, mcp: McpOptions, *, allow: bool
) -> L7Rule | None:
    """Reads every rule field, then checks them as the endpoint's protocol requires."""
    m = ctx.mapping(raw, at, RULE_FIELDS)
    if m is None:
        return None
    before = ctx.sink.error_count
    proto = protocol or "rest"  # rules on an L4 endpoint act as REST rules when inspected
    method = ctx.opt_str(m, "method", at, v.check_text)
    rpath = ctx.opt_str(m, "path", at, check_path_glob)
    query = _parse_query(ctx, m.get("query"), join(at, "query"))
    op_type = ctx.opt_str(m, "operation_type", at)
    op_name = ctx.opt_str(m, "operation_name", at, check_value_glob)
    fields = ctx.str_list(m, "fields", at, check_value_glob) or ()
    if m.get("command") is not None:
        ctx.err(join(at, "command"), "command is for protocol sql, which is not supported")
    tool, params_name = _parse_tool(ctx, m, at)
    graphql_fields = op_type is not None or op_name is not None or bool(fields)
    transport = method is not None or rpath is not None or bool(query)
    if proto in ("rest", "websocket") and not (proto == "websocket" and graphql_fields):
        method = _check_http_rule(ctx, at, proto, method, rpath, tool, graphql_fields)
    elif proto == "graphql" or proto == "websocket":
        _check_graphql_rule(ctx, at, proto, op_type, transport)
    elif proto == "json-rpc":
        params = m.get("params") is not None or tool is not None
        _check_json_rpc_rule(ctx, at, method, params, rpath is not None or bool(query))
    else:  # mcp
        _check_mcp_rule(ctx, at, method, tool, params_name, rpath, query, mcp)
    if ctx.sink.error_count != before:
        return None
    del allow
    return L7Rule(
        method=method, path=rpath, query=query, operation_type=op_type,
        operation_name=op_name, fields=fields, tool=tool,
    )


def _check_http_rule(
    ctx: Ctx, at: str, proto: str, method: str | None, rpath: str | None,
    tool: ValueMatcher | None, graphql_fields: bool,
) -> str | None:
    """A REST or WebSocket (transport) rule; returns the method upper-cased."""
    if proto == "rest" and graphql_fields:
        ctx.warn(at, "GraphQL rule fields have no effect unless protocol is graphql "
                 "or websocket")
    if method is None:
        ctx.err(join(at, "method"), "required for REST/WebSocket rules ('*' = any)")
    if rpath is None:
        ctx.err(join(at, "path"), "required for REST/WebSocket rules ('**' = any path)")
    known = WEBSOCKET_METHODS if proto == "websocket" else HTTP_METHODS
    if method is not None and method.upper() not in known:
        ctx.warn(join(at, "method"), f"unusual method {method!r} (standard: "
                 f"{', '.join(known)})")
    if tool is not None:
        ctx.err(at, "tool and params are only valid for protocol mcp")
    return method.upper() if method is not None else None


def _check_graphql_rule(
    ctx: Ctx, at: str, proto: str, op_type: str | None, transport: bool
) -> None:
    """A GraphQL operation rule (protocol graphql, or GraphQL over WebSocket)."""
    if proto == "websocket" and transport:
        ctx.err(at, "WebSocket GraphQL rules must not combine method/path/query with "
                "operation_type/operation_name/fields")
    if proto == "graphql" and transport:
        ctx.warn(at, "method/path/query have no effect in GraphQL operation rules")
    if op_type is None:
        ctx.err(join(at, "operation_type"), "required for GraphQL rules")
    elif op_type not in OPERATION_TYPES:
        ctx.err(join(at, "operation_type"), f"must be one of {', '.join(OPERATION_TYPES)}")


def _check_json_rpc_rule(
    ctx: Ctx, at: str, method: str | None, has_params: bool, has_path_or_query: bool
) -> None:
    """A JSON-RPC rule matches an exact method name (or '*') and nothing else."""
    if method is None:
        ctx.err(join(at, "method"), "required for JSON-RPC rules ('*' = any method)")
    elif method != "*" and is_wildcard(method):
        ctx.err(join(at, "method"), "JSON-RPC methods are exact names; only '*' (any) "
                "is a wildcard")
    if has_params:
        ctx.err(at, "JSON-RPC rules match the method only (params matchers are not "
                "supported)")
    if has_path_or_query:
        ctx.err(at, "JSON-RPC rules use method, not path/query")


def _parse_tool(ctx: Ctx, m: dict[str, Any], at: str) -> tuple[ValueMatcher | None, bool]:
    """MCP's ``tool`` or ``params.name`` (not both); other params are not supported."""
    tool = None
    if m.get("tool") is not None:
        tool = _parse_matcher(ctx, m["tool"], join(at, "tool"))
    params_name = False
    raw = m.get("params")
    if raw is not None:
        where = join(at, "params")
        if not isinstance(raw, dict):
            ctx.err(where, f"expected a mapping, got {type_name(raw)}")
        else:
            for key in raw:
                if key != "name":
                    ctx.err(f"{where}.{key}", "only params.name (the tool name) can be matched")
            if raw.get("name") is not None:
                params_name = True
                if tool is not None:
                    ctx.err(at, "MCP rules use either tool or params.name, not both")
                tool = _parse_matcher(ctx, raw["name"], f"{where}.name")
    return tool, params_name


def _check_mcp_rule(
    ctx: Ctx, at: str, method: str | None, tool: ValueMatcher | None, params_name: bool,
    rpath: str | None, query: tuple[tuple[str, ValueMatcher], ...], mcp: McpOptions,
) -> None:
    del params_name
    if rpath is not None or query:
        ctx.err(at, "MCP rules use method/tool, not path/query")
    if method is None and not mcp.allow_all_known_mcp_methods:
        ctx.err(join(at, "method"), "required unless mcp.allow_all_known_mcp_methods is true")
    if method == "*":
        ctx.err(join(at, "method"), "'*' is not an MCP method: omit method and set "
                "mcp.allow_all_known_mcp_methods instead")
    elif method is not None and is_wildcard(method) and not method.startswith("tools/"):
        ctx.err(join(at, "method"), "MCP method globs are only valid for the tools/ family")
    if tool is not None and method is not None and method != "tools/call":
        ctx.err(join(at, "method"), "must be tools/call when the rule selects a tool")
    if tool is not None and not mcp.strict_tool_names and any(is_wildcard(g) for g in tool.globs):
        ctx.err(join(at, "tool"), "wildcard tool matchers need mcp.strict_tool_names")
    if method is not None and method != "*" and is_wildcard(method):
        message = check_value_glob(method)
        if message is not None:
            ctx.err(join(at, "method"), message)


def _covers_tools_call(method: str | None, mcp: McpOptions) -> bool:
    if method is None:
        return mcp.allow_all_known_mcp_methods
    from supervisor.profiles.globs import compile_value_glob

    return method == "tools/call" or compile_value_glob(method).fullmatch("tools/call") is not None


def _check_semantics(
    ctx: Ctx, path: str, protocol: str | None, access: Access | None,
    rules: tuple[L7Rule, ...] | None, deny: tuple[L7Rule, ...] | None, mcp: McpOptions,
) -> None:
    """OpenShell's endpoint-level combinations (validate_l7_endpoint_semantics)."""
    has_rules = bool(rules)
    has_deny = bool(deny)
    if has_rules and access is not None:
        ctx.err(join(path, "rules"), "rules and access are mutually exclusive")
    if protocol in ("json-rpc", "mcp") and access is not None:
        hint = ("use rules, or set mcp.allow_all_known_mcp_methods: true" if protocol == "mcp"
                else "use explicit rules such as {allow: {method: '*'}}")
        ctx.err(join(path, "access"), f"protocol {protocol} does not take access presets; {hint}")
    if protocol == "json-rpc" and rules is None:
        ctx.err(join(path, "rules"), "protocol json-rpc requires explicit rules with allow.method")
    if protocol in ("rest", "websocket", "graphql") and rules is None and access is None:
        ctx.err(join(path, "access"),
                f"protocol {protocol} requires access or rules to define the allowed traffic")
    if (protocol == "mcp" and rules is None and access is None
            and not mcp.allow_all_known_mcp_methods):
        ctx.err(join(path, "rules"),
                "protocol mcp requires rules unless mcp.allow_all_known_mcp_methods is true")
    if has_deny and protocol is None:
        ctx.err(join(path, "deny_rules"), "deny_rules require an inspected protocol")
    if has_deny and protocol != "mcp" and rules is None and access is None:
        ctx.err(join(path, "deny_rules"), "deny_rules require rules or access as their base")
    if rules is not None and protocol is None:
        ctx.warn(join(path, "rules"), "rules on an endpoint without protocol apply only when "
                 "its host and port are inspected for another reason")
    if protocol == "mcp":
        tool_allows = [r for r in rules or () if r.tool is not None]
        if tool_allows:
            for i, r in enumerate(rules or ()):
                if r.tool is None and _covers_tools_call(r.method, mcp):
                    ctx.err(f"{path}.rules[{i}].allow",
                            "allows every tool call, which conflicts with the tool-specific "
                            "allow rules: add tool, or remove the tool rules")
            for i, r in enumerate(deny or ()):
                if r.tool is None and r.method is not None and _covers_tools_call(r.method, mcp):
                    ctx.err(f"{path}.deny_rules[{i}]",
                            "denies every tool call, which conflicts with the tool-specific "
                            "allow rules: add tool, or remove the tool rules")
