"""A per-connection read deadline whose timer is re-armed lazily.

``asyncio.timeout`` costs a Timeout object, a timer handle pushed on the loop's heap and
its cancellation for every wait: twice per proxied request. Keep-alive deadlines only move
forward (now + 60 s idle, now + 120 s response), so one timer per connection suffices:
each wait just records its deadline; when the timer fires it either re-arms for the
recorded (later) deadline or, if that has passed while the task is still waiting, cancels
the task, which ``wait`` turns into ``TimeoutError`` exactly like ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


def cancellation_as(
    err: asyncio.CancelledError, task: asyncio.Task[Any], ours: bool, exc: type[BaseException]
) -> BaseException:
    """What to raise for a cancellation: ``exc`` when we cancelled the task ourselves to end
    a wait (its cancel count is given back), else ``err`` (someone else cancels it)."""
    if not ours:
        return err
    task.uncancel()
    return exc()


class Deadline:
    __slots__ = ("_armed_for", "_expired", "_handle", "_loop", "_task", "_waiting", "_when")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
        self._when = 0.0
        self._task: asyncio.Task[object] | None = None
        self._waiting = False
        self._expired = False

    async def wait(self, aw: Awaitable[T], timeout: float) -> T:
        """``await aw``, raising TimeoutError once ``timeout`` seconds have passed."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return await self.wait_until(aw, loop.time() + timeout)

    async def wait_until(self, aw: Awaitable[T], when: float) -> T:
        """``await aw`` with an absolute deadline (loop time)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        if when <= loop.time():
            if asyncio.iscoroutine(aw):
                aw.close()  # never awaited: say so quietly
            raise TimeoutError
        self._when = when
        self._task = task
        if self._handle is None or self._armed_for > when:
            self._arm(when)
        self._waiting = True
        try:
            return await aw
        except asyncio.CancelledError as err:
            raise cancellation_as(err, task, self._expired, TimeoutError) from None
        finally:
            self._waiting = False
            self._expired = False

    def cancel(self) -> None:
        """Drop the timer (the connection is done): nothing keeps the task alive."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._task = None

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        if not self._waiting or self._task is None:
            return  # re-armed by the next wait
        assert self._loop is not None
        if self._loop.time() < self._when:
            self._arm(self._when)  # the deadline moved on since this timer was set
            return
        self._expired = True
        self._task.cancel()
