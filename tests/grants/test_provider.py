"""TokenProvider with fake SVID source / exchanger and an injected clock (deterministic)."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.grants.cache import CacheKey
from supervisor.grants.errors import GrantError
from supervisor.grants.exchange import TokenResponse
from supervisor.grants.provider import TokenProvider
from supervisor.profiles.model import GrantSpec
from supervisor.record import replace

from .conftest import FakeClock, make_binding

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9/token"


class FakeSvids:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.error: GrantError | None = None
        self.closed = False

    async def fetch(self, audience: str) -> str:
        self.calls.append(audience)
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return "svid.for.test"

    async def aclose(self) -> None:
        self.closed = True


class FakeExchanger:
    def __init__(self, expires_in: int | None = 130) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.error: Exception | None = None
        self.token_override: str | None = None
        self.gate: asyncio.Event | None = None

    async def exchange(self, spec: GrantSpec, svid: str) -> TokenResponse:
        self.calls += 1
        n = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        token = self.token_override if self.token_override is not None else f"tok{n}"
        return TokenResponse(token, self.expires_in)

    async def aclose(self) -> None:
        pass


def provider(clock: FakeClock, ex: FakeExchanger, svids: FakeSvids | None = None,
             **kw: object) -> TokenProvider:
    return TokenProvider(svids or FakeSvids(), ex, clock=clock, rand=lambda: 0.0,
                         refresh_interval=None, **kw)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_concurrent_cold_misses_share_one_grant() -> None:
    clock, ex, svids = FakeClock(), FakeExchanger(), FakeSvids()
    ex.gate = asyncio.Event()
    p = provider(clock, ex, svids)
    b = make_binding(URL)
    tasks = [asyncio.create_task(p.token_for(b)) for _ in range(100)]
    await settle()
    ex.gate.set()
    tokens = await asyncio.gather(*tasks)
    assert set(tokens) == {"tok1"}
    assert (len(svids.calls), ex.calls) == (1, 1)
    assert (p.stats.svid_fetches, p.stats.grants) == (1, 1)
    assert svids.calls == [b.grant.jwt_svid_audience]
    await p.aclose()


async def test_hit_then_expiry_then_new_grant() -> None:
    clock, ex = FakeClock(), FakeExchanger(expires_in=130)  # lifetime 100
    p = provider(clock, ex)
    b = make_binding(URL)
    assert await p.token_for(b) == "tok1"
    clock.advance(50)
    assert await p.token_for(b) == "tok1"
    assert p.stats.cache_hits == 1
    clock.advance(50)  # exactly at expiry: never served
    assert await p.token_for(b) == "tok2"
    await p.aclose()


async def test_hostile_expires_in_is_clamped() -> None:
    clock, ex = FakeClock(), FakeExchanger(expires_in=10**12)
    p = provider(clock, ex)
    await p.token_for(make_binding(URL))
    (entry_key,) = p.cache.keys()
    entry = p.cache.get(entry_key, clock(), touch=False)
    assert entry is not None and entry.lifetime == 3570.0
    await p.aclose()


async def test_cache_ttl_caps_lifetime() -> None:
    clock, ex = FakeClock(), FakeExchanger(expires_in=3600)
    p = provider(clock, ex)
    b = make_binding(URL, cache_ttl=60)
    await p.token_for(b)
    clock.advance(30)  # lifetime 60 - 30 = 30
    await p.token_for(b)
    assert ex.calls == 2
    await p.aclose()


async def test_failure_backoff_then_retry() -> None:
    clock, ex = FakeClock(), FakeExchanger()
    ex.error = GrantError("token_endpoint", "token endpoint answered 500", retryable=True)
    p = provider(clock, ex)
    b = make_binding(URL)
    with pytest.raises(GrantError, match="answered 500"):
        await p.token_for(b)
    with pytest.raises(GrantError) as info:
        await p.token_for(b)
    assert info.value.step == "backoff" and ex.calls == 1
    clock.advance(0.8)  # rand=0 → first delay 0.8 s
    ex.error = None
    assert await p.token_for(b) == "tok2"
    await p.aclose()


async def test_failing_issuer_not_called_more_than_backoff_allows() -> None:
    clock, ex = FakeClock(0.0), FakeExchanger()
    ex.error = GrantError("token_endpoint", "down")
    p = provider(clock, ex)
    b = make_binding(URL)
    failures = 0
    for _ in range(1200):  # 120 simulated seconds, a request every 100 ms
        try:
            await p.token_for(b)
        except GrantError:
            failures += 1
        clock.advance(0.1)
    # Shortest schedule (jitter -20 %): calls at 0, .8, 2.4, 5.6, 12, 24.8, 48.8, 72.8, 96.8.
    assert ex.calls == 9
    assert failures == 1200  # never a token while failing
    await p.aclose()


@pytest.mark.parametrize("bad", ["a b", "tok\r\nX: 1", "", "töken", "a=b"])
async def test_malformed_token_never_cached_or_served(bad: str) -> None:
    clock, ex = FakeClock(), FakeExchanger()
    ex.token_override = bad
    p = provider(clock, ex)
    with pytest.raises(GrantError):
        await p.token_for(make_binding(URL))
    assert len(p.cache) == 0 and p.stats.grant_failures == 1
    await p.aclose()


async def test_unexpected_exception_fails_closed() -> None:
    clock, ex = FakeClock(), FakeExchanger()
    ex.error = RuntimeError("secret-ish detail")
    p = provider(clock, ex)
    with pytest.raises(GrantError) as info:
        await p.token_for(make_binding(URL))
    assert "secret-ish" not in str(info.value)
    await p.aclose()


async def test_refresh_ahead_on_hot_path_never_waits() -> None:
    clock, ex = FakeClock(), FakeExchanger(expires_in=130)  # lifetime 100
    p = provider(clock, ex)
    b = make_binding(URL)
    assert await p.token_for(b) == "tok1"
    clock.advance(81)
    ex.gate = asyncio.Event()  # the issuer now blocks until released
    assert await p.token_for(b) == "tok1"  # returned without the gate opening
    await settle()
    assert p.stats.refreshes == 1 and ex.calls == 2
    assert await p.token_for(b) == "tok1"  # still one refresh in flight
    assert ex.calls == 2
    ex.gate.set()
    await settle()
    assert await p.token_for(b) == "tok2"  # replaced before tok1 expired (t=81 < 100)
    await p.aclose()


async def test_background_refresh_only_for_recently_used_keys() -> None:
    clock, ex = FakeClock(), FakeExchanger(expires_in=130)  # lifetime 100
    p = provider(clock, ex)
    b = make_binding(URL)
    await p.token_for(b)
    clock.advance(79)
    assert await p.refresh_due() == 0
    clock.advance(2)  # t=81: past 80 %, used at t=0 (within the lifetime)
    assert await p.refresh_due() == 1
    assert ex.calls == 2
    # New entry issued at t=81; last use still t=0, so at t=161 it is not renewed again.
    clock.advance(80)
    assert await p.refresh_due() == 0
    clock.advance(20)
    assert len(p.cache) == 1 and await p.token_for(b) == "tok3"  # expired → cold grant
    await p.aclose()


async def test_failed_refresh_keeps_valid_token_until_expiry() -> None:
    clock, ex = FakeClock(), FakeExchanger(expires_in=130)
    p = provider(clock, ex)
    b = make_binding(URL)
    await p.token_for(b)
    clock.advance(85)
    ex.error = GrantError("token_endpoint", "down")
    assert await p.refresh_due() == 1
    assert await p.token_for(b) == "tok1"  # still valid: 85 < 100
    clock.advance(15)  # expired; refresh failed at 85 with 0.8 s backoff, now elapsed
    with pytest.raises(GrantError):
        await p.token_for(b)
    await p.aclose()


async def test_cache_never_exceeds_bound() -> None:
    clock, ex = FakeClock(), FakeExchanger()
    p = provider(clock, ex, max_entries=5)
    for i in range(40):
        await p.token_for(make_binding(URL, binding_id=f"b{i}"))
        assert len(p.cache) <= 5
    assert len(p.cache) == 5
    await p.aclose()


async def test_retain_drops_removed_bindings_and_inflight_results() -> None:
    clock, ex = FakeClock(), FakeExchanger()
    p = provider(clock, ex)
    keep, drop = make_binding(URL, binding_id="keep"), make_binding(URL, binding_id="drop")
    await p.token_for(keep)
    await p.token_for(drop)
    p.retain({"keep"})
    assert [k.binding_id for k in p.cache.keys()] == ["keep"]
    ex.gate = asyncio.Event()
    task = asyncio.create_task(p.token_for(drop))
    await settle()
    p.retain({"keep"})  # reload while the grant is in flight
    ex.gate.set()
    assert await task == "tok3"  # the waiter gets its token ...
    assert [k.binding_id for k in p.cache.keys()] == ["keep"]  # ... but it is not cached
    await p.aclose()


async def test_cancelled_waiter_does_not_cancel_shared_grant() -> None:
    clock, ex = FakeClock(), FakeExchanger()
    ex.gate = asyncio.Event()
    p = provider(clock, ex)
    b = make_binding(URL)
    first = asyncio.create_task(p.token_for(b))
    second = asyncio.create_task(p.token_for(b))
    await settle()
    first.cancel()
    await settle()
    ex.gate.set()
    assert await second == "tok1" and ex.calls == 1
    await p.aclose()


async def test_closed_provider_refuses() -> None:
    svids = FakeSvids()
    p = provider(FakeClock(), FakeExchanger(), svids)
    await p.aclose()
    assert svids.closed
    with pytest.raises(GrantError):
        await p.token_for(make_binding(URL))


async def test_backoff_error_keeps_the_issuer_text_for_the_audit_only() -> None:
    clock, ex = FakeClock(), FakeExchanger()
    ex.error = GrantError("token_endpoint", "token endpoint answered 400: invalid_client",
                          retryable=False,
                          audit_detail="token endpoint answered 400: invalid_client (DESC)")
    p = provider(clock, ex)
    b = make_binding(URL)
    with pytest.raises(GrantError):
        await p.token_for(b)
    with pytest.raises(GrantError) as info:
        await p.token_for(b)
    assert info.value.step == "backoff" and "DESC" not in str(info.value)
    assert "invalid_client" in str(info.value)
    assert info.value.audit_detail is not None and "(DESC)" in info.value.audit_detail
    await p.aclose()


async def test_metrics_count_outcomes_cache_results_and_workload_calls() -> None:
    clock, ex, svids = FakeClock(), FakeExchanger(expires_in=60), FakeSvids()
    p = provider(clock, ex, svids, max_entries=1)
    a, b = make_binding(URL), make_binding(URL, binding_id="demo/token@beta.test:443",
                                           audience="beta")
    m = p.metrics
    assert await p.token_for(a) == "tok1"
    assert await p.token_for(a) == "tok1"
    assert (m.grants["success"], m.cache["miss"], m.cache["hit"]) == (1, 1, 1)
    assert m.workload_api_calls == 1 and m.workload_api_seconds.count == 1
    await p.token_for(b)  # the bound of one entry pushes a out
    assert p.cache.evictions == 1
    clock.advance(3600)  # b expires: dropped when looked up
    svids.error = GrantError("workload_api", "socket gone")
    with pytest.raises(GrantError):
        await p.token_for(b)
    assert p.cache.evictions == 2
    assert m.grants["failure"] == 1 and m.workload_api_failures == 1
    with pytest.raises(GrantError, match="retrying"):
        await p.token_for(b)  # inside the backoff: refused at once, no call
    assert m.grants["backoff"] == 1 and m.workload_api_calls == 3
    assert m.cache["miss"] == 4
    await p.aclose()


async def test_a_cached_token_is_checked_again_once_it_changes() -> None:
    """The use-time token68 check is remembered per token object: a hit on the same token
    skips the scan, but a token that is not the one checked (here: planted in the entry)
    is checked again and refused."""
    clock, ex = FakeClock(), FakeExchanger()
    p = provider(clock, ex)
    b = make_binding(URL)
    assert await p.token_for(b) == "tok1"
    entry = p.cache.get(CacheKey.for_binding(b), clock())
    assert entry is not None and entry.checked is None  # the miss path checks on its own
    assert await p.token_for(b) == "tok1"
    assert entry.checked is entry.token  # checked once on the first hit ...
    assert await p.token_for(b) == "tok1"  # ... and not re-scanned
    entry.token = "not a token\r\n"
    with pytest.raises(GrantError) as err:
        await p.token_for(b)
    assert err.value.step == "response"
    await p.aclose()


async def test_a_binding_object_gets_the_key_of_its_own_grant() -> None:
    """The cache key is remembered per binding object: a new object with the same id (a
    reload) but another grant gets its own key, hence its own token."""
    clock, ex = FakeClock(), FakeExchanger()
    p = provider(clock, ex)
    b = make_binding(URL)
    assert await p.token_for(b) == "tok1"
    assert await p.token_for(b) == "tok1"
    changed = replace(b, grant=replace(b.grant, audience="other"))
    assert changed.id == b.id
    assert await p.token_for(changed) == "tok2"
    assert await p.token_for(b) == "tok1"
    await p.aclose()
