"""Static credentials of loaded profiles → the binding table's input, plus load-time rules.

A credential without ``token_grant`` is static; its variables are bound to every endpoint
of its profile. Reads the profile model's OpenShell fields (``env_vars``, the endpoint's
rewrite and signing options) where the model has them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from supervisor.credentials.scope import SIGNING_MODES, BoundEndpoint, Signing, StaticCredential


def _signing(value: Any) -> Signing | None:
    for mode in SIGNING_MODES:
        if value == mode:
            return mode
    return None


def _endpoint(ep: Any) -> BoundEndpoint:
    return BoundEndpoint(
        host=ep.host,
        ports=tuple(ep.ports),
        path=ep.path,
        body_rewrite=bool(getattr(ep, "request_body_credential_rewrite", False)),
        websocket_rewrite=bool(getattr(ep, "websocket_credential_rewrite", False)),
        signing=_signing(getattr(ep, "credential_signing", None)),
        signing_service=getattr(ep, "signing_service", None) or None,
        signing_region=getattr(ep, "signing_region", None) or None,
    )


def static_credentials(profiles: Iterable[Any]) -> list[StaticCredential]:
    out: list[StaticCredential] = []
    for p in profiles:
        endpoints = tuple(_endpoint(ep) for ep in p.endpoints if getattr(ep, "host", None))
        for c in p.credentials:
            if c.token_grant is not None:
                continue
            env_vars = tuple(getattr(c, "env_vars", ()) or ())
            out.append(StaticCredential(p.id, c.name, env_vars, bool(c.required), endpoints))
    return out


def uninspected_problems(profiles: Iterable[Any]) -> list[tuple[str, str, str]]:
    """(profile id, field path, reason) for static credentials on uninspectable endpoints.

    A placeholder can only be substituted in traffic the proxy parses: an endpoint with
    ``tls: skip`` or without an inspected ``protocol`` (a raw tunnel) needs
    ``allow_uninspected_credentials: true`` when its profile declares static credentials.
    """
    problems: list[tuple[str, str, str]] = []
    for p in profiles:
        if not any(c.token_grant is None and getattr(c, "env_vars", ()) for c in p.credentials):
            continue
        for i, ep in enumerate(p.endpoints):
            if getattr(ep, "allow_uninspected_credentials", False):
                continue
            if ep.tls == "skip":
                why = "tls: skip"
            elif not ep.protocol:
                why = "no inspected protocol (a raw tunnel)"
            else:
                continue
            problems.append((
                p.id, f"endpoints[{i}]",
                f"static credentials cannot be substituted on an endpoint with {why}; "
                "set allow_uninspected_credentials: true to accept that",
            ))
    return problems
