"""Deadline: lazily re-armed per-connection timeouts, and the proxy timeouts built on it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import warnings
from typing import Any

import pytest

from supervisor.proxy.deadline import Deadline
from supervisor.proxy.server import Limits
from tests.proxy.harness import closed, endpoint, recv_response


def test_result_before_the_deadline() -> None:
    async def go() -> None:
        dl = Deadline()
        assert await dl.wait(asyncio.sleep(0, result=7), 1.0) == 7

    asyncio.run(go())


def test_timeout_leaves_the_task_usable() -> None:
    async def go() -> None:
        dl = Deadline()
        with pytest.raises(TimeoutError):
            await dl.wait(asyncio.sleep(5), 0.05)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        assert await dl.wait(asyncio.sleep(0.01, result="again"), 1.0) == "again"

    asyncio.run(go())


def test_later_deadline_survives_an_earlier_timer() -> None:
    async def go() -> None:
        dl = Deadline()
        await dl.wait(asyncio.sleep(0), 0.1)  # arms a timer for +0.1 s
        # The timer fires mid-wait, sees the deadline moved on, and re-arms.
        assert await dl.wait(asyncio.sleep(0.3, result="ok"), 2.0) == "ok"

    asyncio.run(go())


def test_earlier_deadline_rearms_the_timer() -> None:
    async def go() -> None:
        dl = Deadline()
        await dl.wait(asyncio.sleep(0), 30.0)  # timer armed far away
        with pytest.raises(TimeoutError):
            await dl.wait(asyncio.sleep(5), 0.05)

    asyncio.run(go())


def test_outside_cancellation_is_not_a_timeout() -> None:
    async def go() -> None:
        dl = Deadline()
        task = asyncio.create_task(dl.wait(asyncio.sleep(5), 10.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


def test_past_deadline_and_cancel() -> None:
    async def go() -> None:
        dl = Deadline()
        loop = asyncio.get_running_loop()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the unawaited coroutine is closed, not leaked
            with pytest.raises(TimeoutError):
                await dl.wait_until(asyncio.sleep(1), loop.time() - 1)
        await dl.wait(asyncio.sleep(0), 10.0)
        dl.cancel()  # drops the timer; the deadline still works afterwards
        assert await dl.wait(asyncio.sleep(0, result=1), 1.0) == 1

    asyncio.run(go())


def test_idle_keep_alive_connection_is_closed(make_env: Any) -> None:
    env = make_env(limits=Limits(idle_timeout=0.3))
    port = env.upstream.port
    with env.connect(timeout=5) as s:
        s.sendall(
            f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        assert recv_response(s)[2] == b"ok"
        assert closed(s)  # nothing more sent: cut after the idle timeout
    assert env.proxy.counters.timeouts == 1


def test_silent_upstream_is_502_after_the_response_timeout(make_env: Any) -> None:
    env = make_env(bind=False, limits=Limits(response_timeout=0.3))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    env.policy.endpoints.append(endpoint("127.0.0.1", port))
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(lsock.accept()[0]), daemon=True)
    t.start()
    try:
        with env.connect(timeout=5) as s:
            s.sendall(
                f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            )
            status, hdrs, body = recv_response(s)
        assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"
        assert json.loads(body)["detail"] == "upstream timed out"
    finally:
        t.join(5)
        for c in accepted:
            c.close()
        lsock.close()
