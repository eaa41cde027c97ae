"""The token-endpoint HTTP client: one POST per grant, over the proxy's own HTTP/1.1 and TLS
code (``supervisor.proxy.channel``/``http1``), already in the process and already hardened
against hostile peers. No third-party HTTP stack: httpx, httpcore, anyio and h11 were ~95
modules and ~5 MiB resident in the proxy for this one request kind.

Hardening (ARCHITECTURE.md S2, S6): environment proxies and netrc are never read, no
redirects (a 3xx is a failure and its Location is never contacted), TLS verified against
system roots plus an optional ``--ca-bundle``, a total deadline around the whole call, a
64 KiB cap on the body we read, strict response framing (``http1.parse_response_head``).
One connection per grant (``Connection: close``): grants are rare, and no idle socket to
the issuer stays open between them.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from supervisor.grants import exchange
from supervisor.grants.errors import GrantError
from supervisor.profiles.model import GrantSpec
from supervisor.proxy.channel import READ_SIZE, Channel, Conn, PlainChannel, TlsChannel
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import (
    ChunkedDecoder,
    ParseError,
    host_header,
    parse_response_head,
    response_body_mode,
)
from supervisor.proxy.upstream_proxy import check_connect_response
from supervisor.settings import DEFAULT_GRANT_TIMEOUT

if TYPE_CHECKING:
    from supervisor.proxy.upstream_proxy import UpstreamProxy

STEP = exchange.STEP
ALPN = ["http/1.1"]
USER_AGENT = "openshell-supervisor"
_MAX_HEAD = 16 * 1024
# Request-target characters sent as they are (RFC 3986 pchar, "/", "?", and "%" of an
# escape already there); anything else is percent-encoded.
_TARGET_SAFE = "/?:@!$&'()*+,;=-._~%"


def build_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System roots always; ``ca_bundle`` (PEM) adds trust anchors, never replaces them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if ca_bundle:
        ctx.load_verify_locations(cafile=ca_bundle)
    ctx.set_alpn_protocols(ALPN)
    return ctx


class _Unusable(Exception):
    """The token endpoint's answer breaks HTTP/1.1 (named in the GrantError by class)."""


class ResponseTruncated(_Unusable):
    pass


