"""Static credentials in the proxy: substitution and SigV4 signing for one request.

``prepare`` runs after the policy decision and before any upstream connection: it finds
the request's scope, substitutes placeholders in the target and the headers, buffers and
rewrites the body where the endpoint allows it, and returns a signer for SigV4 endpoints
that is applied to the final upstream headers. A refusal is a ``ProxyError`` with
OpenShell's codes; nothing has been sent upstream at that point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.credentials import rewrite
from supervisor.credentials.placeholders import CredentialRefused, Resolver
from supervisor.credentials.scope import AWS_KEY_ID, AWS_SECRET, AWS_SESSION, Scope
from supervisor.credentials.store import State
from supervisor.proxy import errors
from supervisor.proxy.channel import Conn
from supervisor.proxy.egress import cleartext_injection_allowed
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import ChunkedDecoder, Headers, ParseError, RequestHead
from supervisor.proxy.ws_creds import ClientMessages, strip_extensions

Signer = Callable[[str, str, Headers], Headers]  # (path, query, final headers)


@dataclass(slots=True)
class Prepared:
    path: str
    query: str
    headers: Headers  # the agent's headers, rewritten (hop-by-hop still to be removed)
    body: bytes | None  # the whole body when it was buffered, else None (stream it)
    signer: Signer | None
    substituted: bool
    ws: ClientMessages | None = None  # client messages of a WebSocket it switches to
    # The body as the agent sent it, when read whole: what L7 rules judge. A refusal may
    # quote the body (a GraphQL operation name), so it must never see the values.
    agent_body: bytes | None = None
    # The values this request carries, as a response head may bring them back (hidden
    # behind their placeholders before the head reaches the agent).
    reflected: rewrite.Reflected = ()


def refused(exc: CredentialRefused) -> ProxyError:
    return ProxyError(exc.code, exc.detail, status=exc.status)


def _header(headers: Headers, name: str) -> str | None:
    return next((v for n, v in headers if n.lower() == name), None)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def read_body(agent: Conn, req: RequestHead, limit: int, timeout: float) -> bytes:
    """The whole request body (de-chunked), refused with 413 beyond ``limit``."""
    too_large = ProxyError(
        errors.BAD_REQUEST, f"request body over the {limit // 1024} KiB rewrite limit",
        status=413,
    )
    if not req.chunked and (req.content_length or 0) > limit:
        raise too_large  # refused before the agent is invited to send it
    if req.expect_continue and req.has_body:
        agent.ch.write(_CONTINUE)
    if not req.chunked:
        n = req.content_length or 0
        async with asyncio.timeout(timeout):
            while len(agent.buf) < n:
                if not await agent.fill():
                    raise ProxyError(errors.BAD_REQUEST, "body ended early")
        return agent.take(n)
    dec = ChunkedDecoder()
    out = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                out += b"".join(dec.feed(bytes(agent.buf)))
                agent.buf.clear()
                if len(out) > limit:
                    raise too_large
                if dec.done:
                    agent.buf += dec.leftover
                    return bytes(out)
                if not await agent.fill():
                    raise ProxyError(errors.BAD_REQUEST, "body ended early")
    except ParseError as exc:
        raise ProxyError(errors.BAD_REQUEST, exc.reason) from None


async def prepare(
    state: State,
    agent: Conn,
    req: RequestHead,
    *,
    scheme: str,
    host: str,
    port: int,
    body_timeout: float,
    upgrade: str | None = None,
) -> Prepared | None:
    """``None`` when the request has nothing to do with static credentials."""
    scope = _scope(state, agent, req, host, port)
    headers = _agent_headers(req, scope)
    resolver = Resolver(state.values, scope.variables, set())  # all positional: quickest
    ws = None
    if upgrade is not None and upgrade.lower() == "websocket" and scope.variables:
        headers, ws = _websocket(headers, resolver, scope, scheme, host)
    wants_body = scope.body_rewrite and req.has_body
    if scope.signing is None and not wants_body and ws is None and not rewrite.head_has_placeholder(
        req.path, req.query, headers
    ):
        return None
    try:
        head = rewrite.head(resolver, req.path, req.query, headers)
    except CredentialRefused as exc:
        raise refused(exc) from None
    substituted = head.replaced > 0
    body: bytes | None = None
    agent_body: bytes | None = None
    signer: Signer | None = None
    if scope.signing is not None:
        signer, body = await _sigv4(state, scope, agent, req, head.headers, body_timeout)
        agent_body, substituted = body, True
    elif wants_body:
        agent_body, new = await _read_and_rewrite_body(
            agent, req, resolver, head.headers, body_timeout
        )
        body = agent_body if new is None else new
        substituted = substituted or new is not None
    if substituted and scheme != "https" and not cleartext_injection_allowed(host):
        raise ProxyError(errors.POLICY_DENIED, "credential would travel in cleartext")
    return Prepared(
        head.path, head.query, head.headers, body, signer, substituted, ws, agent_body,
        _reflected(state, scope, resolver),
    )


def _scope(state: State, agent: Conn, req: RequestHead, host: str, port: int) -> Scope:
    """The credential scope of this request, over the endpoints this agent's binary may use."""
    judge = agent.judge
    return state.table.scope(
        host, port, req.path,
        usable=lambda ep: ep.binaries is None or (judge is not None and judge.allows(ep.binaries)),
    )


