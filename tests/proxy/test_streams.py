"""Streams without deadlines: server-sent events arrive one by one (the upstream sends the
next event only once the agent has the previous one, so any buffering deadlocks), idle
limits hold or cut as configured, and an agent that leaves releases the upstream at once."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

import supervisor.runner
from supervisor import run_cli
from supervisor.proxy.server import Limits
from supervisor.settings import RunSettings
from tests.proxy.harness import Env, FakePolicy, FakeTokens, binding, endpoint
from tests.proxy.tlscerts import make_pki

EVENTS = [b"data: one\n\n", b"event: tick\ndata: two\n\n", b"data: three\n\n"]


class StreamUpstream:
    """An origin that streams ``EVENTS``; event i+1 waits for ``release(i+1)``. It records
    when the proxy closes its side (the upstream connection was released)."""

    def __init__(self, framing: str, content_type: str = "text/event-stream") -> None:
        self.framing = framing  # "chunked" or "close"
        self.content_type = content_type
        self.port = 0
        self.gates: list[asyncio.Event] = []
        self.head_gate: asyncio.Event | None = None  # set: the head waits for it
        self.released = asyncio.Event()  # the proxy closed the upstream connection
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.gates = [asyncio.Event() for _ in EVENTS]
        self.gates[0].set()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = server.sockets[0].getsockname()[1]

    def release(self, i: int) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.gates[i].set)

    def open_head(self) -> None:
        assert self.loop is not None and self.head_gate is not None
        self.loop.call_soon_threadsafe(self.head_gate.set)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await r.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            w.close()
            return
        watcher = asyncio.create_task(self._watch(r))
        try:
            if self.head_gate is not None:
                await self.head_gate.wait()
            framing = "Transfer-Encoding: chunked\r\n" if self.framing == "chunked" else ""
            w.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\n{framing}\r\n".encode()
            )
            for gate, event in zip(self.gates, EVENTS, strict=True):
                await gate.wait()
                w.write(b"%x\r\n%b\r\n" % (len(event), event) if framing else event)
                await w.drain()
            if framing:
                w.write(b"0\r\n\r\n")
                await w.drain()
            else:
                w.close()
            await watcher
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            watcher.cancel()
            w.close()

    async def _watch(self, r: asyncio.StreamReader) -> None:
        try:
            while await r.read(65536):
                pass
        except ConnectionError:
            pass
        self.released.set()


def _read_until(s: socket.socket, buf: bytearray, marker: bytes, timeout: float = 5) -> None:
    s.settimeout(timeout)
    while marker not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"closed before {marker!r}; got {bytes(buf)!r}")
        buf += data


def _wait(what: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.01)
    return False


def _plain_env(make_env: Any, framing: str, **kw: Any) -> tuple[Env, StreamUpstream]:
    env = make_env(bind=False, **kw)
    up = StreamUpstream(framing)
    env.call(up.start())
    ep = endpoint("127.0.0.1", up.port)
    env.policy.endpoints.append(ep)
    env.policy.bindings.append(binding(ep))
    return env, up


def _get(port: int, path: str = "/stream") -> bytes:
    return f"GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def _events_one_by_one(s: socket.socket, up: StreamUpstream) -> bytes:
    buf = bytearray()
    for i, event in enumerate(EVENTS):
        if i:
            up.release(i)
        _read_until(s, buf, event)  # before the next one exists upstream
    return bytes(buf)


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_sse_arrives_event_by_event(make_env: Any, framing: str) -> None:
    env, up = _plain_env(make_env, framing)
    with env.connect() as s:
        s.sendall(_get(up.port))
        raw = _events_one_by_one(s, up)
    head = raw.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200") and "content-type: text/event-stream" in head
    assert ("transfer-encoding: chunked" in head) is (framing == "chunked")


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_sse_event_by_event_through_interception(tmp_path: Path, framing: str) -> None:
    pki = make_pki(tmp_path)

    class Interceptor:
        def server_context(self, host: str) -> ssl.SSLContext:
            return pki.agent_side

    env = Env(
        FakePolicy(),
        FakeTokens(),
        str(tmp_path / "audit.jsonl"),
        upstream_ssl=pki.upstream_client(),
        interceptor=Interceptor(),
    )
    try:
        up = StreamUpstream(framing)
        env.call(up.start(pki.upstream_server))
        ep = endpoint("127.0.0.1", up.port)
        env.policy.endpoints.append(ep)
        env.policy.bindings.append(binding(ep))
        raw = env.connect()
        a = f"127.0.0.1:{up.port}"
        raw.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
        buf = bytearray()
        _read_until(raw, buf, b"\r\n\r\n")
        assert buf.startswith(b"HTTP/1.1 200")
        agent_tls = ssl.create_default_context(cafile=str(pki.ca_path))
        with agent_tls.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(f"GET /stream HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
            _events_one_by_one(s, up)
        assert env.proxy.counters.intercepted == 1
    finally:
        env.close()


@pytest.mark.parametrize(
    ("content_type", "idle", "survives"),
    [
        ("text/event-stream", 0.3, True),  # no idle limit for events while the agent stays
        ("Text/Event-Stream; charset=utf-8", 0.3, True),
        ("application/x-ndjson", 0.3, False),  # any other stream: the idle limit cuts it
        ("application/x-ndjson", 5.0, True),  # ... unless the limit is longer than the pause
    ],
)
def test_idle_stream_survives_or_is_cut(
    make_env: Any, content_type: str, idle: float, survives: bool
) -> None:
    env = make_env(bind=False, limits=Limits(upstream_idle_timeout=idle))
    up = StreamUpstream("chunked", content_type)
    env.call(up.start())
    env.policy.endpoints.append(endpoint("127.0.0.1", up.port))
    with env.connect() as s:
        s.sendall(_get(up.port))
        buf = bytearray()
        _read_until(s, buf, EVENTS[0])
        time.sleep(1.0)  # a pause longer than the short limit (the old limit was 60 s)
        up.release(1)
        if survives:
            _read_until(s, buf, EVENTS[1])
        else:
            with pytest.raises(ConnectionError):
                _read_until(s, buf, EVENTS[1])
    assert _wait(up.released.is_set)  # cut or not, the upstream connection is let go
    assert (env.proxy.counters.timeouts == 1) is not survives


def test_first_byte_waits_for_response_timeout(make_env: Any) -> None:
    for limit, status in ((5.0, b"HTTP/1.1 200"), (0.3, b"HTTP/1.1 502")):
        env, up = _plain_env(make_env, "chunked", limits=Limits(response_timeout=limit))
        up.head_gate = asyncio.Event()
        with env.connect() as s:
            s.sendall(_get(up.port))
            time.sleep(1.0)
            up.open_head()
            buf = bytearray()
            _read_until(s, buf, b"\r\n\r\n")
        assert buf.startswith(status)


@pytest.mark.parametrize("where", ["mid-stream", "before the head"])
def test_agent_leaving_releases_the_upstream_at_once(make_env: Any, where: str) -> None:
    env, up = _plain_env(make_env, "chunked")
    if where == "before the head":
        up.head_gate = asyncio.Event()
    with env.connect() as s:
        s.sendall(_get(up.port))
        if where == "mid-stream":
            _read_until(s, bytearray(), EVENTS[0])
        else:
            assert _wait(lambda: env.run(env.proxy._slots.total_active) == 1)
    # The upstream sends nothing more: only the agent's leaving can end this.
    started = time.monotonic()
    assert _wait(up.released.is_set, timeout=3.0)
    assert time.monotonic() - started < 2.0
    assert _wait(lambda: env.run(env.proxy._slots.total_active) == 0)
    assert env.proxy.counters.agent_gone == 1


def test_run_options_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RunSettings] = []

    def fake_run(settings: RunSettings) -> int:
        seen.append(settings)
        return 0

    def stop(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(supervisor.runner, "run_supervisor", fake_run)
    monkeypatch.setattr(run_cli, "exit_run", stop)
    for extra in ([], ["--response-timeout", "42", "--upstream-idle-timeout=7.5"]):
        params = run_cli.parse_run(["run", *extra, "--", "true"])
        assert params is not None
        params.pop("log_level")
        with pytest.raises(SystemExit):
            run_cli.run_command(**params)
    assert [(s.response_timeout, s.upstream_idle_timeout) for s in seen] == [
        (600.0, 600.0),
        (42.0, 7.5),
    ]
