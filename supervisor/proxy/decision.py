"""Per-request egress decision: declared destination, access preset, cleartext rule."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from supervisor.profiles.model import Binding, Endpoint
from supervisor.proxy import errors
from supervisor.proxy.egress import CONTROL_PLANE_PORTS, cleartext_injection_allowed
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import echo_method
from supervisor.proxy.policy import RoutePolicy

TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


@dataclass(frozen=True, slots=True)
class Decision:
    endpoint: Endpoint
    binding: Binding | None
    audit_violation: str | None  # access rule broken on an ``enforcement: audit`` endpoint


def decide(
    policy: RoutePolicy,
    *,
    method: str,
    scheme: str,
    host: str,
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
) -> Decision:
    """Raise ``ProxyError`` when the request may not leave; else what applies to it."""
    echo = echo_method(method, headers)
    if echo is not None:
        # Whatever the policy: the response would echo the request, credential included.
        raise ProxyError(
            errors.POLICY_DENIED,
            f"method {echo} is never forwarded: the response would echo the request",
        )
    if port in CONTROL_PLANE_PORTS:
        raise ProxyError(errors.SSRF_DENIED, f"port {port} is a control-plane port")
    endpoint = policy.match_endpoint(host, port, path)
    if endpoint is None:
        if policy.declares(host, port):
            raise ProxyError(errors.POLICY_DENIED, f"path not declared for {host}:{port}")
        raise ProxyError(errors.POLICY_DENIED, f"{host}:{port} is not a declared endpoint")
    violation = None
    if not endpoint.allows_method(method):
        violation = f"method {method} not allowed by access {endpoint.access}"
        if endpoint.enforcement == "enforce":
            raise ProxyError(errors.POLICY_DENIED, violation)
    binding = policy.match_binding(host, port, path)
    if binding is not None and scheme != "https" and not cleartext_injection_allowed(host):
        raise ProxyError(errors.POLICY_DENIED, "credential would travel in cleartext")
    return Decision(endpoint, binding, violation)


def credential_header(binding: Binding, token: str) -> tuple[str, str]:
    """The one header to add; the token is re-checked here, right before it is written."""
    if not TOKEN68.fullmatch(token):
        raise ProxyError(errors.TOKEN_GRANT_FAILED, "token grant returned a malformed token")
    return binding.header_name.strip(), binding.header_value(token)
