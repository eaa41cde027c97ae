"""Per-request egress decision: declared destination, L7 rules, cleartext rule.

A table that knows L7 routing (``supervisor.profiles.matcher.PolicyTable``: the
``L7Table`` protocol) gets OpenShell's decision (ARCHITECTURE.md 4.2, ``profiles/l7.py``):
the path is canonicalized (judged and forwarded in that form), every endpoint bearing on
the request is consulted, and a GraphQL/JSON-RPC/MCP body is judged once read (the
decision then carries ``pending``). Other tables (test fakes) get the single-endpoint
access-preset decision.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from supervisor.credentials.placeholders import redact
from supervisor.grants.errors import GrantError
from supervisor.profiles.canonical import CanonicalError
from supervisor.profiles.l7 import (
    L7Table,
    Plan,
    enforced_denial,
    judge_request,
    plan_request,
    websocket_text_denial,
)
from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.model import Binding, Endpoint
from supervisor.profiles.rules import WEBSOCKET_TEXT, Verdict
from supervisor.proxy import errors
from supervisor.proxy import method_override as mo
from supervisor.proxy.egress import CONTROL_PLANE_PORTS, cleartext_injection_allowed
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import echo_method
from supervisor.proxy.policy import (
    BinaryJudge,
    RoutePolicy,
    connect_needs_inspection,
    may_inject,
)

TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


@dataclass(frozen=True, slots=True)
class Decision:
    endpoint: Endpoint
    binding: Binding | None
    audit_violation: str | None  # access rule broken on an ``enforcement: audit`` endpoint
    path: str | None = None  # canonical path to forward (None: forward the agent's)
    pending: Plan | None = None  # a body to read (bounded) and judge before forwarding
    private_ok: bool = False  # exact declared host: RFC 1918 answers allowed (10.1)
    # A WebSocket upgrade whose client text messages the rules deny: the relay closes the
    # connection (1008) at the first one. None: text messages are allowed (or audited).
    ws_text_denied: str | None = None


def decide(
    policy: RoutePolicy,
    *,
    method: str,
    scheme: str,
    host: str,
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    binary: BinaryJudge | None = None,
    query: str = "",
    has_body: bool = False,
) -> Decision:
    """Raise ``ProxyError`` when the request may not leave; else what applies to it.

    ``binary`` judges the connecting executable against endpoints with ``binaries``
    (none given: such endpoints are refused)."""
    echo = echo_method(method, headers)
    if echo is not None:
        # Whatever the policy: the response would echo the request, credential included.
        raise ProxyError(
            errors.POLICY_DENIED,
            f"method {echo} is never forwarded: the response would echo the request",
        )
    if port in CONTROL_PLANE_PORTS:
        raise ProxyError(errors.SSRF_DENIED, f"port {port} is a control-plane port")
    if _is_l7(policy):
        return _decide_l7(
            policy, method, scheme, host, port, path, query, headers, has_body, binary
        )
    if "%2f" in path.lower():  # only the L7 table knows allow_encoded_slash: refuse
        raise ProxyError(errors.BAD_REQUEST, "encoded '/' (%2F) in path")
    endpoint = policy.match_endpoint(host, port, path)
    if endpoint is None:
        if policy.declares(host, port):
            raise ProxyError(errors.POLICY_DENIED, f"path not declared for {host}:{port}")
        raise ProxyError(errors.POLICY_DENIED, f"{host}:{port} is not a declared endpoint")
    endpoint = _endpoint_for_binary(policy, endpoint, host, port, path, binary)
    if not_yet_enforced(endpoint):
        raise ProxyError(errors.POLICY_DENIED, "endpoint rules need the profile table")
    violation = None
    if not endpoint.allows_method(method):
        violation = f"method {method} not allowed by access {endpoint.access}"
        if endpoint.enforcement == "enforce":
            raise ProxyError(errors.POLICY_DENIED, violation)
    binding = policy.match_binding(host, port, path)
    if binding is not None and not _binary_ok(binding.endpoint.binaries, binary):
        # A credential serves its own profile's binaries only, whatever let the request out.
        binding = policy.match_binding(
            host, port, path, usable=lambda b: _binary_ok(b.endpoint.binaries, binary)
        )
    if binding is not None and scheme != "https" and not cleartext_injection_allowed(host):
        raise ProxyError(errors.POLICY_DENIED, "credential would travel in cleartext")
    return Decision(endpoint, binding, violation)


def _is_l7(policy: RoutePolicy) -> TypeGuard[L7Table]:
    # The profile table is the common case: an exact type test spares it the protocol
    # check's walk over the protocol's attributes (a few microseconds per request); any
    # other table (a test fake) is checked structurally as before.
    return type(policy) is PolicyTable or isinstance(policy, L7Table)


def _binary_ok(binaries: tuple[str, ...] | None, judge: BinaryJudge | None) -> bool:
    return binaries is None or (judge is not None and judge.allows(binaries))


def _endpoint_for_binary(
    policy: RoutePolicy, endpoint: Endpoint, host: str, port: int, path: str,
    judge: BinaryJudge | None,
) -> Endpoint:
    """The most specific matching endpoint whose binaries allow the connecting process
    (any matching one may allow it); none -> 403 ``binary_denied`` naming the binary."""
    if _binary_ok(endpoint.binaries, judge):
        return endpoint
    usable = policy.match_endpoint(
        host, port, path, usable=lambda e: _binary_ok(e.binaries, judge)
    )
    if usable is None:
        raise _binary_denied(host, port, judge)
    return usable


def _binary_denied(host: str, port: int, judge: BinaryJudge | None) -> BinaryDenied:
    """403 ``binary_denied`` naming the connecting binary (or why it is unknown)."""
    who = judge.denial() if judge is not None else "binary identity unavailable"
    return BinaryDenied(f"{host}:{port}: {who}", judge.binary() if judge else None)


class BinaryDenied(ProxyError):
    """403 ``binary_denied``; ``binary`` names the executable for the audit event."""

    def __init__(self, detail: str, binary: str | None) -> None:
        super().__init__(errors.BINARY_DENIED, detail)
        self.binary = binary


@dataclass(frozen=True, slots=True)
class ConnectDecision:
    """What a CONNECT becomes: an intercepted tunnel (every request inside it then goes
    through ``decide``) or a raw byte tunnel to ``endpoint``."""

    intercept: bool
    endpoint: Endpoint | None  # the raw tunnel's endpoint (its allowed_ips); None if intercepted
    private_ok: bool = False  # exact declared host: RFC 1918 answers allowed (10.1)


def decide_connect(
    policy: RoutePolicy, *, host: str, port: int, can_intercept: bool,
    binary: BinaryJudge | None = None,
) -> ConnectDecision:
    """Raise ``ProxyError`` when no tunnel to (host, port) may open; else which kind.

    A tunnel is intercepted when requests inside it must be seen one by one (a credential
    to inject, an access rule, paths to tell apart) unless the endpoint says ``tls: skip``.
    """
    if port in CONTROL_PLANE_PORTS:
        raise ProxyError(errors.SSRF_DENIED, f"port {port} is a control-plane port")
    if not policy.declares(host, port):
        raise ProxyError(errors.POLICY_DENIED, f"{host}:{port} is not a declared endpoint")
    endpoint = policy.match_endpoint(host, port, "/")
    # A 'tls: skip' never turns a credentialed host into a raw tunnel (the loader refuses
    # such a set too): the binding and the rules of that host would silently be gone.
    skip = (
        endpoint is not None and endpoint.tls == "skip" and not may_inject(policy, host, port)
    )
    if not skip and connect_needs_inspection(policy, host, port):
        if not can_intercept:
            raise ProxyError(
                errors.POLICY_DENIED,
                f"{host}:{port} needs request inspection but interception is off",
            )
        return ConnectDecision(True, None)
    if endpoint is None:
        raise ProxyError(errors.POLICY_DENIED, f"{host}:{port} is declared for some paths only")
    # A raw tunnel carries no requests to judge later: the binary is judged now.
    endpoint = _endpoint_for_binary(policy, endpoint, host, port, "/", binary)
    private_ok = _is_l7(policy) and policy.declared_exactly(host, port)
    return ConnectDecision(False, endpoint, private_ok)


def _header_has(headers: Sequence[tuple[str, str]], name: str, token: str) -> bool:
    # Loops, not generator expressions: this runs twice per request.
    for k, v in headers:
        if k.lower() == name:
            for t in v.split(","):
                if t.strip().split(";")[0].strip().lower() == token:
                    return True
    return False


def _decide_l7(
    table: L7Table, method: str, scheme: str, host: str, port: int, path: str, query: str,
    headers: Sequence[tuple[str, str]], has_body: bool, binary: BinaryJudge | None,
) -> Decision:
    try:
        plan = plan_request(
            table, host, port, method, path, query,
            accept_event_stream=_header_has(headers, "accept", "text/event-stream"),
            has_body=has_body,
            usable=lambda e: _binary_ok(e.binaries, binary),
        )
    except CanonicalError as exc:
        raise ProxyError(errors.BAD_REQUEST, f"path refused: {exc}") from None
    route = plan.route
    if not route.declared:
        raise ProxyError(errors.POLICY_DENIED, f"{host}:{port} is not a declared endpoint")
    if not route.matching:
        if route.binary_refused:
            raise _binary_denied(host, port, binary)
        raise ProxyError(errors.POLICY_DENIED, f"path not declared for {host}:{port}")
    endpoint = route.selected or route.matching[0]
    # A credential serves its own profile's binaries only, whatever let the request out.
    binding = table.match_binding(
        host, port, plan.path, usable=lambda b: _binary_ok(b.endpoint.binaries, binary)
    )
    if binding is not None and scheme != "https" and not cleartext_injection_allowed(host):
        raise ProxyError(errors.POLICY_DENIED, "credential would travel in cleartext")
    private_ok = table.declared_exactly(host, port)
    if (plan.body is None and has_body and route.inspected
            and mo.body_may_override(method, headers) and _override_matters(plan, method)):
        plan = dataclasses.replace(plan, body="form", body_limit=mo.BODY_LIMIT)
    if plan.body is not None:
        return Decision(endpoint, binding, None, plan.path, plan, private_ok)
    upgrade = _header_has(headers, "upgrade", "websocket")
    violation = judge_l7(plan, method, None, headers, upgrade=upgrade)
    ws_text = None
    if upgrade:
        ws_text = websocket_text_denial(plan)
        ws_text = redact(ws_text) if ws_text is not None else None
        if ws_text is not None and plan.audit_only and not enforced_denial(
            plan, WEBSOCKET_TEXT
        ):  # an enforce endpoint's denial of text messages holds (judge_l7)
            violation, ws_text = violation or ws_text, None
    return Decision(endpoint, binding, violation, plan.path, None, private_ok, ws_text)


def judge_l7(
    plan: Plan, method: str, body: bytes | None, headers: Sequence[tuple[str, str]],
    *, upgrade: bool | None = None,
) -> str | None:
    """``None`` when allowed; the reason when only audited; ``ProxyError`` when denied.
    ``upgrade``: whether ``headers`` ask for a WebSocket upgrade, when the caller knows."""
    if upgrade is None:
        upgrade = _header_has(headers, "upgrade", "websocket")
    verdict = judge_request(plan, method, body, upgrade=upgrade)
    others = mo.override_methods(method, headers, plan.query)
    if plan.body == "form":
        others += [m for m in mo.body_overrides(method, body or b"") if m not in others]
    for other in others:
        if not verdict.allowed:
            break
        # The upstream may run the request as the overriding method (method_override.py):
        # it must pass the rules as that method too.
        verdict = judge_request(plan, other, body, upgrade=upgrade)
        if not verdict.allowed:
            verdict = Verdict(False, f"method override to {other}: {verdict.reason}")
    if verdict.allowed:
        return None
    # The reason names the path: a credential placeholder in it never reaches a log line.
    reason = redact(verdict.reason)
    if plan.audit_only and not any(
        enforced_denial(plan, m, body) for m in (method, *others)
    ):
        return reason
    raise ProxyError(errors.POLICY_DENIED, reason)


def _override_matters(plan: Plan, method: str) -> bool:
    """Would the rules judge this request differently under some override? Only then is
    a body read for a '_method' field (most hosts allow or deny every method alike)."""
    allowed = judge_request(plan, method).allowed
    return allowed and not all(judge_request(plan, m).allowed for m in mo.OVERRIDABLE)


def not_yet_enforced(endpoint: Endpoint) -> bool:
    """Rules only the profile table's L7 decision can judge: a table without it (a test
    fake) refuses them rather than over-granting (fail closed)."""
    return (
        endpoint.rules is not None
        or bool(endpoint.deny_rules)
        or endpoint.protocol in ("graphql", "json-rpc", "mcp")
    )


def credential_header(binding: Binding, token: str) -> tuple[str, str]:
    """The one header to add; the token is re-checked here, right before it is written."""
    if not TOKEN68.fullmatch(token):
        raise ProxyError(errors.TOKEN_GRANT_FAILED, "token grant returned a malformed token")
    return binding.header_name.strip(), binding.header_value(token)


class CredentialHeaders:
    """``credential_header`` remembering its last answer: most requests inject the cached
    token of the same binding, and a token is an immutable str, so the one that passed the
    check passes it again (the check is a regex over the whole token, often a long JWT).
    One per proxy; anything else (another binding or token object) is checked afresh."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[Binding, str, tuple[str, str]] | None = None

    def header(self, binding: Binding, token: str) -> tuple[str, str]:
        last = self._last
        if last is not None and last[0] is binding and last[1] is token:
            return last[2]
        header = credential_header(binding, token)
        self._last = (binding, token, header)
        return header


def grant_audit(exc: GrantError) -> str:
    """The audit log's text for a failed grant: step, then the fullest sanitized story."""
    return f"{exc.step}: {exc.audit_detail or exc.reason}"
