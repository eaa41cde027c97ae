"""A whole request body read for inspection, never more than a limit.

GraphQL, JSON-RPC and MCP decisions need the body before anything goes upstream; the
proxy reads it completely (Content-Length or chunked, decoded), refuses a body over the
endpoint's limit with 403 (fail closed: what cannot be inspected is not forwarded) and
forwards exactly the bytes it judged.
"""

from __future__ import annotations

import asyncio

from supervisor.proxy import errors
from supervisor.proxy.channel import Conn, PeerClosed
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import ChunkedDecoder, RequestHead


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        errors.POLICY_DENIED,
        f"request body larger than the {limit}-byte inspection limit of this endpoint",
    )


def within_limit(body: bytes, limit: int) -> bytes:
    """``body``, already read whole by another step, refused past the endpoint's limit."""
    if len(body) > limit:
        raise _too_large(limit)
    return body


async def _fill(conn: Conn, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        if not await conn.fill():
            raise PeerClosed("agent closed before the end of the body")


async def read_bounded_body(conn: Conn, req: RequestHead, limit: int, timeout: float) -> bytes:
    """The decoded body of ``req`` (b"" when it has none); ``ProxyError`` past ``limit``."""
    if req.content_length is not None and not req.chunked:
        n = req.content_length
        if n > limit:
            raise _too_large(limit)
        while len(conn.buf) < n:
            await _fill(conn, timeout)
        return conn.take(n)
    if not req.chunked:
        return b""
    dec = ChunkedDecoder()
    out = bytearray()
    while True:
        if conn.buf:
            data = bytes(conn.buf)
            conn.buf.clear()
            for piece in dec.feed(data):
                out += piece
                if len(out) > limit:
                    raise _too_large(limit)
            if dec.done:
                if dec.leftover:
                    conn.buf += dec.leftover  # a pipelined next request
                return bytes(out)
        await _fill(conn, timeout)