def _agent_headers(req: RequestHead, scope: Scope) -> Headers:
    """A copy of the agent's headers to rewrite; for SigV4 without the SDK's own signature."""
    if scope.signing is None:
        return list(req.headers)
    # The agent's SDK signed with placeholder keys: those headers are replaced.
    from supervisor.credentials.sigv4 import DROPPED

    return [(n, v) for n, v in req.headers if n.lower() not in DROPPED]


def _websocket(
    headers: Headers, resolver: Resolver, scope: Scope, scheme: str, host: str
) -> tuple[Headers, ClientMessages]:
    """The upgrade's headers and the parser of its client messages, for a credentialed
    endpoint: messages are parsed there, so none may arrive compressed."""
    return strip_extensions(headers), ClientMessages(
        resolver, scope.websocket_rewrite,
        cleartext=scheme != "https" and not cleartext_injection_allowed(host),
    )


async def _read_and_rewrite_body(
    agent: Conn, req: RequestHead, resolver: Resolver, headers: Headers, timeout: float
) -> tuple[bytes, bytes | None]:
    """(the body as the agent sent it, its rewrite; None when nothing was substituted)."""
    body = await read_body(agent, req, rewrite.BODY_LIMIT, timeout)
    try:
        return body, rewrite.body(resolver, _header(headers, "content-type"), body)
    except CredentialRefused as exc:
        raise refused(exc) from None


def _reflected(state: State, scope: Scope, resolver: Resolver) -> rewrite.Reflected:
    """The values this request carries (substituted, or signed with), as a response could
    reflect them."""
    sent = resolver.used | ({AWS_KEY_ID, AWS_SESSION} & scope.variables if scope.signing else set())
    return rewrite.reflections({v: state.values[v] for v in sent if v in state.values})


async def _sigv4(
    state: State, scope: Scope, agent: Conn, req: RequestHead, headers: Headers, timeout: float
) -> tuple[Signer, bytes | None]:
    from supervisor.credentials import sigv4

    assert scope.signing is not None
    spec = scope.signing
    values = state.values
    for var in (AWS_KEY_ID, AWS_SECRET):
        if var not in values:
            raise refused(CredentialRefused("credential_unavailable", "AWS signature"))
        if var not in scope.variables:
            raise refused(CredentialRefused("credential_endpoint_mismatch", "AWS signature"))
    session = values.get(AWS_SESSION) if AWS_SESSION in scope.variables else None
    keys = sigv4.AwsKeys(values[AWS_KEY_ID], values[AWS_SECRET], session)
    # The key id and the session token go into headers: printable ASCII only.
    if not all(v.isascii() and v.isprintable() for v in (keys.access_key, session or "")):
        raise refused(CredentialRefused("credential_unavailable", "AWS signature"))
    region = spec.region or sigv4.region_from_host(req.host)
    if region is None:
        raise ProxyError(errors.POLICY_DENIED, "no signing_region and none in the host name")
    try:
        mode = sigv4.payload_mode(
            spec.mode,
            _header(list(req.headers), "x-amz-content-sha256"),
            req.content_length is not None and not req.chunked,
        )
    except sigv4.SigningError as exc:
        raise ProxyError(errors.BAD_REQUEST, str(exc)) from None
    body: bytes | None = None
    if mode == "body":
        body = await read_body(agent, req, sigv4.BODY_LIMIT, timeout) if req.has_body else b""
    payload_value = sigv4.STREAMING_TRAILER if mode == "trailer" else None

    def sign(path: str, query: str, final: Headers) -> Headers:
        authority = _header(final, "host") or req.host
        r = sigv4.Request(req.method, "https", authority, path, query, final)
        return sigv4.sign(
            r, payload=body, keys=keys, service=spec.service, region=region,
            payload_value=payload_value,
        )

    return sign, body
