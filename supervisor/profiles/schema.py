"""Raw YAML data → typed model objects, with a diagnostic for every problem found.

Each parse function returns ``None`` (and has reported why) when its input is invalid;
the caller keeps going so that one run reports all problems.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from supervisor.profiles import validation as v
from supervisor.profiles.diagnostics import Sink
from supervisor.profiles.hosts import normalize_host
from supervisor.profiles.model import (
    ASSERTION_TYPES,
    JWT_BEARER,
    Access,
    AudienceOverride,
    AuthStyle,
    Credential,
    Endpoint,
    Enforcement,
    IPNetwork,
    Profile,
    TokenGrant,
)
from supervisor.profiles.patterns import parse_host_pattern, parse_path_pattern

PROFILE_KEYS = frozenset(
    {"id", "display_name", "description", "category", "credentials", "endpoints", "binaries"}
)
CREDENTIAL_KEYS = frozenset(
    {"name", "description", "required", "auth_style", "header_name", "token_grant"}
)
GRANT_KEYS = frozenset(
    {
        "token_endpoint",
        "audience",
        "jwt_svid_audience",
        "client_assertion_type",
        "scopes",
        "cache_ttl_seconds",
        "audience_overrides",
    }
)
OVERRIDE_KEYS = frozenset({"host", "port", "path", "audience", "scopes"})
ENDPOINT_KEYS = frozenset(
    {"host", "port", "ports", "path", "protocol", "tls", "access", "enforcement", "allowed_ips"}
)
AUTH_STYLES = ("bearer", "header")
ACCESS_VALUES = ("read-only", "read-write", "full")
ENFORCEMENT_VALUES = ("enforce", "audit")
PROTOCOLS = ("rest",)

T = TypeVar("T")


_TYPE_NAMES: dict[type, str] = {
    dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
    int: "an integer", float: "a number", type(None): "null",
}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


@dataclass(slots=True)
class _Ctx:
    """Where we are: file, profile id (once known), field-path prefix, error sink."""

    file: str
    profile_id: str | None
    prefix: str
    sink: Sink
    failed: bool = False

    def err(self, path: str, message: str) -> None:
        self.failed = True
        self.sink.error(self.file, self.profile_id, self.prefix + path, message)

    def warn(self, path: str, message: str) -> None:
        self.sink.warning(self.file, self.profile_id, self.prefix + path, message)

    def mapping(
        self, value: object, path: str, allowed: frozenset[str], required: tuple[str, ...]
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {_type_name(value)}")
            return None
        join = f"{path}." if path else ""
        ok = True
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                names = ", ".join(sorted(allowed))
                self.err(f"{join}{key}", f"unknown key {key!r} (allowed: {names})")
                ok = False
        for key in required:
            if value.get(key) is None:
                self.err(f"{join}{key}", "required field is missing")
                ok = False
        return cast(dict[str, Any], value) if ok else None

    def get(
        self, m: dict[str, Any], key: str, path: str, typ: type[T], default: T,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        """``m[key]`` typed and checked; the default when absent/null or invalid."""
        value = m.get(key)
        if value is None:
            return default
        full = f"{path}.{key}" if path else key
        # bool is an int subclass: a YAML 'true' is never a port or a TTL.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            wanted = _TYPE_NAMES.get(typ, typ.__name__)
            self.err(full, f"expected {wanted}, got {_type_name(value)}")
            return default
        if check is not None:
            message = check(value)
            if message is not None:
                self.err(full, message)
                return default
        return value

    def str_list(
        self, m: dict[str, Any], key: str, path: str, check: Callable[[str], str | None]
    ) -> tuple[str, ...] | None:
        value = m.get(key)
        if value is None:
            return None
        full = f"{path}.{key}" if path else key
        if not isinstance(value, list):
            self.err(full, f"expected a list, got {_type_name(value)}")
            return None
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.err(f"{full}[{i}]", f"expected a string, got {_type_name(item)}")
                continue
            message = check(item)
            if message is not None:
                self.err(f"{full}[{i}]", message)
                continue
            out.append(item)
        return tuple(out)

    def one_of(self, m: dict[str, Any], key: str, path: str, allowed: tuple[str, ...],
               default: str) -> str:
        def check(value: str) -> str | None:
            return None if value in allowed else f"must be one of {', '.join(allowed)}"

        return self.get(m, key, path, str, default, check)


def _host(value: str) -> str | None:
    try:
        parse_host_pattern(value)
    except ValueError as exc:
        return str(exc)
    return None


def _path(value: str) -> str | None:
    try:
        parse_path_pattern(value)
    except ValueError as exc:
        return str(exc)
    return None


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be a positive integer"


def _nonempty_text(value: str) -> str | None:
    return "must not be empty" if not value else v.check_text(value)


def parse_profile(raw: object, file: str, index: int | None, sink: Sink) -> Profile | None:
    """One profile mapping → ``Profile``; ``None`` when anything in it is invalid."""
    prefix = f"[{index}]." if index is not None else ""
    ctx = _Ctx(file, None, prefix, sink)
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(raw_id, str) and v.check_identifier(raw_id) is None:
        ctx.profile_id, ctx.prefix = raw_id, ""
    if not isinstance(raw, dict):
        ctx.prefix = f"[{index}]" if index is not None else ""
    m = ctx.mapping(raw, "", PROFILE_KEYS, ("id",))
    if m is None:
        if isinstance(raw, dict):
            m = {k: val for k, val in raw.items() if isinstance(k, str) and k in PROFILE_KEYS}
        else:
            return None
    pid = ctx.get(m, "id", "", str, "", v.check_identifier)
    display_name = ctx.get(m, "display_name", "", str, "", v.check_text)
    description = ctx.get(m, "description", "", str, "", v.check_text)
    category = ctx.get(m, "category", "", str, "", v.check_text)
    credentials = _parse_list(ctx, m, "credentials", _parse_credential)
    endpoints = _parse_list(ctx, m, "endpoints", _parse_endpoint)
    binaries = ctx.str_list(m, "binaries", "", v.check_binary) or ()
    _check_unique(ctx, [c.name for c in credentials], "credentials", "name", "credential")
    _check_unique(
        ctx, [f"{e.host} ports {list(e.ports)} path {e.path or '(any)'}" for e in endpoints],
        "endpoints", "", "endpoint",
    )
    if ctx.failed:
        return None
    return Profile(
        id=pid, display_name=display_name, description=description, category=category,
        credentials=credentials, endpoints=endpoints, binaries=binaries, source=file,
    )


def _check_unique(ctx: _Ctx, keys: list[str], list_path: str, key: str, what: str) -> None:
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in first:
            suffix = f".{key}" if key else ""
            ctx.err(f"{list_path}[{i}]{suffix}",
                    f"duplicate {what} {k!r} (same as {list_path}[{first[k]}])")
        else:
            first[k] = i


def _parse_list(
    ctx: _Ctx, m: dict[str, Any], key: str,
    parse: Callable[[_Ctx, object, str], T | None],
) -> tuple[T, ...]:
    value = m.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.err(key, f"expected a list, got {_type_name(value)}")
        return ()
    out = [parse(ctx, item, f"{key}[{i}]") for i, item in enumerate(value)]
    return tuple(x for x in out if x is not None)


def _parse_credential(ctx: _Ctx, raw: object, path: str) -> Credential | None:
    m = ctx.mapping(raw, path, CREDENTIAL_KEYS, ("name",))
    if m is None:
        return None
    before = ctx.sink.error_count
    name = ctx.get(m, "name", path, str, "", v.check_identifier)
    description = ctx.get(m, "description", path, str, "", v.check_text)
    required = ctx.get(m, "required", path, bool, False)
    auth_style = cast(AuthStyle, ctx.one_of(m, "auth_style", path, AUTH_STYLES, "bearer"))
    header_name = ctx.get(m, "header_name", path, str, "Authorization", v.check_header_name)
    if auth_style == "header" and m.get("header_name") is None:
        ctx.err(f"{path}.header_name",
                "auth_style 'header' needs an explicit header_name (the raw token goes there)")
    grant = None
    if m.get("token_grant") is not None:
        grant = _parse_grant(ctx, m["token_grant"], f"{path}.token_grant")
    if ctx.sink.error_count != before:
        return None
    return Credential(name, description, required, auth_style, header_name, grant)


def _parse_grant(ctx: _Ctx, raw: object, path: str) -> TokenGrant | None:
    m = ctx.mapping(raw, path, GRANT_KEYS, ("token_endpoint",))
    if m is None:
        return None
    before = ctx.sink.error_count
    endpoint = ctx.get(m, "token_endpoint", path, str, "", v.check_token_endpoint)
    audience = ctx.get(m, "audience", path, str, "", v.check_text)
    svid_audience = ctx.get(
        m, "jwt_svid_audience", path, str, v.default_svid_audience(endpoint), _nonempty_text
    )

    def assertion(value: str) -> str | None:
        allowed = ", ".join(sorted(ASSERTION_TYPES))
        return None if value in ASSERTION_TYPES else f"must be one of {allowed}"

    assertion_type = ctx.get(m, "client_assertion_type", path, str, JWT_BEARER, assertion)
    scopes = ctx.str_list(m, "scopes", path, v.check_scope) or ()
    ttl = ctx.get(m, "cache_ttl_seconds", path, int, 0, _positive) or None
    overrides: tuple[AudienceOverride, ...] = ()
    raw_overrides = m.get("audience_overrides")
    if raw_overrides is not None:
        if not isinstance(raw_overrides, list):
            got = _type_name(raw_overrides)
            ctx.err(f"{path}.audience_overrides", f"expected a list, got {got}")
        else:
            parsed = [
                _parse_override(ctx, item, f"{path}.audience_overrides[{i}]")
                for i, item in enumerate(raw_overrides)
            ]
            overrides = tuple(o for o in parsed if o is not None)
    if ctx.sink.error_count != before:
        return None
    return TokenGrant(endpoint, audience, svid_audience, assertion_type, scopes, ttl, overrides)


def _parse_override(ctx: _Ctx, raw: object, path: str) -> AudienceOverride | None:
    m = ctx.mapping(raw, path, OVERRIDE_KEYS, ())
    if m is None:
        return None
    host = ctx.get(m, "host", path, str, "", _host) or None
    port = ctx.get(m, "port", path, int, 0, v.check_port) or None
    opath = ctx.get(m, "path", path, str, "", _path) or None
    audience = (
        None if m.get("audience") is None
        else ctx.get(m, "audience", path, str, "", v.check_text)
    )
    scopes = ctx.str_list(m, "scopes", path, v.check_scope)
    if audience is None and scopes is None:
        ctx.warn(path, "override sets neither audience nor scopes: it changes nothing")
    return AudienceOverride(
        normalize_host(host) if host else None, port, opath, audience, scopes
    )


def _parse_endpoint(ctx: _Ctx, raw: object, path: str) -> Endpoint | None:
    m = ctx.mapping(raw, path, ENDPOINT_KEYS, ("host",))
    if m is None:
        return None
    before = ctx.sink.error_count
    host = normalize_host(ctx.get(m, "host", path, str, "", _host))
    ports = _parse_ports(ctx, m, path)
    epath = ctx.get(m, "path", path, str, "", _path) or None
    protocol = ctx.one_of(m, "protocol", path, PROTOCOLS, "rest")
    tls = ctx.get(m, "tls", path, str, "auto", _nonempty_text).lower()
    access = cast(Access, ctx.one_of(m, "access", path, ACCESS_VALUES, "read-only"))
    enforcement = cast(
        Enforcement, ctx.one_of(m, "enforcement", path, ENFORCEMENT_VALUES, "enforce")
    )
    nets = _parse_networks(ctx, m, path)
    if ctx.sink.error_count != before:
        return None
    return Endpoint(host, ports, epath, protocol, tls, access, enforcement, nets)


def _parse_ports(ctx: _Ctx, m: dict[str, Any], path: str) -> tuple[int, ...]:
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
            ctx.err(where, f"expected an integer, got {_type_name(item)}")
        elif (message := v.check_port(item)) is not None:
            ctx.err(where, message)
        elif item in out:
            ctx.err(where, f"duplicate port {item}")
        else:
            out.append(item)
    return tuple(out)


def _parse_networks(ctx: _Ctx, m: dict[str, Any], path: str) -> tuple[IPNetwork, ...]:
    raw = m.get("allowed_ips")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.err(f"{path}.allowed_ips", f"expected a list, got {_type_name(raw)}")
        return ()
    out: list[IPNetwork] = []
    for i, item in enumerate(raw):
        where = f"{path}.allowed_ips[{i}]"
        if not isinstance(item, str):
            ctx.err(where, f"expected a CIDR string, got {_type_name(item)}")
            continue
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as exc:
            ctx.err(where, f"not a valid CIDR ({exc})")
    return tuple(out)
