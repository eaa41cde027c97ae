"""Zero-copy relays (supervisor.proxy.splice) attacked: exact body lengths with pipelined and
surplus bytes, truncation and resets on either side, peers that stop reading, idle and
half-closed tunnels, and the copying fallback. Every test checks the pipe was (or was not)
used, so a silent fallback cannot pass for the spliced path."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.proxy import splice
from supervisor.proxy.server import Limits
from supervisor.telemetry import ProxyStats
from tests.proxy.harness import SECRET, Env, closed, endpoint, recv_response

BIG = 4 * 2**20 + 17  # spliced (more than the buffers hold), not a multiple of a block
STALL = 0.3


def _wait_for(what: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.02)
    return what()


def _spliced(env: Env) -> int:
    gate = env.proxy._zero_copy
    return 0 if gate is None else gate.spliced


_INITIAL: dict[int, int] = {}  # id(env) -> the splice gate's free count at start


def _splicing(env: Env) -> bool:
    """A transfer holds the gate's descriptors (it is splicing now)."""
    gate = env.proxy._zero_copy
    return gate is not None and gate.free < _INITIAL[id(env)]


def _released(env: Env, port: int) -> bool:
    """No agent connection, destination slot or splice descriptors are left held."""
    gate = env.proxy._zero_copy

    def done() -> bool:
        return (
            env.proxy.counters.active == 0
            and env.run(lambda: env.proxy._slots.active(("127.0.0.1", port))) == 0
            and (gate is None or gate.free == _INITIAL[id(env)])
        )

    return _wait_for(done)


def _post(port: int, size: int, path: str = "/upload", extra: str = "") -> bytes:
    return (
        f"POST http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Length: {size}\r\n{extra}\r\n"
    ).encode()


def _get(port: int, path: str) -> bytes:
    return f"GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def _payload(size: int) -> bytes:
    """Bytes whose every offset is distinct enough to catch a shifted or repeated block."""
    block = bytes(range(251)) * (size // 251 + 1)
    return block[:size]


class _Origin:
    """A blocking one-connection-at-a-time origin in a thread; ``handle(conn)`` serves
    each accepted connection."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.errors: list[BaseException] = []
        self._handle = handle
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(10)
                self._handle(conn)
        except OSError as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self.sock.close()


def _recv_all(s: socket.socket, n: int | None = None) -> bytes:
    out = bytearray()
    while n is None or len(out) < n:
        d = s.recv(1 << 20 if n is None else min(1 << 20, n - len(out)))
        if not d:
            break
        out += d
    return bytes(out)


def _rst(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def env_of(make_env: Any, request: Any) -> Callable[..., Env]:
    """``make_env`` on asyncio's loop and on uvloop (when installed: the product uses it
    then), with the splice gate's starting size remembered (for leak checks)."""
    loop: dict[str, Any] = {}
    if request.param == "uvloop":
        loop["loop_factory"] = pytest.importorskip("uvloop").new_event_loop

    def make(**kw: Any) -> Env:
        env: Env = make_env(**loop, **kw)
        gate = env.proxy._zero_copy
        _INITIAL[id(env)] = gate.free if gate is not None else 0
        return env

    return make


# -- the forward path: request bodies -------------------------------------------------------


def test_upload_is_spliced_exactly_and_a_pipelined_request_follows(env_of: Any) -> None:
    env = env_of()
    port = env.upstream.port
    body = _payload(BIG)
    with env.connect() as s:
        s.sendall(_post(port, BIG) + body + _get(port, "/headers"))
        status, _, answer = recv_response(s)
        assert status == 200 and int(answer) == BIG  # the origin counted exactly the body
        status, _, echoed = recv_response(s)  # the pipelined request was parsed, judged
        assert status == 200 and f"Bearer {SECRET}".encode() in echoed
    assert _spliced(env) == 1
    assert env.upstream.connections == 1  # the upstream was pooled after the body
    assert _released(env, port)


