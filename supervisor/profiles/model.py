"""Typed, immutable provider-profile objects and the bindings derived from them.

Everything here is plain data: loading and validation live in ``loader.py`` and
``validation.py``, matching in ``matcher.py``. Objects are frozen so a profile set can be
swapped atomically on reload and shared across threads without locks.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from supervisor.record import field, record

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AuthStyle = Literal["bearer", "header", "basic", "path", "query"]
Access = Literal["read-only", "read-write", "full"]
Enforcement = Literal["enforce", "audit"]
# L7 protocols whose requests are inspected one by one (ARCHITECTURE.md 4.1); an endpoint
# without one (or with the explicit L4 spelling 'tcp', stored as None) is a tunnel.
INSPECTED_PROTOCOLS = ("rest", "websocket", "graphql", "json-rpc", "mcp")
CredentialSigning = Literal["sigv4", "sigv4:body", "sigv4:no_body"]
DEFAULT_INSPECT_BODY_BYTES = 64 * 1024  # graphql_max_body_bytes / mcp / json_rpc default

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
ASSERTION_TYPES = frozenset({JWT_BEARER, JWT_SPIFFE})

# Methods each access preset allows (ARCHITECTURE.md 4).
ACCESS_METHODS: dict[str, frozenset[str] | None] = {
    "read-only": frozenset({"GET", "HEAD", "OPTIONS"}),
    "read-write": frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}),
    "full": None,  # every method
}


@record
class AudienceOverride:
    """Per-endpoint audience/scopes. ``None`` fields inherit from the endpoint/grant."""

    host: str | None
    port: int | None
    path: str | None
    audience: str | None
    scopes: tuple[str, ...] | None


@record
class TokenGrant:
    token_endpoint: str
    audience: str  # "" = not sent
    jwt_svid_audience: str  # effective value (default already applied)
    client_assertion_type: str
    scopes: tuple[str, ...]
    cache_ttl_seconds: int | None
    audience_overrides: tuple[AudienceOverride, ...]


@record
class Credential:
    """A token-grant credential (``token_grant`` set: the proxy injects a header) or a
    static one (``token_grant`` None: ARCHITECTURE.md 9; its runtime lives in the
    static-credential engine). ``auth_style``/``header_name``/``query_param``/
    ``path_template`` are placement metadata for static credentials (validated as
    OpenShell does) and the injection style for token grants (bearer/header only)."""

    name: str
    description: str
    required: bool
    auth_style: AuthStyle
    header_name: str
    token_grant: TokenGrant | None
    env_vars: tuple[str, ...] = ()  # static: variables holding the value, in order
    query_param: str | None = None  # auth_style 'query'
    path_template: str | None = None  # auth_style 'path': contains '{credential}' once
    has_refresh: bool = False  # gateway-only 'refresh' block present (no effect here)

    @property
    def is_static(self) -> bool:
        return self.token_grant is None


@record
class ValueMatcher:
    """A query/params/tool matcher: one glob (``tag: "v1.*"``) or ``{any: [...]}``."""

    globs: tuple[str, ...]  # matches when any glob matches


@record
class L7Rule:
    """One allow rule (the ``allow`` object of a ``rules`` entry) or one deny rule.

    REST/WebSocket use method/path/query; GraphQL operation_type/operation_name/fields;
    JSON-RPC method; MCP method and tool (``tool`` or ``params.name``). ``None`` = the
    field was not given (matches anything where that is allowed).
    """

    method: str | None = None  # REST/WebSocket: upper-case; JSON-RPC/MCP: as written
    path: str | None = None  # glob, '/' separated; '**' = any path
    query: tuple[tuple[str, ValueMatcher], ...] = ()  # decoded name → matcher
    operation_type: str | None = None  # query | mutation | subscription | '*'
    operation_name: str | None = None  # glob
    fields: tuple[str, ...] = ()  # root-field globs
    tool: ValueMatcher | None = None  # MCP tools/call params.name


@record
class GraphqlOperation:
    """A registered persisted query: what the hash or saved-query id stands for."""

    operation_type: str
    operation_name: str | None = None
    fields: tuple[str, ...] = ()


@record
class McpOptions:
    strict_tool_names: bool = True
    allow_all_known_mcp_methods: bool = False
    max_body_bytes: int = DEFAULT_INSPECT_BODY_BYTES


@record
class Endpoint:
    host: str  # lower-case, trailing dot removed; may contain '*' / '**' labels
    ports: tuple[int, ...]
    path: str | None  # glob; None = any path
    protocol: str | None  # one of INSPECTED_PROTOCOLS; None = L4 (no protocol / 'tcp')
    tls: str  # "skip" = never intercept; anything else = intercept when needed
    access: Access | None  # None = not given
    enforcement: Enforcement
    allowed_ips: tuple[IPNetwork, ...]
    rules: tuple[L7Rule, ...] | None = None  # explicit allow rules (exclusive with access)
    deny_rules: tuple[L7Rule, ...] = ()
    allow_encoded_slash: bool = False
    websocket_credential_rewrite: bool = False
    request_body_credential_rewrite: bool = False
    allow_uninspected_credentials: bool = False
    credential_signing: CredentialSigning | None = None
    signing_service: str | None = None
    signing_region: str | None = None
    persisted_queries: Literal["deny", "allow_registered"] = "deny"
    graphql_persisted_queries: tuple[tuple[str, GraphqlOperation], ...] = ()
    graphql_max_body_bytes: int = DEFAULT_INSPECT_BODY_BYTES
    json_rpc_max_body_bytes: int = DEFAULT_INSPECT_BODY_BYTES
    mcp: McpOptions = McpOptions()
    # The compiled L7 rules (rules.py), filled on first use; not part of the value.
    l7_cache: object = field(default=None, compare=False, hash=False, repr=False)

    # Executables (path globs) allowed to use it; None = any process (ARCHITECTURE.md 11).
    binaries: tuple[str, ...] | None = None

    @property
    def inspected(self) -> bool:
        """Declared with an inspected protocol and not opted out of TLS interception."""
        return self.protocol is not None and self.tls != "skip"

    def allows_method(self, method: str) -> bool:
        """The ``access`` preset's method set (no preset = no method limit)."""
        allowed = ACCESS_METHODS[self.access] if self.access is not None else None
        return allowed is None or method in allowed


