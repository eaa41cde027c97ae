"""An upstream's bytes that no request asked for never become the answer to a later one.

A pooled keep-alive connection is reused only when nothing unread waits on it: bytes that
arrive after a complete response (a broken or hostile origin, a response-splitting bug
upstream) would otherwise be parsed as the response to the next request sent on it —
possibly another agent connection's request.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

from tests.proxy.harness import recv_response
from tests.proxy.test_tunnels import _connect_tunnel, _tls_env


def _get(env: Any, path: str) -> bytes:
    a = f"127.0.0.1:{env.upstream.port}"
    return f"GET http://{a}{path} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode()


def test_unasked_bytes_after_a_response_are_never_the_next_answer(make_env: Any) -> None:
    env = make_env(bind=False)
    with env.connect() as s:
        s.sendall(_get(env, "/stray/0.05"))
        assert recv_response(s)[2] == b"ok"
    time.sleep(0.3)  # the stray response is in the pooled connection's buffers by now
    with env.connect() as s:
        s.sendall(_get(env, "/"))
        status, _, body = recv_response(s)
    assert (status, body) == (200, b"ok")
    assert env.upstream.connections == 2  # the tainted connection was not reused


def test_a_clean_connection_is_still_reused(make_env: Any) -> None:
    env = make_env(bind=False)  # control: the check must not cost keep-alive
    for _ in range(3):
        with env.connect() as s:
            s.sendall(_get(env, "/"))
            assert recv_response(s)[2] == b"ok"
        time.sleep(0.05)
    assert env.upstream.connections == 1


def test_unasked_bytes_on_an_intercepted_tls_upstream_are_never_the_next_answer(
    tmp_path: Path,
) -> None:
    env, ca_path, _ = _tls_env(tmp_path, trust_upstream=True)
    client = ssl.create_default_context(cafile=str(ca_path))
    host = f"127.0.0.1:{env.upstream.port}"
    try:
        for path, pause in (("/stray/0.05", 0.3), ("/", 0.0), ("/", 0.0)):
            with client.wrap_socket(_connect_tunnel(env), server_hostname="127.0.0.1") as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status, _, body = recv_response(s)  # type: ignore[arg-type]
                assert (status, body) == (200, b"ok")
            time.sleep(pause)
        # The tainted connection was dropped; the fresh one was reused for the third request.
        assert env.upstream.connections == 2
    finally:
        env.close()