def test_surplus_bytes_after_the_body_are_a_new_request_not_body(env_of: Any) -> None:
    """An agent sends more than its Content-Length: the surplus is parsed as the next
    request (here garbage: 400 and close), never relayed inside the body."""
    got: list[bytes] = []

    def origin(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        got.append(rest + _recv_all(conn, BIG - len(rest)))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.settimeout(0.5)
        try:
            got.append(conn.recv(65536))  # nothing more may come on this connection
        except TimeoutError:
            got.append(b"")

    o = _Origin(origin)
    env = env_of(bind=False)
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    try:
        with env.connect() as s:
            s.sendall(_post(o.port, BIG) + _payload(BIG) + b"SMUGGLED / HTTP/1.1\r\nX: y\r\n\r\n")
            assert recv_response(s)[0] == 200
            status, hdrs, _ = recv_response(s)
            assert status == 400 and hdrs["connection"] == "close"
        assert _wait_for(lambda: len(got) == 2)
        assert got[0] == _payload(BIG) and got[1] == b""
        assert _spliced(env) == 1
    finally:
        o.close()


def test_truncated_upload_closes_both_sides(env_of: Any) -> None:
    env = env_of()
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG // 2))
        assert _wait_for(lambda: _splicing(env))
        s.shutdown(socket.SHUT_WR)
        assert closed(s)  # no answer: the request was never complete
    assert _released(env, port)
    assert env.run(env.proxy._pool.idle_count) == 0  # the half-fed upstream is not pooled


def test_agent_reset_mid_upload_releases_everything(env_of: Any) -> None:
    env = env_of(limits=Limits(max_active_per_destination=1))
    port = env.upstream.port
    s = env.connect()
    s.sendall(_post(port, 8 * BIG) + _payload(BIG))
    assert _wait_for(lambda: _splicing(env))
    _rst(s)
    assert _released(env, port)
    with env.connect() as again:  # the only slot is free again
        again.sendall(_get(port, "/headers"))
        assert recv_response(again)[0] == 200


def test_upstream_that_stops_reading_a_spliced_upload_is_cut(env_of: Any) -> None:
    stop = threading.Event()

    def deaf(conn: socket.socket) -> None:  # reads past what the proxy buffered, then stops
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _recv_all(conn, 3 << 20)
        stop.wait(10)

    o = _Origin(deaf)
    env = env_of(bind=False, limits=Limits(send_timeout=STALL, body_timeout=30))
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    s = env.connect(timeout=5)
    size = 64 << 20

    def send() -> None:
        try:
            s.sendall(_post(o.port, size))
            block = b"x" * (1 << 20)
            for _ in range(size >> 20):
                s.sendall(block)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        assert _wait_for(lambda: _splicing(env))
        assert _released(env, o.port), "an upstream that reads nothing holds the agent"
        assert _spliced(env) == 1
    finally:
        stop.set()
        s.close()
        sender.join(10)
        o.close()


def test_agent_pausing_inside_a_spliced_body_is_cut_after_body_timeout(env_of: Any) -> None:
    env = env_of(limits=Limits(body_timeout=0.4))
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG // 2))
        started = time.monotonic()
        assert _wait_for(lambda: _splicing(env))  # waiting on the socket, not the buffer
        assert closed(s)
        assert 0.3 < time.monotonic() - started < 5
    assert _released(env, port)


# -- the forward path: response bodies ------------------------------------------------------


def test_download_is_spliced_and_the_connections_are_reused(env_of: Any) -> None:
    env = env_of()
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_get(port, f"/download/{BIG}") + _get(port, "/headers"))
        status, _, body = recv_response(s)
        assert status == 200 and body == b"x" * BIG
        status, _, echoed = recv_response(s)
        assert status == 200 and echoed.startswith(b"GET /headers")
        s.sendall(_get(port, f"/download/{BIG + 1}"))
        assert recv_response(s)[2] == b"x" * (BIG + 1)
    assert _spliced(env) == 2
    assert env.upstream.connections == 1  # the upstream resumed reading and was pooled
    assert _released(env, port)


