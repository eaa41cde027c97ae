"""Per-destination cap on active upstream connections, with a bounded FIFO wait.

A slot is held from the moment a request takes (or opens) an upstream connection until
that connection is back in the pool or closed; idle pooled connections hold none. A
request that finds every slot of its destination taken waits, first come first served,
at most ``timeout`` seconds, then the caller answers 503. Releasing hands the slot
straight to the oldest waiter, so a stream of new requests cannot overtake it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Hashable


class DestinationSlots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._active: dict[Hashable, int] = {}
        self._waiters: dict[Hashable, collections.deque[asyncio.Future[None]]] = {}

    def active(self, key: Hashable) -> int:
        return self._active.get(key, 0)

    def total_active(self) -> int:
        return sum(self._active.values())

    def waiting(self, key: Hashable) -> int:
        return len(self._waiters.get(key, ()))

    def try_acquire(self, key: Hashable) -> bool:
        n = self._active.get(key, 0)
        if n >= self.limit or self._waiters.get(key):
            return False
        self._active[key] = n + 1
        return True

    async def acquire(self, key: Hashable, timeout: float) -> bool:
        """True once a slot is held (release it exactly once); False after ``timeout``."""
        if self.try_acquire(key):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(key, collections.deque())
        queue.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
            return True
        except TimeoutError:
            # Handed over in the same loop turn as the deadline: the slot is ours, keep it.
            return fut.done() and not fut.cancelled()
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(key)  # handed over, but we are going away: pass it on
            raise
        finally:
            if not fut.done():
                fut.cancel()
            # Cancelled (by us, or with the task on timeout / cancellation): still queued.
            # Resolved: release() already popped it, no scan needed.
            if fut.cancelled():
                with contextlib.suppress(ValueError):
                    queue.remove(fut)
            if not queue and self._waiters.get(key) is queue:
                del self._waiters[key]

    def release(self, key: Hashable) -> None:
        queue = self._waiters.get(key)
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot changes hands; the count stays
                return
        n = self._active.get(key, 0) - 1
        if n > 0:
            self._active[key] = n
        else:
            self._active.pop(key, None)
