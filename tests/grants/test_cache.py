"""Token cache: the lifetime table, backoff schedule, LRU bound, expiry, retain."""

from __future__ import annotations

import pytest

from supervisor.grants import cache
from supervisor.grants.cache import CacheKey, TokenCache
from supervisor.grants.errors import GrantError


@pytest.mark.parametrize("expires_in,ttl,expected", [
    (None, None, 270.0),  # default 300 - 30
    (0, None, 1.0),  # explicit 0 = expires now → floor, not the 300 s default
    (600, None, 570.0),
    (3600, None, 3570.0),
    (7200, None, 3570.0),  # capped at 3600
    (10**12, None, 3570.0),  # hostile value clamped
    (600, 120, 90.0),  # cache_ttl_seconds caps
    (60, 600, 30.0),
    (31, None, 1.0),  # minus skew, floor of 1 s
    (10, None, 1.0),
    (1, None, 1.0),
    (None, 5, 1.0),
])
def test_lifetime_table(expires_in: int | None, ttl: int | None, expected: float) -> None:
    assert cache.lifetime(expires_in, ttl) == expected


def test_backoff_schedule_doubles_caps_and_jitters() -> None:
    mid = [cache.backoff_delay(n, lambda: 0.5) for n in range(1, 9)]
    assert mid == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert cache.backoff_delay(1, lambda: 0.0) == pytest.approx(0.8)
    assert cache.backoff_delay(6, lambda: 0.999999) == pytest.approx(36.0, rel=1e-5)
    assert cache.backoff_delay(10_000, lambda: 0.5) == 30.0


def key(i: int) -> CacheKey:
    return CacheKey(f"b{i}", "https://t/token", "aud", "type", "a", ("s",))


def test_lru_bound_and_order() -> None:
    c = TokenCache(max_entries=3)
    for i in range(3):
        c.put(key(i), f"t{i}", 100, now=0)
    assert c.get(key(0), now=1) is not None  # 0 becomes most recent
    c.put(key(3), "t3", 100, now=2)
    assert len(c) == 3
    assert c.get(key(1), now=2) is None  # least recently used evicted
    assert {k.binding_id for k in c.keys()} == {"b0", "b2", "b3"}
    for i in range(4, 50):
        c.put(key(i), "t", 100, now=3)
        assert len(c) <= 3


def test_expired_entries_removed_and_never_served() -> None:
    c = TokenCache()
    c.put(key(1), "t1", 10, now=0)
    c.put(key(2), "t2", 100, now=0)
    assert c.get(key(1), now=9.99) is not None
    assert c.get(key(1), now=10) is None
    c.put(key(3), "t3", 100, now=50)  # put purges expired entries
    assert set(c.keys()) == {key(2), key(3)}


def test_failures_backoff_and_reset_on_success() -> None:
    c = TokenCache()
    err = GrantError("token_endpoint", "boom")
    f1 = c.fail(key(1), err, now=0, rand=lambda: 0.5)
    assert f1.until == 1.0 and c.backoff(key(1), 0.5) is f1
    assert c.backoff(key(1), 1.0) is None
    f2 = c.fail(key(1), err, now=1, rand=lambda: 0.5)
    assert f2.count == 2 and f2.until == 3.0
    c.put(key(1), "t", 100, now=4)
    f3 = c.fail(key(1), err, now=5, rand=lambda: 0.5)
    assert f3.count == 1  # a success resets the schedule


def test_retain_drops_other_bindings() -> None:
    c = TokenCache()
    for i in range(4):
        c.put(key(i), "t", 100, now=0)
    c.fail(key(9), GrantError("x", "y"), now=0, rand=lambda: 0.5)
    c.retain({"b1", "b3"})
    assert {k.binding_id for k in c.keys()} == {"b1", "b3"}
    assert c.backoff(key(9), 0) is None


def test_refresh_due_rule() -> None:
    c = TokenCache()
    e = c.put(key(1), "t", 100, now=0)
    assert not e.refresh_due(79.9)
    assert e.refresh_due(80)
    e.last_used = -30  # last use more than one lifetime ago: let it expire
    assert not e.refresh_due(80)
    e.last_used = -10
    assert e.refresh_due(80)
