"""Sans-IO wire formats the stream legs speak: WebSocket frames (RFC 6455), HTTP/1.1
chunked bodies and server-sent events.

The bench's own small implementations, independent of the product's parsers, so a bug in
the proxy's framing cannot hide behind the same bug in the client that measures it. Only
what the bench sends is supported: unfragmented frames and ``data:`` events.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class WireError(ValueError):
    """The peer sent something this reader does not accept."""


def ws_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    # XOR with the repeated 4-byte key as one big integer: no per-byte Python loop.
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    n = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return n.to_bytes(len(payload), "big")


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; ``mask`` (4 bytes) for client-to-server frames."""
    if mask is not None and len(mask) != 4:
        raise ValueError("a mask is 4 bytes")
    bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + _unmask(payload, mask)


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes  # unmasked
    masked: bool


class FrameReader:
    """Feed bytes, get whole frames. Fragmented messages and reserved bits are refused."""

    def __init__(self, max_payload: int = 1 << 20) -> None:
        self._buf = bytearray()
        self.max_payload = max_payload

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Frame | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise WireError("reserved bits set")
        if not b0 & 0x80:
            raise WireError("fragmented message")
        masked = bool(b1 & 0x80)
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        if n > self.max_payload:
            raise WireError(f"frame of {n} bytes")
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        return Frame(b0 & 0x0F, _unmask(payload, mask) if masked else payload, masked)


class ChunkedReader:
    """Decodes an HTTP/1.1 chunked body incrementally; ``done`` after the last chunk.

    Chunk extensions are skipped; trailers are read and dropped.
    """

    def __init__(self, max_line: int = 4096) -> None:
        self._buf = bytearray()
        self._left = -1  # bytes left in the current chunk; -1: expecting a size line
        self._trailers = False
        self.done = False
        self.max_line = max_line

    def feed(self, data: bytes) -> bytes:
        """The body bytes that ``data`` completes (possibly empty)."""
        self._buf += data
        out = bytearray()
        while not self.done:
            if self._left > 0:
                take = min(self._left, len(self._buf))
                if take == 0:
                    break
                out += self._buf[:take]
                del self._buf[:take]
                self._left -= take
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > self.max_line:
                    raise WireError("chunk line too long")
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            if self._trailers:
                self.done = line == b""
            elif self._left == 0:  # the CRLF after a chunk's data
                if line:
                    raise WireError("chunk data longer than its size")
                self._left = -1
            else:
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise WireError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0 or not size_text.isalnum():
                    raise WireError(f"bad chunk size {size_text[:20]!r}")
                if size == 0:
                    self._trailers = True
                else:
                    self._left = size
        return bytes(out)

    @property
    def leftover(self) -> bytes:
        """Bytes after the body's end (the next response on a kept-alive connection)."""
        return bytes(self._buf) if self.done else b""


def chunk(data: bytes) -> bytes:
    """One chunk; ``chunk(b"")`` is the last one."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"


class EventReader:
    """Splits a ``text/event-stream`` body into the ``data`` of each event."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return events
            block = bytes(self._buf[:end])
            del self._buf[: end + 2]
            lines = [ln[5:].removeprefix(b" ") for ln in block.split(b"\n") if ln.startswith(b"data:")]
            if lines:
                events.append(b"\n".join(lines))


def sse_event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"
