"""Zero-copy relay of bytes the proxy does not look at: socket -> pipe -> socket in the
kernel (Linux ``splice``), for a Content-Length or close-delimited body on the plain forward
path and for raw tunnels. Copying them through asyncio's stream buffers cost ~1 s of CPU per GiB.

How it sits beside asyncio's transports, which own the sockets:

* the source transport's reading is paused; what it read already (our ``Conn`` buffer,
  then the ``StreamReader``'s) goes first, through the destination transport, whose
  buffer is then flushed completely so that no byte can overtake another;
* both sockets are watched on duplicates of their descriptors: the loop refuses a reader
  on a transport's own descriptor, and a duplicate keeps the socket alive if its transport
  closes meanwhile, so a recycled descriptor number is never read or written;
* at most the bytes still owed are spliced from the source: the byte after a body (a
  pipelined request, a next response) stays in the socket for the parser; the source
  transport resumes once the body is through.

The limits are the copying path's: ``timeout`` between two reads of the source, the
destination's ``send_timeout`` for a peer that reads none of our bytes (then its
transport is aborted and TimeoutError raised). A source that ends early raises
``PeerClosed``; a reset, the ``OSError`` of the failed ``splice``.

Every transfer holds four descriptors (two duplicates, a pipe) from a ``SpliceGate``,
sized from what RLIMIT_NOFILE leaves beyond the connection cap; when none is left,
splice is missing, or the kernel refuses the sockets (EINVAL), the copying path runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from collections.abc import Callable
from typing import cast

from supervisor.proxy import channel
from supervisor.proxy.channel import Channel, Conn, PeerClosed, PlainChannel

AVAILABLE = hasattr(os, "splice")
FDS_PER_SPLICE = 4  # two duplicated sockets, the pipe's two ends
MIN_BODY = 256 * 1024  # below this, setting up costs more than copying
_PIPE_SIZE = 1 << 20  # bytes per round trip through the kernel; pages only while in use
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class SpliceGate:
    """Whether a transfer may splice, and the descriptors all splicing transfers hold."""

    __slots__ = ("_free", "spliced")

    def __init__(self, spare_fds: int) -> None:
        self._free = spare_fds // FDS_PER_SPLICE if AVAILABLE else 0
        self.spliced = 0  # transfers whose bytes went (at least in part) through a pipe

    def take(self) -> bool:
        if self._free <= 0:
            return False
        self._free -= 1
        return True

    def give(self) -> None:
        self._free += 1

    @property
    def free(self) -> int:
        return self._free


class _Unsupported(Exception):
    """The kernel cannot splice these descriptors (``Splicer.moved`` bytes went through)."""


def spliceable(src: Channel, dst: Channel) -> bool:
    """Both ends are plain sockets (not TLS, not a channel with bytes of its own)."""
    return isinstance(src, PlainChannel) and isinstance(dst, PlainChannel)


def _reader_buffered(reader: asyncio.StreamReader) -> int:
    # No public API tells how much a StreamReader holds without taking it.
    return len(getattr(reader, "_buffer"))  # noqa: B009


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Pipe:
    """One direction's descriptors: the sockets duplicated, and a pipe between them."""

    __slots__ = ("dst", "fds", "pr", "pw", "src")

    def __init__(self, src_fd: int, dst_fd: int) -> None:
        self.fds: list[int] = []
        try:
            self.src = self._keep(os.dup(src_fd))
            self.dst = self._keep(os.dup(dst_fd))
            self.pr, self.pw = (self._keep(fd) for fd in os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
            with contextlib.suppress(OSError):  # a smaller pipe only means more rounds
                fcntl.fcntl(self.pw, _F_SETPIPE_SZ, _PIPE_SIZE)
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)


class Splicer:
    """Moves bytes from one plain socket to another without them entering Python."""

    __slots__ = ("_dst", "_loop", "_pipe", "_src", "moved", "on_progress")

    def __init__(self, src: Conn, dst: PlainChannel, pipe: _Pipe) -> None:
        assert isinstance(src.ch, PlainChannel)
        self._src, self._dst, self._pipe = src.ch, dst, pipe
        self._loop = asyncio.get_running_loop()
        self.on_progress: Callable[[], None] | None = None
        self.moved = 0  # bytes delivered to the destination so far

    async def _wait(self, fd: int, write: bool, timeout: float | None) -> None:
        loop = self._loop
        fut: asyncio.Future[None] = loop.create_future()
        if write:
            loop.add_writer(fd, _wake, fut)
        else:
            loop.add_reader(fd, _wake, fut)
        try:
            if timeout is None:
                await fut
            else:
                async with asyncio.timeout(timeout):
                    await fut
        finally:
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    async def move(self, n: int | None, timeout: float | None) -> int:
        """Splice ``n`` bytes (None: until the source ends); the count moved. The pipe is
        filled, then emptied: when it is empty, EAGAIN on filling means no data yet."""
        pipe = self._pipe
        src, dst, pr, pw = pipe.src, pipe.dst, pipe.pr, pipe.pw
        send_timeout = self._dst.send_timeout
        count_in, count_out = self._src.account, self._dst.account
        while n is None or self.moved < n:
            want = _PIPE_SIZE if n is None else min(n - self.moved, _PIPE_SIZE)
            try:
                got = os.splice(src, pw, want, flags=_FLAGS)
            except BlockingIOError:
                await self._wait(src, False, timeout)
                continue
            except OSError as exc:
                raise _failure(exc) from exc  # the pipe is empty: nothing is lost
            if not got:
                if n is None:
                    return self.moved
                raise PeerClosed("source closed inside a body")
            count_in(got, 0)
            left = got
            while left:
                try:
                    left -= os.splice(pr, dst, left, flags=_FLAGS)
                except BlockingIOError:
                    try:
                        await self._wait(dst, True, send_timeout)
                    except TimeoutError:
                        self._dst.writer.transport.abort()  # not reading: free it all now
                        raise
                except OSError as exc:
                    failure = _failure(exc)
                    if isinstance(failure, _Unsupported):  # hand what the pipe holds over
                        self._dst.write(_read_all(pr, left))
                        count_out(0, got)
                        self.moved += got
                    raise failure from exc
            count_out(0, got)
            self.moved += got
            if self.on_progress is not None:
                self.on_progress()
        return self.moved


