"""The token-endpoint HTTP client: one shared, hardened ``httpx.AsyncClient``.

Hardening (ARCHITECTURE.md S2, S6): environment proxies and netrc ignored (``trust_env=False``),
no redirects (a 3xx is a failure and its Location is never contacted), TLS verified
against system roots plus an optional ``--ca-bundle``, a total deadline around the whole
call (httpx's own timeouts are per phase), and a 64 KiB cap on the body we read.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from supervisor.grants import exchange
from supervisor.grants.errors import GrantError
from supervisor.grants.httpx_import import import_httpx
from supervisor.profiles.model import GrantSpec
from supervisor.settings import DEFAULT_GRANT_TIMEOUT

import_httpx()  # first, so that httpx is imported without its command-line client
import httpx  # noqa: E402  (the module imported just above)

if TYPE_CHECKING:
    from supervisor.proxy.upstream_proxy import UpstreamProxy

STEP = exchange.STEP


def build_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """System roots always; ``ca_bundle`` (PEM) adds trust anchors, never replaces them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if ca_bundle:
        ctx.load_verify_locations(cafile=ca_bundle)
    return ctx


class TokenEndpointClient:
    """POSTs RFC 7523 client-credentials grants. Create and use on one event loop."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_GRANT_TIMEOUT,
        ca_bundle: str | None = None,
        max_body: int = exchange.MAX_RESPONSE_BYTES,
        upstream_proxy: UpstreamProxy | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_body = max_body
        # ``tls``: the proxy's upstream context (tls_upstream: the same roots plus
        # ``ca_bundle``), so the process holds one copy of the system roots.
        self._ssl = tls if tls is not None else build_ssl_context(ca_bundle)
        self._client = self._new_client(None)
        # Only for token endpoints whose host is listed in
        # --token-endpoint-via-upstream-proxy; everything else is dialed directly.
        self._upstream_proxy = upstream_proxy
        self._proxied: httpx.AsyncClient | None = None

    def _new_client(self, proxy: httpx.Proxy | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=self._ssl,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout, connect=self._timeout),
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            proxy=proxy,
        )

    def _client_for(self, url: str) -> httpx.AsyncClient:
        proxy = self._upstream_proxy
        parsed = httpx.URL(url)
        if proxy is None or not proxy.carries_token_endpoint(parsed.host):
            return self._client
        if parsed.scheme != "https":
            # httpx would forward-proxy it: the SVID would cross the proxy in cleartext.
            raise GrantError(STEP, "an http token endpoint is never sent through the "
                             "upstream proxy (use https)", retryable=False)
        if self._proxied is None:
            auth = proxy.authorization
            self._proxied = self._new_client(httpx.Proxy(
                proxy.url(),
                ssl_context=self._ssl if proxy.scheme == "https" else None,
                headers={"Proxy-Authorization": auth} if auth is not None else None,
            ))
        return self._proxied

    async def exchange(self, spec: GrantSpec, svid: str) -> exchange.TokenResponse:
        """One grant; raises ``GrantError`` (never an httpx exception) on any failure."""
        if not exchange.endpoint_allowed(spec.token_endpoint):
            raise GrantError(STEP, "token endpoint must be https (or http to loopback/cluster)",
                             retryable=False)
        client = self._client_for(spec.token_endpoint)
        form = exchange.build_form(spec, svid)
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._post(client, spec.token_endpoint, form)
        except TimeoutError:
            raise GrantError(STEP, f"token endpoint timed out after {self._timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            # The exception text may echo the URL; name only the failure class.
            raise GrantError(STEP, f"token endpoint unreachable ({type(err).__name__})") from None
        if not 200 <= status < 300:
            raise exchange.error_for_status(status, body)
        return exchange.parse_success(body)

    async def _post(
        self, client: httpx.AsyncClient, url: str, form: dict[str, str]
    ) -> tuple[int, bytes]:
        async with client.stream("POST", url, data=form) as resp:
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise GrantError(STEP, "token endpoint used a content encoding we did not accept")
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_body:
                raise GrantError(STEP, "token endpoint response too large")
            if 300 <= resp.status_code < 400:
                return resp.status_code, b""  # never read or follow a redirect
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_raw():
                size += len(chunk)
                if size > self._max_body:
                    raise GrantError(STEP, "token endpoint response too large")
                chunks.append(chunk)
            return resp.status_code, b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._proxied is not None:
            await self._proxied.aclose()
