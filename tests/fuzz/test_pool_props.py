"""The idle pool under any sequence of gives and takes across destinations (issue 12 item
10): both caps hold, nothing handed out is closed, everything dropped is closed once."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.proxy.upstream import Pool, PoolKey, Upstream


class _Ch:
    def usable(self) -> bool:
        return True


class _Conn:
    buf = b""


class _Up:
    """What the pool touches of an ``Upstream``."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.ch = _Ch()
        self.conn = _Conn()
        self.idle_since = 0.0
        self.reused = False
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


_ops = st.lists(
    st.tuples(st.sampled_from(["give", "take", "return"]), st.integers(0, 5)), max_size=80
)


@settings(max_examples=200, deadline=None)
@given(_ops, st.integers(1, 4), st.integers(0, 6))
def test_pool_caps_and_ownership(ops: list[tuple[str, int]], per_key: int, total: int) -> None:
    pool = Pool(per_key, 3600.0, total)
    out: list[_Up] = []  # handed out by take, owned by the caller
    made: list[_Up] = []
    for op, k in ops:
        key: PoolKey = ("http", f"h{k}", 80)
        if op == "give":
            up = _Up(key)
            made.append(up)
            pool.give(cast(Upstream, up))
        elif op == "return":  # a used connection comes back after its exchange
            if out:
                pool.give(cast(Upstream, out.pop(k % len(out))))
        else:
            got = cast(Any, pool.take(key))
            if got is not None:
                assert got.key == key and got.closed == 0
                out.append(got)
        assert pool.idle_count() <= total
        idle = [u for u in made if u.closed == 0 and u not in out]
        assert len(idle) == pool.idle_count()
        for k2 in range(6):
            assert sum(1 for u in idle if u.key[1] == f"h{k2}") <= per_key
    assert all(u.closed <= 1 for u in made)
    pool.close_all()
    assert pool.idle_count() == 0
    assert all(u.closed == 1 for u in made if u not in out)
    assert all(u.closed == 0 for u in out)
