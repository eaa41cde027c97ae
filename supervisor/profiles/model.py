"""Typed, immutable provider-profile objects and the bindings derived from them.

Everything here is plain data: loading and validation live in ``loader.py`` and
``validation.py``, matching in ``matcher.py``. Objects are frozen so a profile set can be
swapped atomically on reload and shared across threads without locks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AuthStyle = Literal["bearer", "header"]
Access = Literal["read-only", "read-write", "full"]
Enforcement = Literal["enforce", "audit"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
ASSERTION_TYPES = frozenset({JWT_BEARER, JWT_SPIFFE})

# Methods each access preset allows (ARCHITECTURE.md 4).
ACCESS_METHODS: dict[str, frozenset[str] | None] = {
    "read-only": frozenset({"GET", "HEAD", "OPTIONS"}),
    "read-write": frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}),
    "full": None,  # every method
}


@dataclass(frozen=True, slots=True)
class AudienceOverride:
    """Per-endpoint audience/scopes. ``None`` fields inherit from the endpoint/grant."""

    host: str | None
    port: int | None
    path: str | None
    audience: str | None
    scopes: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    token_endpoint: str
    audience: str  # "" = not sent
    jwt_svid_audience: str  # effective value (default already applied)
    client_assertion_type: str
    scopes: tuple[str, ...]
    cache_ttl_seconds: int | None
    audience_overrides: tuple[AudienceOverride, ...]


@dataclass(frozen=True, slots=True)
class Credential:
    name: str
    description: str
    required: bool
    auth_style: AuthStyle
    header_name: str
    token_grant: TokenGrant | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # lower-case, trailing dot removed; may contain '*' / '**' labels
    ports: tuple[int, ...]
    path: str | None  # glob; None = any path
    protocol: str
    tls: str  # "skip" = never intercept; anything else = intercept when needed
    access: Access
    enforcement: Enforcement
    allowed_ips: tuple[IPNetwork, ...]

    def allows_method(self, method: str) -> bool:
        allowed = ACCESS_METHODS[self.access]
        return allowed is None or method in allowed


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    display_name: str
    description: str
    category: str
    credentials: tuple[Credential, ...]
    endpoints: tuple[Endpoint, ...]
    binaries: tuple[str, ...]
    source: str  # file the profile came from (for diagnostics)


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """Everything a token grant depends on; with the binding id it forms the cache key."""

    token_endpoint: str
    jwt_svid_audience: str
    client_assertion_type: str
    audience: str  # "" = not sent
    scopes: tuple[str, ...]  # empty = not sent
    cache_ttl_seconds: int | None


@dataclass(frozen=True, slots=True)
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