def _failure(exc: OSError) -> Exception:
    """What a failed splice raises: _Unsupported (the copying path takes over), or the
    ConnectionError a stream would have raised (a reset, a broken pipe)."""
    if exc.errno in _UNSUPPORTED:
        return _Unsupported()
    if isinstance(exc, ConnectionError):
        return exc
    return ConnectionAbortedError(exc.errno, exc.strerror)


def _read_all(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = os.read(fd, n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


async def _take_buffered(src: Conn, dst: Channel, n: int | None) -> int:
    """Write what was read already (``Conn`` buffer, then the ``StreamReader``'s), at most
    ``n`` bytes; the count written."""
    assert isinstance(src.ch, PlainChannel)
    sent = 0
    if src.buf:
        data = src.take(len(src.buf) if n is None else n)
        dst.write(data)
        sent += len(data)
    reader = src.ch.reader
    while (n is None or sent < n) and _reader_buffered(reader):
        data = await reader.read(_reader_buffered(reader) if n is None else n - sent)
        dst.write(data)
        sent += len(data)
    return sent


async def _splice(
    src: Conn,
    dst: Channel,
    n: int | None,
    timeout: float | None,
    gate: SpliceGate,
    on_progress: Callable[[], None] | None,
) -> tuple[bool, int]:
    """(done, bytes relayed): done when ``n`` bytes (None: all until the source ends)
    went through; otherwise splicing could not start or stopped at an end or error the
    copying path meets again, as it always did."""
    assert isinstance(src.ch, PlainChannel) and isinstance(dst, PlainChannel)
    if not gate.take():
        return False, 0
    try:
        sent = await _take_buffered(src, dst, n)
        left = None if n is None else n - sent
        reader = src.ch.reader
        transport = cast(asyncio.Transport, src.ch.writer.transport)  # reads too
        if left == 0:
            return True, sent
        if reader.at_eof() or reader.exception() is not None:
            return False, sent
        if not transport.is_reading() or transport.is_closing():
            return False, sent
        src_fd, dst_fd = _fileno(src.ch), _fileno(dst)
        if src_fd < 0 or dst_fd < 0:
            return False, sent
        try:
            pipe = _Pipe(src_fd, dst_fd)
        except OSError:  # out of descriptors: copy instead
            return False, sent
        splicer = Splicer(src, dst, pipe)
        splicer.on_progress = on_progress
        transport.pause_reading()  # nothing more lands in the StreamReader from here
        try:
            await dst.flush()
            moved = await splicer.move(left, timeout)
        except _Unsupported:
            return False, sent + splicer.moved
        finally:
            if splicer.moved:
                gate.spliced += 1
            pipe.close()
            if not transport.is_closing():
                transport.resume_reading()
        return True, sent + moved
    finally:
        gate.give()


async def relay_length(
    src: Conn,
    dst: Channel,
    n: int,
    timeout: float | None,
    gate: SpliceGate | None,
    first: bytes = b"",
) -> None:
    """``channel.relay_length``, spliced when the body is large and both ends plain."""
    if gate is not None and n >= MIN_BODY and spliceable(src.ch, dst):
        if first:
            dst.write(first)
            first = b""
        _done, moved = await _splice(src, dst, n, timeout, gate, None)
        n -= moved
        if not n:
            await dst.drain()  # bytes taken from the buffers may still be queued
            return
    await channel.relay_length(src, dst, n, timeout, first)


async def relay_until_eof(
    src: Conn, dst: Channel, timeout: float | None, gate: SpliceGate | None, first: bytes = b""
) -> None:
    """``channel.relay_until_eof`` (a close-delimited response), spliced when both ends
    are plain."""
    if first:
        dst.write(first)
    if gate is not None and spliceable(src.ch, dst):
        done, _moved = await _splice(src, dst, None, timeout, gate, None)
        if done:
            await dst.drain()
            return
    await channel.relay_until_eof(src, dst, timeout)


async def relay_to_eof(
    src: Conn, dst: Channel, gate: SpliceGate, on_progress: Callable[[], None]
) -> bool:
    """A tunnel's direction spliced until the source ends (True), or False: the copying
    path must go on (it may meet the source's end or error at once)."""
    if not spliceable(src.ch, dst):
        return False
    done, _moved = await _splice(src, dst, None, None, gate, on_progress)
    return done


def _fileno(ch: PlainChannel) -> int:
    sock = ch.writer.transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())
