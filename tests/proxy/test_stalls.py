"""Peers that stop reading, and idle pooled connections across many destinations (issue 12,
item 10): nothing may hold an upstream connection, a destination slot or buffers forever."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from supervisor.proxy.channel import PlainChannel
from supervisor.proxy.server import Limits
from tests.proxy.harness import endpoint, recv_response

STALL = 0.3  # Limits.send_timeout in these tests


def _wait_for(what: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


def _tiny_receiver() -> socket.socket:
    """A client socket with a tiny receive window: the proxy's sends fill it at once."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


def _limits(**kw: Any) -> Limits:
    return Limits(send_timeout=STALL, idle_timeout=30, body_timeout=30, **kw)


def test_agent_that_stops_reading_a_response_releases_everything(make_env: Any) -> None:
    """The agent asks for 64 MB and reads none of it: after ``send_timeout`` the proxy drops
    the agent connection (abort: its unsent buffer goes too), the upstream connection and
    the destination slot."""
    env = make_env(limits=_limits())
    port = env.upstream.port
    s = _tiny_receiver()
    s.connect(("127.0.0.1", env.proxy_port))
    try:
        s.sendall(
            f"GET http://127.0.0.1:{port}/download/{64 << 20} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        assert _wait_for(lambda: env.upstream.requests == 1)
        dest = ("127.0.0.1", port)
        released = _wait_for(
            lambda: env.run(lambda: env.proxy._slots.active(dest)) == 0
            and env.proxy.counters.active == 0
        )
        assert released, "a stalled agent still holds its slot / connection"
        assert env.run(env.proxy._pool.idle_count) == 0  # the half-sent upstream is gone
    finally:
        s.close()


def test_agent_that_pipelines_denials_without_reading_is_cut(make_env: Any) -> None:
    """Refusals answered into a connection the agent never reads: the proxy stops reading
    more requests once its answers back up, and cuts the connection after ``send_timeout``
    (it used to queue every answer in memory until the idle timeout)."""
    env = make_env(limits=_limits())
    s = _tiny_receiver()
    s.connect(("127.0.0.1", env.proxy_port))
    s.settimeout(3)
    one = b"GET http://127.0.0.9:1/ HTTP/1.1\r\nHost: 127.0.0.9:1\r\n\r\n"
    try:
        try:
            s.sendall(one * 200_000)  # ~10 MB of requests, ~50 MB of answers
        except (TimeoutError, ConnectionError):
            pass  # the proxy stopped reading (backpressure), or cut us already
        assert _wait_for(lambda: env.proxy.counters.active == 0), "still queueing answers"
        assert env.proxy.counters.requests < 200_000
    finally:
        s.close()


def test_upstream_that_stops_reading_an_upload_releases_everything(make_env: Any) -> None:
    """The other direction: an upstream that accepts and never reads the body."""
    env = make_env(bind=False, limits=_limits())
    accepted: list[asyncio.StreamWriter] = []

    async def deaf(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.transport.set_write_buffer_limits(0)
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        accepted.append(w)

    async def start() -> asyncio.Server:
        return await asyncio.start_server(deaf, "127.0.0.1", 0)

    server = env.call(start())
    port = server.sockets[0].getsockname()[1]
    env.policy.endpoints.append(endpoint("127.0.0.1", port))
    s = env.connect(timeout=3)
    size = 64 << 20

    def send() -> None:
        try:
            s.sendall(
                f"POST http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Length: {size}\r\n\r\n".encode()
            )
            block = b"x" * (1 << 20)
            for _ in range(size >> 20):
                s.sendall(block)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert _wait_for(lambda: len(accepted) == 1)
        released = _wait_for(
            lambda: env.run(lambda: env.proxy._slots.active(("127.0.0.1", port))) == 0
            and env.proxy.counters.active == 0
        )
        assert released, "an upstream that does not read holds the agent and the slot"
    finally:
        s.close()
        sender.join(10)
        env.call(_close(server, accepted))


async def _close(server: asyncio.Server, writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.transport.abort()
    server.close()


def test_idle_pool_is_capped_across_destinations(make_env: Any) -> None:
    """Many destinations, one idle connection each: the pool keeps at most
    ``max_idle_total`` of them (the oldest go first), whatever the per-destination cap."""

    async def resolver(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    env = make_env(bind=False, resolver=resolver, limits=_limits(max_idle_total=4))
    port = env.upstream.port
    names = [f"h{i}.test" for i in range(10)]
    for name in names:
        env.policy.endpoints.append(endpoint(name, port))
    with env.connect() as s:
        for name in names:
            s.sendall(
                f"GET http://{name}:{port}/ HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n".encode()
            )
            assert recv_response(s)[2] == b"ok"
    assert env.upstream.connections == 10
    assert env.run(env.proxy._pool.idle_count) == 4
    # The most recent ones are kept: a request to the last name reuses its connection.
    with env.connect() as s:
        s.sendall(
            f"GET http://{names[-1]}:{port}/ HTTP/1.1\r\nHost: {names[-1]}:{port}\r\n\r\n".encode()
        )
        assert recv_response(s)[2] == b"ok"
    assert env.upstream.connections == 10


def _socket_channel(
    send_timeout: float,
) -> tuple[asyncio.AbstractEventLoop, PlainChannel, socket.socket]:
    """A PlainChannel over a socketpair with small kernel buffers on both ends, so the
    transport's own buffer holds what the peer has not read."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    loop = asyncio.new_event_loop()

    async def open_() -> PlainChannel:
        reader, writer = await asyncio.open_connection(sock=a)
        return PlainChannel(reader, writer, send_timeout)

    return loop, loop.run_until_complete(open_()), b


def test_slow_but_steady_reader_is_not_cut() -> None:
    """The timeout is about progress: a peer that keeps reading, however slowly, is served
    even when one drain takes several timeouts long (512 KiB read at ~400 KiB/s)."""
    loop, ch, peer = _socket_channel(0.3)
    got = bytearray()
    stop = threading.Event()

    def read_slowly() -> None:
        while not stop.is_set() and len(got) < (1 << 19):
            got.extend(peer.recv(8192))
            time.sleep(0.02)

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    try:
        ch.write(b"x" * (1 << 19))
        started = time.monotonic()
        loop.run_until_complete(ch.drain())
        assert time.monotonic() - started > 0.6  # several timeouts long, yet not cut
        assert not ch.writer.transport.is_closing()
    finally:
        stop.set()
        reader.join(5)
        ch.close()
        peer.close()
        loop.close()


def test_reader_that_stops_is_cut_after_the_timeout() -> None:
    loop, ch, peer = _socket_channel(0.3)
    try:
        ch.write(b"x" * (1 << 20))
        started = time.monotonic()
        try:
            loop.run_until_complete(ch.drain())
            raise AssertionError("drain returned for a peer that reads nothing")
        except TimeoutError:
            pass
        assert 0.25 < time.monotonic() - started < 3
        assert ch.writer.transport.is_closing()  # aborted: its buffer is freed now
        assert ch.writer.transport.get_write_buffer_size() == 0
    finally:
        ch.close()
        peer.close()
        loop.close()
