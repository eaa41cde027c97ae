"""protocol: websocket access expansions through the running proxy (ARCHITECTURE.md 4.2):
read-only = the handshake only (the first client text message closes the connection with
1008 and never reaches the upstream; binary frames pass), read-write = + text messages,
deny rules on WEBSOCKET_TEXT, and a plain request to a WebSocket endpoint refused."""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from supervisor.profiles.loader import load_profiles
from supervisor.proxy.websocket import OP_BINARY, OP_CLOSE, OP_TEXT, encode_frame
from tests.proxy.harness import Env, recv_response
from tests.proxy.test_websocket import EchoServer, _handshake, _read_head, _server_frame

PROFILE = """\
id: ws
endpoints:
  - host: 127.0.0.1
    port: {port}
    path: /ro/**
    protocol: websocket
    access: read-only
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /rw/**
    protocol: websocket
    access: read-write
    allowed_ips: [127.0.0.0/8]
    deny_rules:
      - {{ method: WEBSOCKET_TEXT, path: "/rw/admin/**" }}
"""
MASK = b"\x01\x02\x03\x04"
KEY = base64.b64encode(b"0123456789abcdef").decode()


@contextmanager
def ws_policy_env(tmp_path: Path, text: str) -> Iterator[tuple[Env, EchoServer]]:
    """A running proxy and a WebSocket echo upstream; the proxy's policy is the profile
    `text` ('{port}' = the echo server's). Both are stopped on the way out."""
    env = Env(None, None, str(tmp_path / "audit.jsonl"))  # type: ignore[arg-type]
    ws = EchoServer()
    env.call(ws.start())
    try:
        p = tmp_path / "ws.yaml"
        p.write_text(text.format(port=ws.port))
        env.policy = load_profiles([str(p)]).table  # type: ignore[assignment]
        yield env, ws
    finally:
        env.call(ws.stop())
        env.close()


@pytest.fixture
def ws_env(tmp_path: Path) -> Iterator[tuple[Env, EchoServer]]:
    with ws_policy_env(tmp_path, PROFILE) as pair:
        yield pair


def _open(env: Env, port: int, path: str) -> tuple[socket.socket, bytearray]:
    s = env.connect()
    s.sendall(_handshake(port, KEY).replace(b"/raw", path.encode()))
    buf = bytearray()
    assert _read_head(s, buf).startswith("HTTP/1.1 101")
    return s, buf


def test_read_only_allows_the_handshake_and_no_text(ws_env: tuple[Env, EchoServer]) -> None:
    env, ws = ws_env
    s, buf = _open(env, ws.port, "/ro/feed")
    with s:
        s.sendall(encode_frame(OP_BINARY, b"\x00bin", mask=MASK))
        assert _server_frame(s, buf) == (OP_BINARY, b"\x00bin")
        s.sendall(encode_frame(OP_TEXT, b"hello", mask=MASK))
        op, payload = _server_frame(s, buf)
        assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1008)


def test_read_write_passes_text_and_deny_rules_close(ws_env: tuple[Env, EchoServer]) -> None:
    env, ws = ws_env
    s, buf = _open(env, ws.port, "/rw/chat")
    with s:
        s.sendall(encode_frame(OP_TEXT, b"hi", mask=MASK))
        assert _server_frame(s, buf) == (OP_TEXT, b"hi")
    s, buf = _open(env, ws.port, "/rw/admin/x")
    with s:
        s.sendall(encode_frame(OP_TEXT, b"rm -rf", mask=MASK))
        op, payload = _server_frame(s, buf)
        assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1008)


def test_plain_request_to_a_websocket_endpoint_is_refused(
    ws_env: tuple[Env, EchoServer]
) -> None:
    env, ws = ws_env
    with env.connect() as s:
        s.sendall(f"GET http://127.0.0.1:{ws.port}/rw/chat HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{ws.port}\r\n\r\n".encode())
        assert recv_response(s)[0] == 403