def test_upstream_surplus_and_truncation_never_reach_the_agent_as_body(env_of: Any) -> None:
    """The origin answers with more bytes than its Content-Length on one connection and
    with fewer (then closes) on the next: the agent gets exactly the declared body, then
    the next response; a short body ends the agent's connection."""
    calls: list[int] = []

    def origin(conn: socket.socket) -> None:
        conn.recv(65536)
        calls.append(1)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode()
        if len(calls) == 1:  # (a pooled connection would also carry the surplus over)
            head = head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            conn.sendall(head + _payload(BIG) + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad")
            time.sleep(0.3)
        else:
            conn.sendall(head + _payload(BIG // 2))

    o = _Origin(origin)
    env = env_of(bind=False)
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    try:
        with env.connect() as s:
            s.sendall(_get(o.port, "/a") + b"\r\n")
            status, _, body = recv_response(s)
            assert status == 200 and body == _payload(BIG)
            s.settimeout(0.5)
            try:
                assert s.recv(1) == b""  # the surplus was not relayed
            except TimeoutError:
                pass
        with env.connect() as s:
            s.sendall(_get(o.port, "/b"))
            got = _recv_all(s)
            head, _, partial = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and partial == _payload(BIG // 2)
        assert _spliced(env) == 2
        assert _released(env, o.port)
    finally:
        o.close()


def test_close_delimited_download_is_spliced_to_the_end(env_of: Any) -> None:
    """A response without length ends with the upstream's close: every byte reaches the
    agent, then its connection closes; an upstream that goes quiet mid-body is cut after
    upstream_idle_timeout."""

    def origin(conn: socket.socket) -> None:
        path = conn.recv(65536).split(b" ")[1]
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + _payload(BIG))
        if path.endswith(b"/stall"):
            time.sleep(3)

    o = _Origin(origin)
    env = env_of(bind=False, limits=Limits(upstream_idle_timeout=0.4))
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    try:
        with env.connect() as s:
            s.sendall(_get(o.port, "/all"))
            head, _, body = _recv_all(s).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and body == _payload(BIG)
        with env.connect() as s:
            s.sendall(_get(o.port, "/stall"))
            started = time.monotonic()
            body = _recv_all(s).partition(b"\r\n\r\n")[2]
            assert body == _payload(BIG) and time.monotonic() - started < 2.5
        assert _spliced(env) == 2
        assert _released(env, o.port)
    finally:
        o.close()


def test_agent_that_stops_reading_a_spliced_download_is_cut(env_of: Any) -> None:
    env = env_of(limits=Limits(send_timeout=STALL))
    port = env.upstream.port
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", env.proxy_port))
    try:
        s.sendall(_get(port, f"/download/{64 << 20}"))
        assert len(_recv_all(s, 2 << 20)) == 2 << 20  # read some, through the pipe
        assert _splicing(env)
        assert _released(env, port), "a stalled agent still holds its slot"
        assert env.run(env.proxy._pool.idle_count) == 0
        assert _spliced(env) == 1
    finally:
        s.close()


def test_agent_reset_mid_download_releases_everything(env_of: Any) -> None:
    env = env_of()
    port = env.upstream.port
    s = env.connect()
    s.sendall(_get(port, f"/download/{256 << 20}"))
    assert len(_recv_all(s, 2 << 20)) == 2 << 20  # some came through the pipe
    assert _splicing(env)
    _rst(s)
    assert _released(env, port)
    assert env.run(env.proxy._pool.idle_count) == 0
    assert _spliced(env) == 1


# -- raw tunnels ------------------------------------------------------------------------------


def _tunnel(env: Env, port: int, timeout: float = 10.0) -> socket.socket:
    s = env.connect(timeout=timeout)
    s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    _connected(s)
    return s


def _connected(s: socket.socket) -> None:
    """Read the CONNECT answer byte by byte: what follows it is the tunnel's."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        d = s.recv(1)
        assert d, head
        head += d
    assert head.startswith(b"HTTP/1.1 200 "), head


def test_tunnel_half_close_each_way_is_passed_on(env_of: Any) -> None:
    """The agent finishes sending first (the origin answers after EOF), then the origin
    finishes first (the agent keeps sending after EOF): every byte arrives, both ways."""
    got: list[bytes] = []

    def origin(conn: socket.socket) -> None:
        first = conn.recv(1)
        if first == b"A":  # the agent half-closes first
            data = first + _recv_all(conn)
            conn.sendall(data[::-1])
        else:  # the origin half-closes first
            conn.sendall(_payload(BIG))
            conn.shutdown(socket.SHUT_WR)
            got.append(first + _recv_all(conn))

    o = _Origin(origin)
    env = env_of(bind=False)
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    try:
        sent = b"A" + _payload(BIG)
        with _tunnel(env, o.port) as s:
            s.sendall(sent)
            s.shutdown(socket.SHUT_WR)
            assert _recv_all(s) == sent[::-1]
        with _tunnel(env, o.port) as s:
            s.sendall(b"B")
            assert _recv_all(s) == _payload(BIG)  # EOF came through, the agent still sends
            s.sendall(_payload(BIG))
            s.shutdown(socket.SHUT_WR)
            assert _wait_for(lambda: got == [b"B" + _payload(BIG)])
            assert _recv_all(s) == b""
        assert _spliced(env) >= 3
        assert _released(env, o.port)
    finally:
        o.close()


def test_idle_spliced_tunnel_is_closed(env_of: Any) -> None:
    def echo(conn: socket.socket) -> None:
        while data := conn.recv(1 << 20):
            conn.sendall(data)

    o = _Origin(echo)
    env = env_of(bind=False, limits=Limits(tunnel_idle_timeout=0.6))
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    try:
        with _tunnel(env, o.port) as s:
            s.sendall(_payload(BIG))
            assert _recv_all(s, BIG) == _payload(BIG)
            started = time.monotonic()
            assert _recv_all(s) == b""  # closed by the proxy: nothing moved
            assert 0.4 < time.monotonic() - started < 5
        assert env.proxy.counters.timeouts == 1
        assert _released(env, o.port)
    finally:
        o.close()


def test_tunnel_agent_that_stops_reading_is_cut(env_of: Any) -> None:
    stop = threading.Event()

    def flood(conn: socket.socket) -> None:
        block = b"z" * (1 << 20)
        while not stop.is_set():
            conn.sendall(block)

    o = _Origin(flood)
    env = env_of(bind=False, limits=Limits(send_timeout=STALL))
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", env.proxy_port))
    try:
        s.sendall(
            f"CONNECT 127.0.0.1:{o.port} HTTP/1.1\r\nHost: 127.0.0.1:{o.port}\r\n\r\n".encode()
        )
        _connected(s)
        assert len(_recv_all(s, 2 << 20)) == 2 << 20  # read some, through the pipe
        assert _splicing(env)
        assert _released(env, o.port), "a tunnel whose agent reads nothing is kept"
        assert env.proxy.counters.timeouts == 1
        assert _spliced(env) == 1
    finally:
        stop.set()
        s.close()
        o.close()


def test_tunnel_reset_by_either_side_mid_transfer(env_of: Any) -> None:
    def reset_after_some(conn: socket.socket) -> None:
        conn.sendall(_payload(BIG))
        conn.recv(1 << 16)
        _rst(conn)

    o = _Origin(reset_after_some)
    env = env_of(bind=False)
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    try:
        with _tunnel(env, o.port) as s:  # the origin resets
            assert _recv_all(s, BIG) == _payload(BIG)
            s.sendall(b"go")
            try:
                assert _recv_all(s) == b""
            except ConnectionResetError:
                pass
        assert _released(env, o.port)
        s = _tunnel(env, o.port)  # the agent resets
        _recv_all(s, 1 << 16)
        _rst(s)
        assert _released(env, o.port)
        assert _spliced(env) >= 1
    finally:
        o.close()


# -- fallbacks, accounting, descriptors --------------------------------------------------------


def test_without_spare_descriptors_bodies_are_copied(env_of: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr("supervisor.proxy.server._spare_fds", lambda agents: 0)
    env = env_of()
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG) + _get(port, f"/download/{BIG}"))
        assert int(recv_response(s)[2]) == BIG
        assert recv_response(s)[2] == b"x" * BIG
    assert _spliced(env) == 0


def test_kernel_refusing_splice_falls_back_to_copying(env_of: Any, monkeypatch: Any) -> None:
    def refuse(*_a: Any, **_k: Any) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(splice.os, "splice", refuse)
    env = env_of()
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG) + _get(port, f"/download/{BIG}"))
        assert int(recv_response(s)[2]) == BIG
        assert recv_response(s)[2] == b"x" * BIG
        s.sendall(_get(port, "/headers"))
        assert recv_response(s)[0] == 200
    assert _spliced(env) == 0
    assert _released(env, port)


@pytest.mark.parametrize("side", ["into the pipe", "out of the pipe"])
def test_kernel_refusing_mid_transfer_hands_over_exactly(
    env_of: Any, monkeypatch: Any, side: str
) -> None:
    """The kernel refuses after 1 MiB went through (into or out of the pipe): the copying
    path takes over with what the pipe held, and the body stays exact both ways."""
    real = os.splice
    moved = {"n": 0}

    def flaky(src: int, dst: int, count: int, *a: Any, **k: Any) -> int:
        out = stat.S_ISFIFO(os.fstat(src).st_mode)
        if moved["n"] >= 1 << 20 and out == (side == "out of the pipe"):
            raise OSError(errno.EINVAL, "Invalid argument")
        n = real(src, dst, count, *a, **k)
        moved["n"] += n if out else 0
        return n

    monkeypatch.setattr(splice.os, "splice", flaky)
    env = env_of()
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG) + _get(port, f"/download/{BIG}"))
        assert int(recv_response(s)[2]) == BIG
        assert recv_response(s)[2] == b"x" * BIG
        s.sendall(_post(port, BIG) + _payload(BIG))
        assert int(recv_response(s)[2]) == BIG
    assert moved["n"] >= 1 << 20
    assert _released(env, port)


def test_other_splice_errors_end_the_exchange_like_a_reset(
    env_of: Any, monkeypatch: Any, caplog: Any
) -> None:
    """An error no stream would raise (EIO) closes the connections as a reset does:
    slot and descriptors released, no traceback logged as an internal failure."""

    def broken(*_a: Any, **_k: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(splice.os, "splice", broken)
    env = env_of()
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_get(port, f"/download/{BIG}"))
        head, _, body = _recv_all(s).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and len(body) < BIG
    assert _released(env, port)
    assert "proxy connection failed" not in caplog.text


def test_zero_copy_off_is_the_copying_path(env_of: Any) -> None:
    env = env_of(limits=Limits(zero_copy=False))
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG))
        assert int(recv_response(s)[2]) == BIG
    assert env.proxy._zero_copy is None


def test_descriptors_for_splicing_are_bounded_and_the_rest_copies(
    env_of: Any, monkeypatch: Any
) -> None:
    """Room for two transfers: six tunnels moving data at once all work, at most two
    directions splice at any moment (the others copy), and every slot comes back."""
    monkeypatch.setattr(
        "supervisor.proxy.server._spare_fds", lambda agents: 2 * splice.FDS_PER_SPLICE
    )

    def echo(conn: socket.socket) -> None:
        while data := conn.recv(1 << 20):
            conn.sendall(data)

    o = _Origin(echo)
    env = env_of(bind=False)
    env.policy.endpoints.append(endpoint("127.0.0.1", o.port))
    gate = env.proxy._zero_copy
    assert gate is not None and gate.free == 2
    lowest = [2]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], gate.free)
            time.sleep(0.001)

    def one(results: list[bool]) -> None:
        with _tunnel(env, o.port) as s:
            sender = threading.Thread(target=s.sendall, args=(_payload(BIG),), daemon=True)
            sender.start()
            results.append(_recv_all(s, BIG) == _payload(BIG))
            sender.join(10)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results: list[bool] = []
    workers = [threading.Thread(target=one, args=(results,)) for _ in range(6)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
    finally:
        stop.set()
        watcher.join(5)
        o.close()
    assert results == [True] * 6
    assert lowest[0] >= 0 and _spliced(env) >= 1  # never more than two at once
    assert _released(env, o.port)


def test_spliced_bytes_are_counted_in_the_upstream_statistics(env_of: Any) -> None:
    stats = ProxyStats(count_bytes=True)
    env = env_of(stats=stats)
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(_post(port, BIG) + _payload(BIG))
        assert int(recv_response(s)[2]) == BIG
        s.sendall(_get(port, f"/download/{BIG}"))
        assert len(recv_response(s)[2]) == BIG
    assert _spliced(env) == 2
    assert BIG < stats.bytes_to_upstream < BIG + 4096
    assert BIG < stats.bytes_from_upstream < BIG + 4096


def test_no_descriptor_is_left_behind(env_of: Any) -> None:
    env = env_of()
    port = env.upstream.port
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with env.connect() as s:
            s.sendall(_post(port, BIG) + _payload(BIG))
            assert int(recv_response(s)[2]) == BIG
        s = env.connect()
        s.sendall(_post(port, BIG) + _payload(BIG // 2))
        assert _wait_for(lambda: _splicing(env))
        _rst(s)
    assert _released(env, port)
    env.proxy._pool.close_all()
    assert _wait_for(lambda: len(os.listdir("/proc/self/fd")) <= before)
    assert _spliced(env) >= 5


# -- exact boundaries, whatever the buffering -----------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=st.integers(splice.MIN_BODY - 2, 3 * splice.MIN_BODY),
    with_head=st.integers(0, 600_000),
    pause=st.booleans(),
    pipelined=st.booleans(),
)
def test_any_split_of_a_body_arrives_exactly(
    env_of: Any, size: int, with_head: int, pause: bool, pipelined: bool
) -> None:
    """Whatever part of the body came with the head (our buffer, the StreamReader's, the
    socket's), the origin counts exactly Content-Length bytes and what follows is the next
    request."""
    env = _shared_env(env_of)
    port = env.upstream.port
    body = _payload(size)
    first = min(with_head, size)
    tail = _get(port, "/headers") if pipelined else b""
    with env.connect() as s:
        s.sendall(_post(port, size) + body[:first])
        if pause:
            time.sleep(0.05)
        s.sendall(body[first:] + tail)
        status, _, answer = recv_response(s)
        assert status == 200 and int(answer) == size
        if pipelined:
            assert recv_response(s)[0] == 200


_SHARED: dict[int, Env] = {}


def _shared_env(env_of: Any) -> Env:
    # One proxy for every example of a run (make_env closes it when the test ends).
    env = _SHARED.get(id(env_of))
    if env is None:
        env = _SHARED[id(env_of)] = env_of()
    return env
