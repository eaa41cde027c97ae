"""DestinationSlots: the per-destination cap, FIFO hand-over, no leaked slot."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.proxy.slots import DestinationSlots

K = ("h", 443)


def test_limit_and_release() -> None:
    slots = DestinationSlots(2)
    assert slots.try_acquire(K) and slots.try_acquire(K)
    assert not slots.try_acquire(K)
    assert slots.try_acquire(("other", 443))  # per destination
    slots.release(K)
    assert slots.active(K) == 1 and slots.try_acquire(K)
    slots.release(K)
    slots.release(K)
    assert slots.active(K) == 0 and slots.total_active() == 1


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DestinationSlots(0)


def test_waiters_are_served_in_order_and_time_out() -> None:
    async def go() -> None:
        slots = DestinationSlots(1)
        assert await slots.acquire(K, 1.0)
        order: list[int] = []

        async def wait(i: int) -> None:
            if await slots.acquire(K, 5.0):
                order.append(i)
                await asyncio.sleep(0)
                slots.release(K)

        tasks = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert not slots.try_acquire(K)  # waiters queued: no barging in
        slots.release(K)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2] and slots.active(K) == 0
        assert await slots.acquire(K, 1.0)
        assert not await slots.acquire(K, 0.05)  # times out ...
        assert slots.waiting(K) == 0  # ... and leaves no stale entry behind
        slots.release(K)
        assert slots.active(K) == 0

    asyncio.run(go())


def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    async def go() -> None:
        slots = DestinationSlots(1)
        assert slots.try_acquire(K)
        waiter = asyncio.create_task(slots.acquire(K, 5.0))
        await asyncio.sleep(0.01)
        slots.release(K)  # handed to the waiter ...
        waiter.cancel()  # ... which goes away before it runs: the slot must be passed on
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.active(K) == 0
        assert slots.try_acquire(K)

        other = asyncio.create_task(slots.acquire(K, 5.0))
        await asyncio.sleep(0.01)
        other.cancel()  # cancelled while still queued
        with pytest.raises(asyncio.CancelledError):
            await other
        assert slots.waiting(K) == 0
        slots.release(K)
        assert slots.active(K) == 0 and slots.try_acquire(K)

    asyncio.run(go())