@record
class Profile:
    id: str
    display_name: str
    description: str
    category: str
    credentials: tuple[Credential, ...]
    endpoints: tuple[Endpoint, ...]
    binaries: tuple[str, ...]
    source: str  # file the profile came from (for diagnostics)
    # Gateway-side metadata (ARCHITECTURE.md 4.1): accepted and type-checked, no effect here.
    inference_capable: bool = False
    discovery_credentials: tuple[str, ...] = ()
    resource_version: int | None = None
    annotations: tuple[tuple[str, str], ...] = ()


@record
class GrantSpec:
    """Everything a token grant depends on; with the binding id it forms the cache key."""

    token_endpoint: str
    jwt_svid_audience: str
    client_assertion_type: str
    audience: str  # "" = not sent
    scopes: tuple[str, ...]  # empty = not sent
    cache_ttl_seconds: int | None


@record
class Binding:
    """One (host pattern, port, path) bound to one credential of one profile."""

    id: str  # stable, printable: "<profile>/<credential>@<host>:<port><path>"
    profile_id: str
    credential_name: str
    host: str  # pattern, normalized like Endpoint.host
    port: int
    path: str | None  # glob; None = any path
    auth_style: AuthStyle
    header_name: str
    grant: GrantSpec
    endpoint: Endpoint  # the endpoint this binding was expanded from

    def header_value(self, token: str) -> str:
        return f"Bearer {token}" if self.auth_style == "bearer" else token
