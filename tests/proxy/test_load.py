"""Streaming with bounded memory, and idle connections not starving others."""

from __future__ import annotations

import socket
from typing import Any

from tests.proxy.harness import recv_response, rss, upload

SIZE = 200 * 1024 * 1024



def test_200mb_upload_and_download_stream_with_bounded_memory(make_env: Any) -> None:
    env = make_env()
    port = env.upstream.port
    block = b"z" * (1 << 20)
    before = rss()
    with env.connect(timeout=60) as s:
        peak = upload(s, port, SIZE, block, sample_every=20)
        s.sendall(
            f"GET http://127.0.0.1:{port}/download/{SIZE} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {SIZE}".encode() in head
        got = len(rest)
        n = 0
        while got < SIZE:
            d = s.recv(1 << 20)
            assert d
            got += len(d)
            n += 1
            if n % 100 == 0:
                peak = max(peak, rss())
        assert got == SIZE
    # Buffers are bounded (stream limits + drain): far below the 200 MB moved each way.
    assert peak - before < 64 * 1024 * 1024


def test_1000_idle_connections_do_not_block_others(make_env: Any) -> None:
    env = make_env()
    port = env.upstream.port
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", env.proxy_port), timeout=10))
        # half of them even started a head and stalled
        for s in idle[::2]:
            s.sendall(b"GET http://127.0.0.1:1/ HTTP/1.1\r\n")
        with env.connect() as s:
            for _ in range(3):
                s.sendall(
                    f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
                )
                assert recv_response(s)[2] == b"ok"
    finally:
        for s in idle:
            s.close()
