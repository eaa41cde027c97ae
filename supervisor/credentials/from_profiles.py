"""Static credentials of loaded profiles → the binding table's input, plus load-time rules.

A credential without ``token_grant`` is static; its variables are bound to every endpoint
of its profile (ARCHITECTURE.md 9).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from supervisor.credentials.scope import (
    AWS_KEY_ID,
    AWS_SECRET,
    BoundEndpoint,
    StaticCredential,
)
from supervisor.profiles.model import Endpoint, Profile


class _Sink(Protocol):
    def error(self, file: str, profile_id: str | None, path: str, message: str) -> None: ...


def _endpoint(ep: Endpoint) -> BoundEndpoint:
    return BoundEndpoint(
        host=ep.host,
        ports=ep.ports,
        path=ep.path,
        body_rewrite=ep.request_body_credential_rewrite,
        websocket_rewrite=ep.websocket_credential_rewrite,
        signing=ep.credential_signing,
        signing_service=ep.signing_service or None,
        signing_region=ep.signing_region or None,
        binaries=ep.binaries,
    )


def static_credentials(profiles: Iterable[Profile]) -> list[StaticCredential]:
    out: list[StaticCredential] = []
    for p in profiles:
        endpoints = tuple(_endpoint(ep) for ep in p.endpoints if ep.host)
        for c in p.credentials:
            if c.token_grant is None:
                out.append(StaticCredential(p.id, c.name, c.env_vars, c.required, endpoints))
    return out


def _static_variables(p: Profile) -> set[str]:
    return {v for c in p.credentials if c.token_grant is None for v in c.env_vars}


def check_static(p: Profile, sink: _Sink) -> None:
    """Load-time rules for static credentials (one diagnostic per problem).

    A placeholder can only be substituted in traffic the proxy parses: an endpoint with
    ``tls: skip`` or without an inspected ``protocol`` (a raw tunnel) in a profile with
    static credentials needs ``allow_uninspected_credentials: true``. An endpoint with
    ``credential_signing`` needs the profile to declare the AWS key variables.
    """
    variables = _static_variables(p)
    for i, ep in enumerate(p.endpoints):
        where = f"endpoints[{i}]"
        if variables and not ep.allow_uninspected_credentials:
            why = ("tls: skip" if ep.tls == "skip"
                   else "no inspected protocol (a raw tunnel)" if ep.protocol is None
                   else None)
            if why is not None:
                sink.error(
                    p.source, p.id, where,
                    f"static credentials cannot be substituted on an endpoint with {why}; "
                    "set allow_uninspected_credentials: true to accept that",
                )
        if ep.credential_signing is not None:
            missing = [v for v in (AWS_KEY_ID, AWS_SECRET) if v not in variables]
            if missing:
                sink.error(
                    p.source, p.id, f"{where}.credential_signing",
                    f"signing needs the profile to declare {' and '.join(missing)} "
                    "(a credential without token_grant)",
                )
