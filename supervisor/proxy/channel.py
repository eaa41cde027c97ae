"""Byte channels (plain stream, TLS over a channel) and a buffered HTTP reader.

TLS is an ``ssl.SSLObject`` over memory BIOs on both sides instead of ``start_tls`` /
``open_connection(ssl=...)``. Agent side: bytes already read while sniffing the tunnel (to
tell TLS from plain HTTP) can be handed to the TLS layer instead of being lost. Upstream
side: asyncio's SSL transport keeps a 256 KiB zero-filled buffer per connection, resident
for as long as the connection sits in the pool (32 MiB for a full pool of one host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from supervisor.proxy.deadline import Deadline, cancellation_as
from supervisor.proxy.http1 import (
    LAST_CHUNK,
    MAX_CHUNK_LINE,
    MAX_HEAD,
    ChunkedDecoder,
    ParseError,
    encode_chunk,
    find_head_end,
)
from supervisor.proxy.policy import BinaryJudge

_T = TypeVar("_T")
READ_SIZE = 256 * 1024
# SSL_read hands out at most one record per call, and a record holds at most 16 KiB: a
# larger request only makes every call allocate (and shrink) a larger buffer.
_TLS_RECORD = 16 * 1024


class Channel(Protocol):
    async def read(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def write_eof(self) -> None: ...

    def usable(self) -> bool: ...


class PlainChannel:
    """A stream's two halves. ``send_timeout``: how long ``drain`` waits for a peer that
    reads none of our pending bytes (any progress restarts the wait); then the connection
    is aborted (a plain close would keep the transport and its unsent buffer until the
    peer reads) and TimeoutError raised. None = wait as long as it takes."""

    __slots__ = (
        "_buffered",
        "_closing",
        "_drain",
        "_low",
        "read",
        "reader",
        "send_timeout",
        "write",
        "writer",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send_timeout: float | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.send_timeout = send_timeout
        # Bound methods cached once: they are called several times per request.
        self.read = reader.read
        self.write = writer.transport.write  # StreamWriter.write only forwards to it
        self._drain = writer.drain
        self._buffered = writer.transport.get_write_buffer_size
        self._closing = writer.transport.is_closing
        # Above the low-water mark the transport may be paused: only then can drain block.
        self._low = writer.transport.get_write_buffer_limits()[0]

    async def drain(self) -> None:
        # Nothing buffered on an open transport means it is not paused: skip the stream's
        # layers. A closing one goes through them, so a lost peer still raises here.
        pending = self._buffered()
        if pending > self._low and self.send_timeout is not None:
            await self._drain_while_progressing(pending, self.send_timeout)
        elif pending or self._closing():
            await self._drain()

    async def _drain_while_progressing(self, pending: int, timeout: float) -> None:
        # A slow reader that keeps reading is served; one that read nothing for a whole
        # ``timeout`` is cut.
        while True:
            try:
                async with asyncio.timeout(timeout):
                    await self._drain()
                return
            except TimeoutError:
                left = self._buffered()
                if left >= pending or self._closing():
                    self.writer.transport.abort()  # not reading: free it all now
                    raise
                pending = left

    async def flush(self) -> None:
        """Wait until the transport handed every byte written to the socket (``drain``
        stops at the low-water mark); a peer reading none for ``send_timeout`` is cut."""
        transport = self.writer.transport
        pending = self._buffered()
        if not pending:
            return
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0, low=0)  # paused until the buffer is empty
        try:
            if self.send_timeout is None:
                await self._drain()
            else:
                await self._drain_while_progressing(pending, self.send_timeout)
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=high, low=low)

    def account(self, received: int, sent: int) -> None:
        """Bytes that crossed the socket without ``read``/``write`` (spliced)."""

    def close(self) -> None:
        self.writer.close()

    def usable(self) -> bool:
        """Fit for a new exchange: open, and nothing unread waiting. Bytes no request asked
        for (arriving after a complete response) would be taken for the next response.
        StreamReader has no public count of what it holds; ``_buffer`` is that count."""
        reader = self.reader
        unread: bytearray = reader._buffer  # type: ignore[attr-defined]
        return not unread and not reader.at_eof() and not self.writer.transport.is_closing()

    def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.transport.is_closing():
            self.writer.write_eof()


class TlsChannel:
    """TLS spoken over another channel: the server side of an agent's intercepted tunnel,
    or the client side of an upstream connection (``server_hostname`` is then verified by
    the context's own rules)."""

    __slots__ = ("_eof_sent", "_error", "_in", "_obj", "_out", "_peer_closed", "_raw")

    def __init__(
        self,
        raw: Channel,
        context: ssl.SSLContext,
        initial: bytes = b"",
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
    ) -> None:
        self._raw = raw
        self._error: ssl.SSLError | None = None  # raised by the next read (see _decrypt)
        self._eof_sent = False  # write_eof done: nothing more goes to the raw stream
        self._peer_closed = False  # its close_notify was read: reads answer b"" at once
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        if initial:
            self._in.write(initial)

    async def _pull(self) -> bool:
        self._flush()
        await self._raw.drain()
        data = await self._raw.read(READ_SIZE)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def _flush(self) -> None:
        pending = self._out.read()
        if pending and not self._eof_sent:
            self._raw.write(pending)

    async def handshake(self) -> None:
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not await self._pull():
                    raise ConnectionError("peer closed during TLS handshake") from None
        self._flush()
        await self._raw.drain()

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes: every record already received, decrypted in one go (one
        relay step per batch instead of per 16 KiB record); waits only when none is."""
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        while True:
            # Waiting for a stream's next event, nothing is buffered: pull without having
            # OpenSSL raise SSLWantReadError first (an exception with a formatted message).
            if self._buffered() or self._in.eof or self._peer_closed:
                try:
                    return self._decrypt(n)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    self._peer_closed = True
                    return b""
            if not await self._pull():
                try:
                    return self._decrypt(n)
                except (ssl.SSLWantReadError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    return b""

    def _buffered(self) -> int:
        """Received bytes not yet read: undecrypted in the incoming BIO, or decrypted and
        held by OpenSSL (a read smaller than its record). Without read-ahead (Python never
        turns it on) OpenSSL keeps no complete undecrypted record of its own."""
        return self._in.pending or self._obj.pending()

    def _decrypt(self, n: int) -> bytes:
        """The records in the incoming BIO, up to ``n`` bytes; SSLWantReadError when not
        one is complete. Never waits for more: a stream's event goes out as it arrives.
        An error after some data is kept for the next read, so that data still goes out
        first, as it would record by record."""
        read = self._obj.read
        first = read(min(n, _TLS_RECORD))
        got = len(first)
        if got >= n:
            return first
        if not first:
            self._peer_closed = True
            return first
        parts = [first]
        while got < n and self._buffered():
            try:
                more = read(min(n - got, _TLS_RECORD))
            except ssl.SSLWantReadError:
                break  # a record's start only
            except ssl.SSLZeroReturnError:
                self._peer_closed = True  # the next read reports it
                break
            except ssl.SSLError as err:
                self._error = err
                break
            if not more:
                self._peer_closed = True
                break
            parts.append(more)
            got += len(more)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, data: bytes) -> None:
        self._obj.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._raw.drain()

    def close(self) -> None:
        if not self._eof_sent:
            with contextlib.suppress(ssl.SSLError):
                self._obj.unwrap()
            self._flush()
        self._raw.close()

    def write_eof(self) -> None:
        """TLS's half-close: close_notify, then the raw stream's write side ends. Reading
        the peer's remaining data still works."""
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()
        self._flush()
        # Nothing may follow our close_notify and the stream's end: OpenSSL may still
        # produce a second alert (e.g. unwrap again after the peer's bare TCP close), and
        # the transport refuses writes after write_eof (a RuntimeError out of close()
        # would skip closing the raw stream).
        self._eof_sent = True
        self._raw.write_eof()

    def usable(self) -> bool:
        # Nothing decrypted or half-received left unread either (see PlainChannel.usable);
        # raw bytes not yet decrypted count as unread too (safe side: a fresh connection).
        return (
            self._error is None
            and not self._peer_closed
            and not self._in.pending
            and not self._obj.pending()
            and self._raw.usable()
        )


TlsServerChannel = TlsChannel  # the agent side's name in the server


class PeerClosed(Exception):
    """The sending side closed before the body was complete."""


# -- the agent going away while we wait on the upstream -----------------------------------
# A response can take minutes to start (a long model call) and an event stream can pause
# for minutes, with no idle limit at all for text/event-stream. Nothing is read from the
# agent meanwhile, so its disconnect would go unseen until a write fails, holding the
# upstream connection and its slot. The agent's reader reports its stream's end to an
# EofWatch; while a wait is guarded, that cancels the waiting task, which the guard turns
# into AgentGone. The report costs nothing while no wait is guarded.


class AgentGone(PeerClosed):
    """The agent closed its connection while the exchange waited on the upstream."""


class EofWatch:
    __slots__ = ("_fired", "_task", "seen")

    def __init__(self) -> None:
        self.seen = False  # the agent's side has ended (EOF or reset)
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def eof(self) -> None:
        """Called by the reader (from the event loop) when the agent's stream ends."""
        self.seen = True
        task = self._task
        if task is not None and not self._fired:
            self._fired = True
            task.cancel()

    async def guard(self, aw: Awaitable[_T]) -> _T:
        """``await aw``; raise ``AgentGone`` as soon as the agent's stream ends."""
        if self.seen:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise AgentGone
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        try:
            return await aw
        except asyncio.CancelledError as err:
            fired, self._fired = self._fired, False
            raise cancellation_as(err, task, fired, AgentGone) from None
        finally:
            self._task = None


class AgentReader(asyncio.StreamReader):
    """The agent connection's reader: reports the stream's end to its ``watch``."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.watch = EofWatch()

    def feed_eof(self) -> None:
        super().feed_eof()
        self.watch.eof()

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        self.watch.eof()


class Conn:
    """A channel plus our own read buffer (heads are delimited here, not by the stream)
    and the connection's head deadline (one lazily re-armed timer, see ``deadline``)."""

    __slots__ = ("buf", "ch", "deadline", "judge", "watch")

    def __init__(
        self, ch: Channel, judge: BinaryJudge | None = None, watch: EofWatch | None = None
    ) -> None:
        self.ch = ch
        self.buf = bytearray()
        self.deadline = Deadline()
        self.judge = judge  # the connecting executable, judged once per connection
        self.watch = watch or EofWatch()  # an agent's reports its end; others never fire

    def release(self) -> None:
        """The connection is finished with: drop its timer."""
        self.deadline.cancel()

    async def fill(self) -> bool:
        data = await self.ch.read(READ_SIZE)
        if not data:
            return False
        self.buf += data
        return True

    async def read_head(
        self, idle_timeout: float, head_timeout: float, limit: int = MAX_HEAD
    ) -> bytes | None:
        """The next complete head, or None on a clean EOF before any byte.

        Waiting for the first byte is bounded by ``idle_timeout``; from the first byte the
        whole head must arrive within ``head_timeout`` (slowloris). Raises TimeoutError,
        ParseError (bare LF / too large / EOF inside a head).
        """
        buf = self.buf
        loop = asyncio.get_running_loop()
        started = bool(buf)
        when = loop.time() + (head_timeout if started else idle_timeout)
        wait_until = self.deadline.wait_until
        while True:
            if buf:
                end = find_head_end(buf, limit)
                if end >= 0:
                    head = bytes(buf[:end])
                    del buf[:end]
                    return head
                if not started:
                    started = True
                    when = loop.time() + head_timeout
            data = await wait_until(self.ch.read(READ_SIZE), when)
            if not data:
                if buf.strip(b"\r\n"):
                    raise ParseError("connection closed inside a head")
                return None
            buf += data

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


async def _read(src: Conn, timeout: float | None) -> bytes:
    if src.buf:
        data = bytes(src.buf)
        src.buf.clear()
        return data
    async with asyncio.timeout(timeout):
        return await src.ch.read(READ_SIZE)


async def relay_length(
    src: Conn, dst: Channel, n: int, timeout: float | None, first: bytes = b""
) -> None:
    """Copy exactly ``n`` body bytes from ``src`` to ``dst`` (``first`` is written before)."""
    if first:
        dst.write(first)
    while n:
        if src.buf:
            data = src.take(n)
        else:
            async with asyncio.timeout(timeout):
                data = await src.ch.read(min(n, READ_SIZE))
            if not data:
                raise PeerClosed
        n -= len(data)
        dst.write(data)
        await dst.drain()


async def relay_chunked(
    src: Conn,
    dst: Channel,
    timeout: float | None,
    *,
    encode: bool = True,
    first: bytes = b"",
    decoder: ChunkedDecoder | None = None,
) -> None:
    """Decode a chunked body from ``src``; re-encode it for ``dst`` (or not, for a
    close-delimited HTTP/1.0 peer). Extensions and trailers are dropped. ``decoder`` may
    already have consumed the start of the body (whose output is then in ``first``)."""
    dec = decoder or ChunkedDecoder()
    if first:
        dst.write(first)
    while not dec.done:
        data = await _read(src, timeout)
        if not data:
            raise PeerClosed
        pieces = dec.feed(data)
        if pieces:
            body = b"".join(pieces)
            if body:
                dst.write(encode_chunk(body) if encode else body)
        await dst.drain()
    if dec.leftover:
        src.buf[:0] = dec.leftover
        dec.leftover = b""
    if encode:
        dst.write(LAST_CHUNK)


async def start_chunked(src: Conn, timeout: float) -> tuple[ChunkedDecoder, bytes]:
    """Validate the start of a chunked body before anything is sent upstream: wait for
    the first chunk-size line, decode what is buffered, return the decoder and the
    re-encoded bytes (a complete small body comes back finished, last chunk included)."""
    async with asyncio.timeout(timeout):
        while b"\n" not in src.buf:
            if len(src.buf) > MAX_CHUNK_LINE or not await src.fill():
                break
    dec = ChunkedDecoder()
    pieces = dec.feed(bytes(src.buf))
    src.buf.clear()
    if dec.done and dec.leftover:
        src.buf += dec.leftover
        dec.leftover = b""
    body = b"".join(pieces)
    out = encode_chunk(body) if body else b""
    if dec.done:
        out += LAST_CHUNK
    elif len(src.buf) == 0 and dec.needs_first_line():
        raise ParseError("incomplete chunk size line")
    return dec, out


async def relay_until_eof(
    src: Conn, dst: Channel, timeout: float | None, first: bytes = b""
) -> None:
    if first:
        dst.write(first)
    while True:
        data = await _read(src, timeout)
        if not data:
            return
        dst.write(data)
        await dst.drain()
