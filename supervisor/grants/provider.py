"""TokenProvider: the proxy's TokenSource. SVID → grant → cache, failing closed.

Concurrency model: a provider belongs to ONE asyncio event loop (the proxy's). It is
created, called and closed on that loop; its state is touched only from loop callbacks,
so it needs no locks. Blocking Workload API calls run on a private thread pool inside
``WorkloadSvidSource``.

Per cache key: one grant in flight (concurrent misses await it), a failure remembered
with jittered exponential backoff (requests during it fail at once), and refresh ahead:
once 80 % of a used token's lifetime has passed it is renewed in the background, so the
hot path never waits on the issuer while a token is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.grants import cache as cachemod
from supervisor.grants.cache import CacheKey, TokenCache
from supervisor.grants.errors import GrantError
from supervisor.grants.exchange import TokenResponse, is_token68
from supervisor.profiles.model import Binding, GrantSpec
from supervisor.settings import DEFAULT_GRANT_TIMEOUT
from supervisor.telemetry import GrantStats

if TYPE_CHECKING:
    import ssl

    from supervisor.proxy.upstream_proxy import UpstreamProxy

log = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL = 1.0
_MAX_KEYS = 4096


class SvidSource(Protocol):
    async def fetch(self, audience: str) -> str: ...

    async def aclose(self) -> None: ...


class TokenExchanger(Protocol):
    async def exchange(self, spec: GrantSpec, svid: str) -> TokenResponse: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class ProviderStats:
    svid_fetches: int = 0
    grants: int = 0  # token endpoint calls attempted
    grant_failures: int = 0  # failed attempts (Workload API or token endpoint)
    cache_hits: int = 0
    refreshes: int = 0  # background renewals started
    backoff_rejections: int = 0


class TokenProvider:
    """Implements ``TokenSource``. Use from one event loop only."""

    def __init__(
        self,
        svids: SvidSource,
        exchanger: TokenExchanger,
        *,
        max_entries: int = cachemod.DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
        refresh_interval: float | None = DEFAULT_REFRESH_INTERVAL,
    ) -> None:
        self._svids = svids
        self._exchanger = exchanger
        self._cache = TokenCache(max_entries)
        self._clock = clock
        # Jitter only spreads retries; it needs no cryptographic randomness.
        self._rand = rand if rand is not None else random.Random().random  # noqa: S311
        self._refresh_interval = refresh_interval
        self._inflight: dict[CacheKey, asyncio.Task[str]] = {}
        # binding id -> (that binding, its key): the key is built once per binding object
        # instead of per request (a reload brings new objects, hence new keys).
        self._keys: dict[str, tuple[Binding, CacheKey]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._retained: set[str] | None = None
        self._epoch = 0
        self._closed = False
        self.stats = ProviderStats()
        self.metrics = GrantStats()  # what the metrics endpoint shows (ARCHITECTURE.md 8)

    @property
    def cache(self) -> TokenCache:
        return self._cache

    async def token_for(self, binding: Binding) -> str:
        if self._closed:
            raise GrantError("token_endpoint", "token provider is closed", retryable=False)
        self._ensure_refresher()
        key = self._key(binding)
        now = self._clock()
        entry = self._cache.get(key, now)
        if entry is not None:
            self.stats.cache_hits += 1
            self.metrics.cache["hit"] += 1
            if entry.refresh_due(now):
                self._start_refresh(key, binding.grant)
            token = entry.token
            if entry.checked is not token:
                entry.checked = _checked(token)
            return token
        self.metrics.cache["miss"] += 1
        task = self._inflight.get(key)
        if task is None:
            failure = self._cache.backoff(key, now)
            if failure is not None:
                self.stats.backoff_rejections += 1
                self.metrics.grants["backoff"] += 1
                earlier = failure.error
                raise GrantError(
                    "backoff", f"retrying after an earlier failure: {earlier}", retryable=True,
                    audit_detail=f"retrying after an earlier failure: {earlier.step}: "
                    f"{earlier.audit_detail or earlier.reason}",
                )
            task = self._launch(key, binding.grant, last_used=now)
        # shield: a waiter that goes away (agent disconnect) does not cancel the grant
        # the other waiters share.
        return _checked(await asyncio.shield(task))

    def _key(self, binding: Binding) -> CacheKey:
        known = self._keys.get(binding.id)
        if known is not None and known[0] is binding:
            return known[1]
        key = CacheKey.for_binding(binding)
        if len(self._keys) >= _MAX_KEYS:  # bindings come from profiles, but stay bounded
            self._keys.clear()
        self._keys[binding.id] = (binding, key)
        return key

    def retain(self, binding_ids: set[str]) -> None:
        """After a reload: forget tokens and failures of bindings no longer present."""
        self._retained = set(binding_ids)
        self._epoch += 1
        self._cache.retain(self._retained)

    async def refresh_due(self) -> int:
        """Renew every used entry past 80 % of its lifetime; returns how many were started.

        Called by the background refresher; tests with a fake clock call it directly.
        """
        now = self._clock()
        started = [self._start_refresh(k, None) for k in self._cache.due_for_refresh(now)]
        tasks = [t for t in started if t is not None]
        if tasks:
            await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)
        return len(tasks)

    async def aclose(self) -> None:
        self._closed = True
        pending: list[asyncio.Task[Any]] = []
        if self._refresher is not None:
            self._refresher.cancel()
            pending.append(self._refresher)
        for task in self._inflight.values():
            task.cancel()
            pending.append(task)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self._exchanger.aclose()
        await self._svids.aclose()

    # -- internals ---------------------------------------------------------------------

    def _launch(self, key: CacheKey, spec: GrantSpec, *, last_used: float) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(
            self._grant(key, spec, last_used, self._epoch), name="token-grant"
        )
        self._inflight[key] = task
        # If every waiter went away, the outcome (already recorded) is still retrieved.
        task.add_done_callback(_consume)
        return task

    def _start_refresh(self, key: CacheKey, spec: GrantSpec | None) -> asyncio.Task[str] | None:
        """Start a background renewal for ``key`` unless one is running or backoff forbids."""
        if key in self._inflight:
            return None
        now = self._clock()
        if self._cache.backoff(key, now) is not None:
            return None
        entry = self._cache.get(key, now, touch=False)
        if entry is None:
            return None
        spec = spec if spec is not None else entry.spec
        if spec is None:
            return None
        self.stats.refreshes += 1
        # The refresh's outcome is recorded by _grant; nobody awaits it on the hot path.
        return self._launch(key, spec, last_used=entry.last_used)

    async def _grant(self, key: CacheKey, spec: GrantSpec, last_used: float, epoch: int) -> str:
        try:
            try:
                self.stats.svid_fetches += 1
                svid = await self._fetch_svid(spec.jwt_svid_audience)
                self.stats.grants += 1
                response = await self._exchanger.exchange(spec, svid)
                del svid
                if not is_token68(response.access_token):
                    raise GrantError("response", "access_token not token68")
            except GrantError as err:
                self._record_failure(key, err, epoch)
                raise
            except Exception as err:
                # Any other fault is a failure too (fail closed), without its text.
                wrapped = GrantError("token_endpoint", f"internal error ({type(err).__name__})")
                self._record_failure(key, wrapped, epoch)
                raise wrapped from None
            self.metrics.grants["success"] += 1
            if self._still_wanted(key, epoch):
                now = self._clock()
                life = cachemod.lifetime(response.expires_in, spec.cache_ttl_seconds)
                old = self._cache.get(key, now, touch=False)
                if old is not None:  # uses of the old token during a refresh count too
                    last_used = max(last_used, old.last_used)
                self._cache.put(key, response.access_token, life, now, last_used, spec)
            return response.access_token
        finally:
            if self._inflight.get(key) is asyncio.current_task():
                del self._inflight[key]

    async def _fetch_svid(self, audience: str) -> str:
        """One Workload API call, timed for the metrics."""
        m = self.metrics
        m.workload_api_calls += 1
        started = time.monotonic()
        try:
            return await self._svids.fetch(audience)
        except BaseException:
            m.workload_api_failures += 1
            raise
        finally:
            m.workload_api_seconds.observe(time.monotonic() - started)

    def _record_failure(self, key: CacheKey, err: GrantError, epoch: int) -> None:
        self.stats.grant_failures += 1
        self.metrics.grants["failure"] += 1
        if self._still_wanted(key, epoch):
            self._cache.fail(key, err, self._clock(), self._rand)
        log.warning("token grant failed for %s: %s", key.binding_id, err)

    def _still_wanted(self, key: CacheKey, epoch: int) -> bool:
        """A grant started before a reload that dropped its binding is not cached."""
        if epoch == self._epoch or self._retained is None:
            return True
        return key.binding_id in self._retained

    def _ensure_refresher(self) -> None:
        if self._refresher is None and self._refresh_interval is not None:
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_loop(self._refresh_interval), name="token-refresh"
            )

    async def _refresh_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.refresh_due()


def create_token_provider(
    spiffe_socket: str,
    *,
    ca_bundle: str | None = None,
    tls: ssl.SSLContext | None = None,
    grant_timeout: float = DEFAULT_GRANT_TIMEOUT,
    max_entries: int = cachemod.DEFAULT_MAX_ENTRIES,
    upstream_proxy: UpstreamProxy | None = None,
) -> TokenProvider:
    """The production provider. Call from inside the proxy's running event loop.

    The Workload API is a local unix socket: never proxied. Token endpoints are dialed
    directly unless their host is listed for the upstream proxy (ARCHITECTURE.md 7).
    ``tls``: the proxy's upstream context (system roots plus ``ca_bundle``) to verify token
    endpoints with; None: the client builds its own from ``ca_bundle``."""
    from supervisor.grants.workload import WorkloadSvidSource

    svids = WorkloadSvidSource(spiffe_socket)
    exchanger = _DeferredExchanger(
        timeout=grant_timeout, ca_bundle=ca_bundle, tls=tls, upstream_proxy=upstream_proxy
    )
    return TokenProvider(svids, exchanger, max_entries=max_entries)


class _DeferredExchanger:
    """Builds the token endpoint client (httpx: ~60 ms of imports) on the first grant, so
    the supervisor's start-up, which runs beside the agent's, does not pay for it. A
    bad --ca-bundle is caught at start by the proxy's own upstream context, which loads
    the same file."""

    def __init__(
        self, *, timeout: float, ca_bundle: str | None, tls: ssl.SSLContext | None,
        upstream_proxy: UpstreamProxy | None,
    ) -> None:  # fmt: skip
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._tls = tls
        self._upstream_proxy = upstream_proxy
        self._client: TokenExchanger | None = None

    async def exchange(self, spec: GrantSpec, svid: str) -> TokenResponse:
        if self._client is None:
            from supervisor.grants.http_client import TokenEndpointClient

            self._client = TokenEndpointClient(
                timeout=self._timeout,
                ca_bundle=self._ca_bundle,
                tls=self._tls,
                upstream_proxy=self._upstream_proxy,
            )
        return await self._client.exchange(spec, svid)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _checked(token: str) -> str:
    """Re-check right before the token leaves for injection (defence in depth)."""
    if not is_token68(token):
        raise GrantError("response", "access_token not token68", retryable=False)
    return token


def _consume(task: asyncio.Task[str]) -> None:
    if not task.cancelled():
        task.exception()  # mark retrieved; the failure is already recorded in the cache
