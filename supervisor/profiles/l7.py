"""One request through the L7 policy, without I/O: plan (what is judged, whether a body
must be read first) then verdict. The proxy calls ``plan_request`` when a request head
arrives, reads at most ``plan.body_limit`` body bytes when ``plan.body`` says so, then
calls ``judge_request``; tests and fuzz targets use the same two calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from supervisor.profiles import graphql_ops, jsonrpc
from supervisor.profiles.canonical import CanonicalError, canonicalize, query_params
from supervisor.profiles.matcher import Route
from supervisor.profiles.model import Binding, Endpoint
from supervisor.profiles.rules import WEBSOCKET_TEXT, L7Request, Verdict, denied_by, judge

# "form": a POST body read for a method-override field (proxy/method_override.py).
BodyKind = Literal["graphql", "json-rpc", "mcp", "form"]


@runtime_checkable
class L7Table(Protocol):
    """What the L7 decision needs of a profile table (``matcher.PolicyTable``)."""

    def route(self, host: str, port: int, path: str,
              usable: Callable[[Endpoint], bool] | None = None) -> Route: ...

    def allows_encoded_slash(self, host: str, port: int) -> bool: ...

    def declared_exactly(self, host: str, port: int) -> bool: ...

    def match_binding(self, host: str, port: int, path: str,
                      usable: Callable[[Binding], bool] | None = None) -> Binding | None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    route: Route
    path: str  # canonical: judged, and what the upstream is sent
    query: dict[str, list[str]]  # decoded, for query matchers (never logged)
    body: BodyKind | None  # read this much of the body before judging
    body_limit: int
    receive_stream: bool  # MCP GET opening the server-to-client event stream

    @property
    def selected(self) -> Endpoint | None:
        return self.route.selected

    @property
    def audit_only(self) -> bool:
        s = self.route.selected
        return s is not None and s.enforcement == "audit"


def plan_request(
    table: L7Table, host: str, port: int, method: str, path: str, query: str,
    *, accept_event_stream: bool = False, has_body: bool = False,
    usable: Callable[[Endpoint], bool] | None = None,
) -> Plan:
    """``CanonicalError`` when the path cannot be judged (the request is refused, 400)."""
    # Canonicalize permissively when any endpoint here allows %2F, then hold the endpoint
    # that applies to its own setting (OpenShell's order: the route needs the path).
    permissive = table.allows_encoded_slash(host, port)
    canon = canonicalize(path, allow_encoded_slash=permissive)
    route = table.route(host, port, canon.path, usable)
    if canon.has_encoded_slash:
        judged = [route.selected] if route.inspected else list(route.matching)
        if not judged or not all(e is not None and e.allow_encoded_slash for e in judged):
            raise CanonicalError("encoded '/' (%2F) is not allowed on this endpoint")
    sel = route.selected if route.inspected else None
    body: BodyKind | None = None
    limit = 0
    stream = False
    if sel is not None and sel.protocol == "graphql" and (method == "POST" or has_body):
        # A GET's body is read too, to be refused: some servers take a parameter the
        # URL lacks from it.
        body, limit = "graphql", sel.graphql_max_body_bytes
    elif sel is not None and sel.protocol in ("json-rpc", "mcp"):
        if sel.protocol == "mcp" and method == "GET" and accept_event_stream and not has_body:
            stream = True
        else:
            # Every method's body is judged, as OpenShell does: servers such as geth run
            # a PATCH or GET body as JSON-RPC, and only a POST can be allowed anyway.
            body = "mcp" if sel.protocol == "mcp" else "json-rpc"
            limit = sel.mcp.max_body_bytes if sel.protocol == "mcp" else (
                sel.json_rpc_max_body_bytes)
    return Plan(route, canon.path, query_params(query), body, limit, stream)


def judge_request(
    plan: Plan, method: str, body: bytes | None = None, *, upgrade: bool = False
) -> Verdict:
    """The verdict for an inspected route; ``body`` is what ``plan.body`` asked for."""
    route = plan.route
    if not route.matching:
        return Verdict(False, f"no endpoint declares the path of {method} {plan.path}")
    if not route.inspected:
        return Verdict(True, "")  # L4: a matching endpoint is all it takes
    sel = route.selected
    if sel is None:
        return Verdict(False, f"no inspected endpoint declares {method} {plan.path}")
    if sel is not None and sel.protocol == "websocket" and not upgrade:
        return Verdict(False, "websocket endpoint requires a WebSocket upgrade request")
    return judge(route.matching, _l7_request(plan, method, body))


def enforced_denial(plan: Plan, method: str, body: bytes | None = None) -> bool:
    """Does an ``enforcement: enforce`` endpoint's deny rule (or an enforcing GraphQL/
    JSON-RPC endpoint's own rules) deny the request? Then it is refused even when the
    selected endpoint only audits: an audit profile never lifts another's enforcement."""
    enforced = [e for e in plan.route.matching if e.enforcement == "enforce"]
    return bool(enforced) and denied_by(enforced, _l7_request(plan, method, body))


def _l7_request(plan: Plan, method: str, body: bytes | None) -> L7Request:
    sel = plan.route.selected
    req = L7Request(method, plan.path, plan.query)
    if sel is not None and sel.protocol == "graphql":
        info = graphql_ops.classify(method, plan.query, body or b"")
        req = L7Request(method, plan.path, plan.query, graphql=info)
    elif plan.receive_stream:
        req = L7Request(method, plan.path, plan.query, jsonrpc=jsonrpc.RECEIVE_STREAM)
    elif plan.body in ("json-rpc", "mcp") and sel is not None:
        info2 = jsonrpc.classify(body or b"", mcp=plan.body == "mcp",
                                 strict_tool_names=sel.mcp.strict_tool_names)
        req = L7Request(method, plan.path, plan.query, jsonrpc=info2)
    return req


def websocket_text_denial(plan: Plan) -> str | None:
    """Why client text messages on an upgraded connection are denied (``WEBSOCKET_TEXT``
    on the upgrade's path), or None when they are allowed. ``read-only`` WebSocket allows
    the handshake only: the relay then closes the connection at the first text message."""
    route = plan.route
    sel = route.selected
    if not route.inspected or sel is None or sel.protocol != "websocket":
        return None
    verdict = judge(route.matching, L7Request(WEBSOCKET_TEXT, plan.path, plan.query))
    return None if verdict.allowed else f"client text message: {verdict.reason}"