class UnexpectedSwitch(_Unusable):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower-case; an IPv6 literal without brackets
    port: int
    request_target: str  # path and query, percent-encoded

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(url: str) -> Target:
    """The parts of an endpoint URL that ``exchange.endpoint_allowed`` admitted."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if host is None or parts.scheme not in ("http", "https"):
        raise ValueError("not an absolute http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = urllib.parse.quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + urllib.parse.quote(parts.query, safe=_TARGET_SAFE)
    return Target(parts.scheme, host, port, target)


def request_bytes(target: Target, form: dict[str, str]) -> bytes:
    """The whole POST: head and url-encoded form body."""
    body = urllib.parse.urlencode(form).encode("ascii")
    head = (
        f"POST {target.request_target} HTTP/1.1\r\n"
        f"Host: {host_header(target.host, target.port, target.scheme)}\r\n"
        "Accept: application/json\r\n"
        "Accept-Encoding: identity\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class TokenEndpointClient:
    """POSTs RFC 7523 client-credentials grants. Create and use on one event loop."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_GRANT_TIMEOUT,
        ca_bundle: str | None = None,
        max_body: int = exchange.MAX_RESPONSE_BYTES,
        upstream_proxy: UpstreamProxy | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_body = max_body
        self._ssl = build_ssl_context(ca_bundle)
        # Only for token endpoints whose host is listed in
        # --token-endpoint-via-upstream-proxy; everything else is dialed directly.
        self._upstream_proxy = upstream_proxy

    def _route(self, target: Target) -> UpstreamProxy | None:
        proxy = self._upstream_proxy
        if proxy is None or not proxy.carries_token_endpoint(target.host):
            return None
        if target.scheme != "https":
            # Through a proxy it would be forwarded as is: the SVID in cleartext.
            raise GrantError(STEP, "an http token endpoint is never sent through the "
                             "upstream proxy (use https)", retryable=False)
        return proxy

    async def exchange(self, spec: GrantSpec, svid: str) -> exchange.TokenResponse:
        """One grant; raises ``GrantError`` (never a transport exception) on any failure."""
        if not exchange.endpoint_allowed(spec.token_endpoint):
            raise GrantError(STEP, "token endpoint must be https (or http to loopback/cluster)",
                             retryable=False)
        try:
            target = parse_target(spec.token_endpoint)
        except ValueError:
            raise GrantError(STEP, "token endpoint URL is invalid", retryable=False) from None
        via = self._route(target)
        form = exchange.build_form(spec, svid)
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._post(target, via, request_bytes(target, form))
        except TimeoutError:
            raise GrantError(STEP, f"token endpoint timed out after {self._timeout:g} s") from None
        except (OSError, ssl.SSLError, ParseError, ProxyError, _Unusable) as err:
            # The exception text may echo addresses or the proxy's answer; name the class.
            raise GrantError(STEP, f"token endpoint unreachable ({type(err).__name__})") from None
        if not 200 <= status < 300:
            raise exchange.error_for_status(status, body)
        return exchange.parse_success(body)

    async def _post(self, target: Target, via: UpstreamProxy | None,
                    request: bytes) -> tuple[int, bytes]:
        ch = await self._connect(target, via)
        conn = Conn(ch)
        try:
            ch.write(request)
            await ch.drain()
            return await self._response(conn)
        finally:
            conn.release()
            ch.close()

    async def _connect(self, target: Target, via: UpstreamProxy | None) -> Channel:
        host, port = (target.host, target.port) if via is None else (via.host, via.port)
        reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
        ch: Channel = PlainChannel(reader, writer)
        try:
            early = b""
            if via is not None:
                if via.scheme == "https":  # TLS to the proxy: the same trust as upstreams
                    ch = await _handshake(TlsChannel(ch, self._ssl, server_side=False,
                                                     server_hostname=via.host))
                ch, early = await _tunnel(ch, via, target, self._timeout)
            if target.scheme == "https":
                ch = await _handshake(TlsChannel(ch, self._ssl, early, server_side=False,
                                                 server_hostname=target.host))
            elif early:
                raise _Unusable("bytes before the request")
            return ch
        except BaseException:
            ch.close()
            raise

    async def _response(self, conn: Conn) -> tuple[int, bytes]:
        while True:
            head = await conn.read_head(self._timeout, self._timeout, _MAX_HEAD)
            if head is None:
                raise ResponseTruncated("closed before a response")
            resp = parse_response_head(head)
            if resp.status == 101:
                raise UnexpectedSwitch("101 without an upgrade request")
            if resp.status >= 200:
                break  # 1xx: interim answers before the final one
        encoding = ",".join(v for n, v in resp.headers if n.lower() == "content-encoding")
        if encoding.strip().lower() not in ("", "identity"):
            raise GrantError(STEP, "token endpoint used a content encoding we did not accept")
        if resp.content_length is not None and resp.content_length > self._max_body:
            raise GrantError(STEP, "token endpoint response too large")
        if 300 <= resp.status < 400:
            return resp.status, b""  # never read or follow a redirect
        mode = response_body_mode("POST", resp)
        if mode == "none":
            return resp.status, b""
        if mode == "length":
            assert resp.content_length is not None
            return resp.status, await self._exactly(conn, resp.content_length)
        if mode == "chunked":
            return resp.status, await self._chunked(conn)
        return resp.status, await self._until_close(conn)

    def _capped(self, size: int) -> None:
        if size > self._max_body:
            raise GrantError(STEP, "token endpoint response too large")

    async def _exactly(self, conn: Conn, n: int) -> bytes:
        while len(conn.buf) < n:
            if not await conn.fill():
                raise ResponseTruncated("closed inside the body")
        return conn.take(n)

    async def _chunked(self, conn: Conn) -> bytes:
        decoder = ChunkedDecoder()
        out = bytearray()
        while True:
            data = conn.take(len(conn.buf))
            for piece in decoder.feed(data):
                out += piece
                self._capped(len(out))
            if decoder.done:
                return bytes(out)
            if not await conn.fill():
                raise ResponseTruncated("closed inside a chunked body")

    async def _until_close(self, conn: Conn) -> bytes:
        while await conn.fill():
            self._capped(len(conn.buf))
        return conn.take(len(conn.buf))

    async def aclose(self) -> None:
        return None  # no pool: every connection is closed when its grant is done


async def _handshake(ch: TlsChannel) -> TlsChannel:
    await ch.handshake()
    return ch


async def _tunnel(ch: Channel, via: UpstreamProxy, target: Target,
                  timeout: float) -> tuple[Channel, bytes]:
    """CONNECT host:port through the proxy (by name: the proxy resolves it, as it did for
    httpx); the channel and any bytes the proxy relayed right behind its answer."""
    lines = [f"CONNECT {target.authority} HTTP/1.1", f"Host: {target.authority}"]
    if via.authorization is not None:
        lines.append(f"Proxy-Authorization: {via.authorization}")
    ch.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await ch.drain()
    reader = Conn(ch)
    try:
        head = await reader.read_head(timeout, timeout, _MAX_HEAD)
    finally:
        reader.release()
    if head is None:
        raise ResponseTruncated("the upstream proxy closed before answering")
    check_connect_response(head, target.authority)
    return ch, bytes(reader.buf)
