"""Raw YAML data → typed model objects, with a diagnostic for every problem found.

Profile, credential and token-grant fields live here; endpoints and their L7 rules in
``schema_endpoint``. Each parse function returns ``None`` (and has reported why) when its
input is invalid; the caller keeps going so that one run reports all problems.

Fields OpenShell's gateway uses and this supervisor does not (``discovery``,
``inference_capable``, ``refresh``, ``resource_version``, ``annotations``, ``source``,
``scope``) are type-checked and kept as metadata with no effect (ARCHITECTURE.md 4.1).
"""

from __future__ import annotations

import re
from typing import Any, cast

from supervisor.profiles import validation as v
from supervisor.profiles.diagnostics import Sink
from supervisor.profiles.hosts import normalize_host
from supervisor.profiles.model import (
    ASSERTION_TYPES,
    JWT_BEARER,
    AudienceOverride,
    AuthStyle,
    Credential,
    Endpoint,
    Profile,
    TokenGrant,
)
from supervisor.profiles.schema_ctx import Ctx, as_mapping, non_negative, positive, type_name
from supervisor.profiles.schema_endpoint import check_host, check_path, parse_endpoint
from supervisor.record import replace

PROFILE_KEYS = frozenset(
    {
        "id", "display_name", "description", "category", "credentials", "endpoints",
        "binaries",
        # gateway-side metadata: accepted, no effect here
        "inference_capable", "discovery", "resource_version", "annotations", "source",
        "scope",
    }
)
CREDENTIAL_KEYS = frozenset(
    {
        "name", "description", "required", "auth_style", "header_name", "token_grant",
        "env_vars", "query_param", "path_template", "refresh",
    }
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
REFRESH_KEYS = frozenset(
    {
        "strategy", "token_url", "scopes", "refresh_before_seconds", "max_lifetime_seconds",
        "material", "additional_outputs",
    }
)
MATERIAL_KEYS = frozenset({"name", "description", "required", "secret"})
OUTPUT_KEYS = frozenset({"output", "credential"})
DISCOVERY_KEYS = frozenset({"credentials"})
BINARY_KEYS = frozenset({"path", "harness"})

AUTH_STYLES = ("bearer", "header", "basic", "path", "query")
GRANT_AUTH_STYLES = ("bearer", "header")  # a token is injected as a header
# OpenShell's categories (it also accepts '-' for '_' and any case).
CATEGORIES = ("other", "inference", "agent", "source_control", "messaging", "data", "knowledge")
REFRESH_STRATEGIES = (
    "static", "external", "oauth2_refresh_token", "oauth2_client_credentials",
    "google_service_account_jwt", "aws_sts_assume_role",
)
PATH_PLACEHOLDER = "{credential}"

# OpenShell's profile id rule: lowercase kebab-case.
_PROFILE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# 'v<revision>_KEY' is OpenShell's revisioned-placeholder namespace.
_REVISIONED = re.compile(r"v[0-9]+_.+")
# The agent's environment carries no SPIFFE or supervisor variable (ARCHITECTURE.md 2, 3.3).
_RESERVED_ENV_PREFIXES = ("OPENSHELL_", "SPIFFE_")


def check_profile_id(value: str) -> str | None:
    if len(value) > 128 or _PROFILE_ID.fullmatch(value) is None:
        return ("must be lowercase kebab-case (a-z, 0-9 and single '-' between them), "
                "1-128 characters")
    return None


def check_env_var(value: str) -> str | None:
    if _ENV_VAR.fullmatch(value) is None or len(value) > 256:
        return "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
    if value.upper().startswith(_RESERVED_ENV_PREFIXES):
        return "OPENSHELL_* and SPIFFE_* variables are reserved for the supervisor"
    if _REVISIONED.fullmatch(value):
        return "names of the form v<digits>_NAME are reserved for revisioned placeholders"
    return None


def _nonempty_text(value: str) -> str | None:
    return "must not be empty" if not value else v.check_text(value)


def parse_profile(raw: object, file: str, index: int | None, sink: Sink) -> Profile | None:
    """One profile mapping → ``Profile``; ``None`` when anything in it is invalid."""
    prefix = f"[{index}]." if index is not None else ""
    ctx = Ctx(file, None, prefix, sink)
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(raw_id, str) and check_profile_id(raw_id) is None:
        ctx.profile_id, ctx.prefix = raw_id, ""
    if not isinstance(raw, dict):
        ctx.prefix = f"[{index}]" if index is not None else ""
    m = ctx.mapping(raw, "", PROFILE_KEYS, ("id",))
    if m is None:
        return None
    pid = ctx.get(m, "id", "", str, "", check_profile_id)
    display_name = ctx.get(m, "display_name", "", str, "", v.check_text)
    description = ctx.get(m, "description", "", str, "", v.check_multiline_text)
    category = ctx.get(m, "category", "", str, "", v.check_text)
    if category and category.strip().lower().replace("-", "_") not in CATEGORIES:
        ctx.warn("category", f"{category!r} is not one of OpenShell's categories "
                 f"({', '.join(CATEGORIES)}); it has no effect here")
    credentials = ctx.items(m, "credentials", "", _parse_credential) or ()
    endpoints = ctx.items(m, "endpoints", "", parse_endpoint) or ()
    binaries = ctx.items(m, "binaries", "", _parse_binary) or ()
    inference_capable = ctx.get(m, "inference_capable", "", bool, False)
    discovery = _parse_discovery(ctx, m.get("discovery"), [c.name for c in credentials])
    resource_version = ctx.get(m, "resource_version", "", int, 0, non_negative) or None
    annotations = _parse_annotations(ctx, m.get("annotations"))
    ctx.get(m, "source", "", str, "", v.check_text)
    ctx.get(m, "scope", "", str, "", v.check_text)
    raw_list = m.get("credentials")
    raw_creds: list[Any] = raw_list if isinstance(raw_list, list) else []
    _check_unique(ctx, [as_mapping(c).get("name") for c in raw_creds], "credentials", "name",
                  "credential")
    _check_env_vars(ctx, raw_creds)
    _check_unique(
        ctx, [f"{e.host} ports {list(e.ports)} path {e.path or '(any)'}" for e in endpoints],
        "endpoints", "", "endpoint",
    )
    if ctx.failed:
        return None
    if any(c.token_grant is not None for c in credentials):
        endpoints = tuple(_grant_endpoint(ep) for ep in endpoints)
    return Profile(
        id=pid, display_name=display_name, description=description, category=category,
        credentials=credentials, endpoints=endpoints,
        binaries=binaries, source=file, inference_capable=inference_capable,
        discovery_credentials=discovery, resource_version=resource_version,
        annotations=annotations,
    )


def _grant_endpoint(ep: Endpoint) -> Endpoint:
    """A token is injected only into inspected requests: an endpoint of a profile with a
    token grant is inspected as ``rest`` even without ``protocol`` (deliberate: OpenShell
    refuses credentialed L4 endpoints), read-only unless ``access``/``rules`` say more —
    the meaning such profiles had before OpenShell compatibility."""
    if ep.protocol is not None:
        return ep
    access = ep.access if ep.access is not None or ep.rules is not None else "read-only"
    return replace(ep, protocol="rest", access=access)


def _check_unique(
    ctx: Ctx, keys: list[Any], list_path: str, key: str, what: str
) -> None:
    """``keys`` are in the raw list's order (so reported indexes are the file's)."""
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            continue
        if k in first:
            suffix = f".{key}" if key else ""
            ctx.err(f"{list_path}[{i}]{suffix}",
                    f"duplicate {what} {k!r} (same as {list_path}[{first[k]}])")
        else:
            first[k] = i


def _check_env_vars(ctx: Ctx, raw_creds: list[Any]) -> None:
    """One variable belongs to one credential of a profile (OpenShell's rule)."""
    owner: dict[str, str] = {}
    for i, raw in enumerate(raw_creds):
        env_vars = as_mapping(raw).get("env_vars")
        for j, var in enumerate(env_vars if isinstance(env_vars, list) else []):
            if not isinstance(var, str):
                continue
            if var in owner:
                ctx.err(f"credentials[{i}].env_vars[{j}]",
                        f"duplicate credential env var {var!r} (also in {owner[var]})")
            else:
                owner[var] = f"credentials[{i}]"


def _parse_binary(ctx: Ctx, raw: object, path: str) -> str | None:
    """A path string, or OpenShell's ``{path, harness}`` object form."""
    if isinstance(raw, dict):
        m = ctx.mapping(raw, path, BINARY_KEYS, ("path",))
        if m is None:
            return None
        ctx.get(m, "harness", path, bool, False)
        value = ctx.get(m, "path", path, str, "", v.check_binary)
        return value or None
    if not isinstance(raw, str):
        ctx.err(path, f"expected a path string or a mapping, got {type_name(raw)}")
        return None
    message = v.check_binary(raw)
    if message is not None:
        ctx.err(path, message)
        return None
    return raw


def _parse_discovery(ctx: Ctx, raw: object, names: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    m = ctx.mapping(raw, "discovery", DISCOVERY_KEYS)
    if m is None:
        return ()
    listed = ctx.str_list(m, "credentials", "discovery") or ()
    seen: set[str] = set()
    for i, name in enumerate(listed):
        where = f"discovery.credentials[{i}]"
        if name in seen:
            ctx.err(where, f"duplicate discovery credential {name!r}")
        elif name not in names:
            ctx.err(where, f"unknown credential {name!r} (not in this profile's credentials)")
        seen.add(name)
    return listed


def _parse_annotations(ctx: Ctx, raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        ctx.err("annotations", f"expected a mapping of strings, got {type_name(raw)}")
        return ()
    out: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str):
            ctx.err(f"annotations.{key}", "keys and values must be strings")
            continue
        out.append((key, value))
    return tuple(sorted(out))


def _parse_credential(ctx: Ctx, raw: object, path: str) -> Credential | None:
    m = ctx.mapping(raw, path, CREDENTIAL_KEYS, ("name",))
    if m is None:
        return None
    before = ctx.sink.error_count
    name = ctx.get(m, "name", path, str, "", v.check_identifier)
    description = ctx.get(m, "description", path, str, "", v.check_multiline_text)
    required = ctx.get(m, "required", path, bool, False)
    raw_grant = m.get("token_grant")
    styles = GRANT_AUTH_STYLES if raw_grant is not None else AUTH_STYLES
    style_text = ctx.get(m, "auth_style", path, str, "", None).strip().lower() or "bearer"
    if style_text not in styles:
        why = " (a token_grant credential is injected as a header)" if raw_grant else ""
        ctx.err(f"{path}.auth_style", f"must be one of {', '.join(styles)}{why}")
    auth_style = cast(AuthStyle, style_text)
    header_name = ctx.get(m, "header_name", path, str, "Authorization", v.check_header_name)
    if auth_style == "header" and m.get("header_name") is None:
        ctx.err(f"{path}.header_name",
                "auth_style 'header' needs an explicit header_name (the raw token goes there)")
    env_vars = ctx.str_list(m, "env_vars", path, check_env_var) or ()
    query_param = ctx.opt_str(m, "query_param", path, v.check_text)
    if auth_style == "query" and query_param is None:
        ctx.err(f"{path}.query_param", "auth_style 'query' needs query_param")
    path_template = ctx.opt_str(m, "path_template", path, v.check_text)
    if auth_style == "path":
        count = (path_template or "").count(PATH_PLACEHOLDER)
        if count != 1:
            ctx.err(f"{path}.path_template",
                    f"auth_style 'path' needs a path_template containing {PATH_PLACEHOLDER} "
                    f"exactly once (found {count})")
    has_refresh = m.get("refresh") is not None
    if has_refresh:
        _parse_refresh(ctx, m["refresh"], f"{path}.refresh")
    grant = None
    if raw_grant is not None:
        grant = _parse_grant(ctx, raw_grant, f"{path}.token_grant")
    if ctx.sink.error_count != before:
        return None
    return Credential(
        name, description, required, auth_style, header_name, grant,
        env_vars=env_vars, query_param=query_param, path_template=path_template,
        has_refresh=has_refresh,
    )


def _parse_refresh(ctx: Ctx, raw: object, path: str) -> None:
    """Gateway-side credential refresh: shape checked only (the gateway mints, not us)."""
    m = ctx.mapping(raw, path, REFRESH_KEYS, ("strategy",))
    if m is None:
        return

    def strategy(value: str) -> str | None:
        norm = value.strip().lower().replace("-", "_")
        return None if norm in REFRESH_STRATEGIES else (
            f"must be one of {', '.join(REFRESH_STRATEGIES)}"
        )

    ctx.get(m, "strategy", path, str, "", strategy)
    ctx.get(m, "token_url", path, str, "", v.check_text)
    ctx.str_list(m, "scopes", path, v.check_text)
    ctx.get(m, "refresh_before_seconds", path, int, 0, non_negative)
    ctx.get(m, "max_lifetime_seconds", path, int, 0, non_negative)

    def material(c: Ctx, item: object, where: str) -> str | None:
        mm = c.mapping(item, where, MATERIAL_KEYS, ("name",))
        if mm is None:
            return None
        c.get(mm, "description", where, str, "", v.check_text)
        c.get(mm, "required", where, bool, False)
        c.get(mm, "secret", where, bool, False)
        return c.get(mm, "name", where, str, "", _nonempty_text) or None

    def output(c: Ctx, item: object, where: str) -> str | None:
        mm = c.mapping(item, where, OUTPUT_KEYS, ("output", "credential"))
        if mm is None:
            return None
        c.get(mm, "credential", where, str, "", _nonempty_text)
        return c.get(mm, "output", where, str, "", _nonempty_text) or None

    names = ctx.items(m, "material", path, material) or ()
    _check_unique(ctx, list(names), f"{path}.material", "name", "refresh material")
    ctx.items(m, "additional_outputs", path, output)


def _parse_grant(ctx: Ctx, raw: object, path: str) -> TokenGrant | None:
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
    ttl = ctx.get(m, "cache_ttl_seconds", path, int, 0, positive) or None
    overrides = ctx.items(m, "audience_overrides", path, _parse_override) or ()
    if ctx.sink.error_count != before:
        return None
    return TokenGrant(endpoint, audience, svid_audience, assertion_type, scopes, ttl, overrides)


def _parse_override(ctx: Ctx, raw: object, path: str) -> AudienceOverride | None:
    m = ctx.mapping(raw, path, OVERRIDE_KEYS)
    if m is None:
        return None
    host = ctx.get(m, "host", path, str, "", check_host) or None
    port = ctx.get(m, "port", path, int, 0, v.check_port) or None
    opath = ctx.get(m, "path", path, str, "", check_path) or None
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
