"""WebSocket (RFC 6455) upgrades through the proxy: a real client library over ws:// and
intercepted wss://, raw sockets for the framing edge cases, refusals and idle limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from supervisor.proxy.server import Limits
from supervisor.proxy.websocket import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_frame
from tests.proxy.harness import SECRET, Env, FakePolicy, FakeTokens, recv_response
from tests.proxy.harness import binding as bind
from tests.proxy.harness import endpoint as declare
from tests.proxy.tlscerts import make_pki

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class EchoServer:
    """A websockets echo server on 127.0.0.1 that records each handshake and close code."""

    def __init__(self) -> None:
        self.handshakes: list[Any] = []
        self.close_codes: list[int | None] = []
        self.server: Server | None = None
        self.port = 0

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        async def echo(ws: ServerConnection) -> None:
            self.handshakes.append(ws.request)
            try:
                async for message in ws:
                    await ws.send(message)
            finally:
                self.close_codes.append(ws.close_code)

        self.server = await serve(echo, "127.0.0.1", 0, ssl=ssl_ctx, ping_interval=None)
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _setup(env: Env, *, tls: ssl.SSLContext | None = None, **ep_kw: Any) -> EchoServer:
    ws = EchoServer()
    env.call(ws.start(tls))
    ep = declare("127.0.0.1", ws.port, **ep_kw)
    env.policy.endpoints.append(ep)
    env.policy.bindings.append(bind(ep))
    return ws


class PlainOnly:
    """An interceptor with no certificates: a tunnel carrying plain HTTP (ws:// through
    CONNECT, as client libraries send it) is inspected; TLS would be refused."""

    def server_context(self, host: str) -> ssl.SSLContext:
        raise LookupError(host)


@pytest.fixture
def ws_env(make_env: Any) -> Iterator[tuple[Env, EchoServer]]:
    env = make_env(bind=False, interceptor=PlainOnly())
    ws = _setup(env)
    yield env, ws
    env.call(ws.stop())


def _injected(handshake: Any) -> list[str]:
    return list(handshake.headers.get_all("Authorization"))


def _audit(env: Env) -> list[dict[str, Any]]:
    env.audit.close()
    assert env.audit_path is not None
    return [json.loads(line) for line in open(env.audit_path) if line.strip()]


def test_ws_echo_through_the_proxy_with_one_injected_credential(
    ws_env: tuple[Env, EchoServer],
) -> None:
    env, ws = ws_env
    proxy = f"http://127.0.0.1:{env.proxy_port}"
    with connect(
        f"ws://127.0.0.1:{ws.port}/chat?room=1",
        proxy=proxy,
        additional_headers={"Authorization": "Bearer stolen"},
        open_timeout=5,
        close_timeout=5,
    ) as client:
        for message in ("hello", "x" * 70_000, b"\x00\x01binary"):
            client.send(message)
            assert client.recv(timeout=5) == message
    assert client.close_code == 1000  # the server's close frame came back through
    deadline = time.monotonic() + 5
    while not ws.close_codes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ws.close_codes == [1000]
    (handshake,) = ws.handshakes
    assert _injected(handshake) == [f"Bearer {SECRET}"]
    assert handshake.path == "/chat?room=1"
    assert env.proxy.counters.upgrades == 1
    events = [e for e in _audit(env) if e.get("http_response", {}).get("code") == 101]
    assert len(events) == 1
    assert events[0]["message"] == "protocol switched to websocket"
    assert events[0]["http_request"]["url"]["path"] == "/chat"
    assert events[0]["unmapped"] == {"binding": bind(env.policy.endpoints[-1]).id}


def test_wss_echo_through_interception(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)

    class Interceptor:
        def server_context(self, host: str) -> ssl.SSLContext:
            return pki.agent_side

    audit = tmp_path / "audit.jsonl"
    env = Env(
        FakePolicy(),
        FakeTokens(),
        str(audit),
        upstream_ssl=pki.upstream_client(),
        interceptor=Interceptor(),
    )
    ws = _setup(env, tls=pki.upstream_server)
    agent_tls = ssl.create_default_context(cafile=str(pki.ca_path))
    try:
        with connect(
            f"wss://127.0.0.1:{ws.port}/live",
            proxy=f"http://127.0.0.1:{env.proxy_port}",
            ssl=agent_tls,
            additional_headers={"authorization": "Bearer stolen"},
            open_timeout=5,
            close_timeout=5,
        ) as client:
            client.send("over tls")
            assert client.recv(timeout=5) == "over tls"
        assert client.close_code == 1000
        (handshake,) = ws.handshakes
        assert _injected(handshake) == [f"Bearer {SECRET}"]
        assert env.proxy.counters.intercepted == 1 and env.proxy.counters.upgrades == 1
    finally:
        env.call(ws.stop())
        env.close()
    assert SECRET not in audit.read_text()


# -- raw sockets: what a library hides -----------------------------------------------------


def _handshake(port: int, key: str, *, absolute: bool = True, extra: str = "") -> bytes:
    target = f"http://127.0.0.1:{port}/raw" if absolute else "/raw"
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive, Upgrade\r\n"
        f"Upgrade: WebSocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def _read_exactly(s: socket.socket, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"closed with {bytes(buf)!r}")
        buf += data
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _read_head(s: socket.socket, buf: bytearray) -> str:
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"closed with {bytes(buf)!r}")
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    del buf[:end]
    return head


def _server_frame(s: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    b0, b1 = _read_exactly(s, 2, buf)
    assert not b1 & 0x80  # a server never masks
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _read_exactly(s, 2, buf))[0]
    elif n == 127:
        n = struct.unpack("!Q", _read_exactly(s, 8, buf))[0]
    return b0 & 0x0F, _read_exactly(s, n, buf)


def test_raw_upgrade_framing_edge_cases(ws_env: tuple[Env, EchoServer]) -> None:
    env, ws = ws_env
    key = base64.b64encode(b"0123456789abcdef").decode()
    mask = b"\x01\x02\x03\x04"
    hello = encode_frame(OP_TEXT, b"pipelined", mask=mask)
    with env.connect() as s:
        # The first frame travels in the same segment as the handshake.
        s.sendall(_handshake(ws.port, key, extra="Authorization: Bearer stolen\r\n") + hello)
        buf = bytearray()
        head = _read_head(s, buf)
        lines = head.split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101")
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        assert f"Sec-WebSocket-Accept: {accept}" in lines
        assert _server_frame(s, buf) == (OP_TEXT, b"pipelined")
        # A fragmented message with a ping between its fragments, sent byte by byte.
        frames = (
            encode_frame(OP_TEXT, b"frag-", fin=False, mask=mask)
            + encode_frame(OP_PING, b"p", mask=mask)
            + encode_frame(0, b"ment", mask=mask)
        )
        for i in range(len(frames)):
            s.send(frames[i : i + 1])
        assert _server_frame(s, buf) == (OP_PONG, b"p")
        assert _server_frame(s, buf) == (OP_TEXT, b"frag-ment")
        s.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye", mask=mask))
        op, payload = _server_frame(s, buf)
        assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1000)
        s.settimeout(5)
        assert s.recv(1) == b""  # the server closed; the relay passed it on
    assert _injected(ws.handshakes[0]) == [f"Bearer {SECRET}"]


def test_refused_upgrade_answer_keeps_the_connection(ws_env: tuple[Env, EchoServer]) -> None:
    env, ws = ws_env
    with env.connect() as s:
        # No Sec-WebSocket-Key: the server answers 400 instead of switching.
        s.sendall(
            f"GET http://127.0.0.1:{ws.port}/raw HTTP/1.1\r\nHost: 127.0.0.1:{ws.port}\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
        )
        buf = bytearray()
        head = _read_head(s, buf)
        assert head.startswith("HTTP/1.1 400")
    assert env.proxy.counters.upgrades == 0


def test_upgrade_denied_by_policy_before_any_upstream_byte(make_env: Any) -> None:
    env = make_env(bind=False, interceptor=PlainOnly())
    ws = EchoServer()
    env.call(ws.start())
    try:
        with pytest.raises(Exception, match="403"):
            connect(f"ws://127.0.0.1:{ws.port}/", proxy=f"http://127.0.0.1:{env.proxy_port}")
        assert ws.handshakes == []
    finally:
        env.call(ws.stop())


class SwitchingUpstream:
    """Answers every request with a 101 to websocket, asked for or not."""

    def __init__(self, upgrade: str = "websocket") -> None:
        self.upgrade = upgrade
        self.port = 0

    async def start(self) -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            w.write(
                f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                f"Upgrade: {self.upgrade}\r\n\r\nraw bytes".encode()
            )
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("upgrade_headers", "answer"),
    [
        ("", "websocket"),  # a 101 nobody asked for
        ("Connection: Upgrade\r\nUpgrade: h2c\r\n", "h2c"),  # an upgrade the proxy drops
        ("Connection: Upgrade\r\nUpgrade: websocket\r\n", "h2c"),  # another protocol
    ],
)
def test_unrequested_protocol_switch_is_502(
    make_env: Any, upgrade_headers: str, answer: str
) -> None:
    env = make_env(bind=False)
    up = SwitchingUpstream(answer)
    env.call(up.start())
    env.policy.endpoints.append(declare("127.0.0.1", up.port))
    with env.connect() as s:
        s.sendall(
            f"GET http://127.0.0.1:{up.port}/ HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n"
            f"{upgrade_headers}\r\n".encode()
        )
        status, hdrs, body = recv_response(s)
    assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"
    assert b"unexpected protocol switch" in body
    assert env.proxy.counters.upgrades == 0


def test_h2c_upgrade_is_not_forwarded(make_env: Any) -> None:
    env = make_env()
    with env.connect() as s:
        s.sendall(
            f"GET http://127.0.0.1:{env.upstream.port}/headers HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{env.upstream.port}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n".encode()
        )
        status, _, body = recv_response(s)
    assert status == 200
    assert b"upgrade" not in body.lower() and b"http2-settings" not in body.lower()


@pytest.mark.parametrize(("idle", "survives"), [(5.0, True), (0.3, False)])
def test_upgraded_connection_idle_limit(make_env: Any, idle: float, survives: bool) -> None:
    env = make_env(
        bind=False, limits=Limits(upgraded_idle_timeout=idle), interceptor=PlainOnly()
    )
    ws = _setup(env)
    try:
        with connect(
            f"ws://127.0.0.1:{ws.port}/",
            proxy=f"http://127.0.0.1:{env.proxy_port}",
            open_timeout=5,
            close_timeout=1,
            ping_interval=None,
        ) as client:
            client.send("before")
            assert client.recv(timeout=5) == "before"
            time.sleep(1.0)  # longer than the short limit, shorter than the long one
            if survives:
                client.send("after")
                assert client.recv(timeout=5) == "after"
            else:
                with pytest.raises(ConnectionClosed):
                    client.send("after")
                    client.recv(timeout=5)
    finally:
        env.call(ws.stop())
    assert (env.proxy.counters.timeouts >= 1) is not survives


def test_switched_connection_holds_its_destination_slot(make_env: Any) -> None:
    env = make_env(
        bind=False,
        limits=Limits(max_active_per_destination=1, destination_wait=0.2),
        interceptor=PlainOnly(),
    )
    ws = _setup(env)
    url, proxy = f"ws://127.0.0.1:{ws.port}/", f"http://127.0.0.1:{env.proxy_port}"
    try:
        with connect(url, proxy=proxy, open_timeout=5, close_timeout=5) as first:
            first.send("one")
            assert first.recv(timeout=5) == "one"
            with pytest.raises(Exception, match="503"):
                connect(url, proxy=proxy, open_timeout=5)
        # Released with the first WebSocket: a new one gets the slot.
        deadline = time.monotonic() + 5
        while env.run(lambda: env.proxy._slots.total_active()) and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(url, proxy=proxy, open_timeout=5, close_timeout=5) as second:
            second.send("two")
            assert second.recv(timeout=5) == "two"
    finally:
        env.call(ws.stop())
    assert env.proxy.counters.busy == 1
