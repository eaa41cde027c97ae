"""Floods: thousands of agent connections, slowloris, a 1 GB upload, the connection caps.

Each flood checks that other agents keep being served and that the test process's file
descriptors come back to their baseline once the clients are gone (nothing leaks).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from supervisor.proxy.server import Limits
from tests.proxy.harness import closed, recv_response, rss, upload


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))



def _get(port: int, path: str = "/", extra: str = "") -> bytes:
    return (
        f"GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n"
    ).encode()


def _served(env: Any) -> None:
    """A fresh agent connection gets a normal answer."""
    with env.connect() as s:
        s.sendall(_get(env.upstream.port))
        assert recv_response(s)[2] == b"ok"


@contextmanager
def _fd_baseline(env: Any) -> Iterator[None]:
    """Asserts on exit that descriptors return to the level seen on entry."""
    env.run(env.proxy.drop_idle_upstreams)
    before = _fds()
    yield
    env.run(env.proxy.drop_idle_upstreams)
    deadline = time.monotonic() + 15
    while _fds() > before and time.monotonic() < deadline:
        time.sleep(0.05)
        env.run(env.proxy.drop_idle_upstreams)
    assert _fds() <= before, f"{_fds() - before} descriptors leaked"


def test_2000_concurrent_agents_while_others_are_served(make_env: Any) -> None:
    env = make_env()
    port = env.upstream.port
    with _fd_baseline(env):
        flood: list[socket.socket] = []
        try:
            for _ in range(2000):
                flood.append(socket.create_connection(("127.0.0.1", env.proxy_port), timeout=30))
            for s in flood:
                s.sendall(_get(port))
            _served(env)  # while 2000 requests are in flight
            statuses = [recv_response(s)[0] for s in flood]
            assert statuses == [200] * 2000
            assert env.proxy.counters.refused_connections == 0
            _served(env)
        finally:
            for s in flood:
                s.close()
    assert env.run(lambda: env.proxy._slots.total_active()) == 0


def test_slowloris_is_cut_by_the_head_timeout_others_unaffected(make_env: Any) -> None:
    env = make_env(limits=Limits(head_timeout=0.5))
    with _fd_baseline(env):
        slow = [env.connect() for _ in range(100)]
        try:
            partial = b"GET http://127.0.0.1:1/ HTTP/1.1\r\nX-A: "
            for s in slow:
                s.sendall(partial[:5])
            cut_after = time.monotonic() + 3.0
            i = 5
            while time.monotonic() < cut_after and env.proxy.counters.timeouts < len(slow):
                for s in slow:  # one byte at a time, well inside any per-read timeout
                    try:
                        s.sendall(partial[i % len(partial) : i % len(partial) + 1])
                    except OSError:
                        pass
                i += 1
                _served(env)
                time.sleep(0.05)
            assert env.proxy.counters.timeouts >= len(slow)
            for s in slow:
                s.settimeout(5)
                assert closed(s)
            _served(env)
        finally:
            for s in slow:
                s.close()


def test_1gb_upload_streams_with_bounded_memory(make_env: Any) -> None:
    env = make_env()
    port = env.upstream.port
    size = 1 << 30
    block = b"u" * (1 << 20)
    with _fd_baseline(env):
        before = rss()
        with env.connect(timeout=60) as s:
            peak = upload(s, port, size, block, sample_every=32)
        assert peak - before < 64 * 1024 * 1024


def test_agent_connection_cap_answers_503_and_recovers(make_env: Any) -> None:
    env = make_env(limits=Limits(max_agent_connections=3))
    port = env.upstream.port
    assert env.proxy.max_agent_connections == 3
    with _fd_baseline(env):
        held = [env.connect() for _ in range(3)]
        try:
            for s in held:  # served, so certainly counted as active
                s.sendall(_get(port))
                assert recv_response(s)[0] == 200
            for _ in range(20):  # a small flood over the cap
                with env.connect() as extra:
                    extra.sendall(_get(port))
                    status, hdrs, body = recv_response(extra)
                    assert status == 503 and hdrs["connection"] == "close"
                    assert hdrs["x-openshell-proxy-error"] == "proxy_overloaded"
                    assert json.loads(body)["error"] == "proxy_overloaded"
                    assert closed(extra)
            assert env.proxy.counters.refused_connections == 20
            held[0].sendall(_get(port))  # the admitted ones are unaffected
            assert recv_response(held[0])[2] == b"ok"
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5
        while env.proxy.counters.active and time.monotonic() < deadline:
            time.sleep(0.02)
        _served(env)  # room again


def test_destination_cap_queues_then_503(make_env: Any) -> None:
    env = make_env(limits=Limits(max_active_per_destination=1, destination_wait=0.3))
    port = env.upstream.port
    upload = (
        f"POST http://127.0.0.1:{port}/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Length: 10\r\n\r\n12345"
    ).encode()
    with env.connect() as busy, env.connect() as other:
        busy.sendall(upload)  # holds the only upstream slot while its body is incomplete
        deadline = time.monotonic() + 5
        while env.upstream.requests < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        other.sendall(_get(port))
        status, hdrs, _ = recv_response(other)  # waited 0.3 s for the slot, then refused
        assert status == 503 and hdrs["x-openshell-proxy-error"] == "upstream_busy"
        assert env.proxy.counters.busy == 1
        other.sendall(_get(port))  # a GET refusal keeps the connection
        busy.sendall(b"67890")  # the slot frees while this request waits: it is served
        assert recv_response(busy)[2] == b"10"
        assert recv_response(other)[2] == b"ok"
    assert env.run(lambda: env.proxy._slots.total_active()) == 0


def test_tunnel_holds_a_destination_slot(make_env: Any) -> None:
    env = make_env(bind=False, limits=Limits(max_active_per_destination=1, destination_wait=0.2))
    port = env.upstream.port
    connect = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    with env.connect() as tunnel:
        tunnel.sendall(connect)
        assert recv_response(tunnel, head_only=True)[0] == 200
        with env.connect() as second:
            second.sendall(connect)
            status, hdrs, _ = recv_response(second)
            assert status == 503 and hdrs["x-openshell-proxy-error"] == "upstream_busy"
    deadline = time.monotonic() + 5
    while env.run(lambda: env.proxy._slots.total_active()) and time.monotonic() < deadline:
        time.sleep(0.02)
    _served(env)


def test_upload_stops_when_the_upstream_goes_away(make_env: Any) -> None:
    import threading

    from tests.proxy.harness import endpoint

    env = make_env(bind=False)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    dead_port = lsock.getsockname()[1]
    env.policy.endpoints.append(endpoint("127.0.0.1", dead_port))

    def upstream() -> None:  # reads a little of the request, then resets the connection
        conn, _ = lsock.accept()
        conn.recv(65536)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    t = threading.Thread(target=upstream, daemon=True)
    t.start()
    size = 100 * (1 << 20)
    sent = 0
    block = b"d" * (1 << 20)
    with env.connect(timeout=10) as s:
        s.sendall(
            f"POST http://127.0.0.1:{dead_port}/upload HTTP/1.1\r\nHost: 127.0.0.1:{dead_port}\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        try:
            while sent < size:
                s.sendall(block)
                sent += len(block)
        except OSError:
            pass
        else:
            assert recv_response(s)[0] == 502
    t.join(5)
    lsock.close()
    # The proxy noticed the dead upstream and cut the agent instead of swallowing 100 MB.
    assert sent < size
