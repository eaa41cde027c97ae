"""Sans-IO RFC 6455 framing for the client-to-server direction of a relayed WebSocket.

This is the seam where a switched connection's client messages can be looked at or
rewritten (``protocol: websocket`` message rules, ``websocket_credential_rewrite``):
``ClientFrameReader.feed`` takes bytes as they arrive and returns complete frames,
unmasked; whatever a server must refuse raises ``FrameError`` carrying the close code to
answer (1002 protocol error, 1009 too big). ``encode_frame`` writes a frame back, masked
as a client must send it. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_KNOWN = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG})

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
RSV1 = 0b100  # permessage-deflate marks a compressed message's first frame with it

MAX_CONTROL_PAYLOAD = 125
DEFAULT_MAX_PAYLOAD = 1 << 20


@dataclass(frozen=True, slots=True)
class Frame:
    fin: bool
    rsv: int  # the three reserved bits, as a number (RSV1 = 4)
    opcode: int
    payload: bytes  # unmasked


class FrameError(Exception):
    """The client broke the framing rules; close the WebSocket with ``code``."""

    def __init__(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _unmask(data: bytes | bytearray, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(n, "big")


class ClientFrameReader:
    """Client frames from a byte stream, checked as a server checks them (RFC 6455 5).

    Every frame masked; reserved bits only those an extension negotiated (``allowed_rsv``);
    known opcodes; control frames unfragmented with at most 125 bytes; lengths in their
    shortest encoding; fragments in order (no continuation outside a message, no new data
    message inside one); nothing after a close frame; a close payload of 0 or 2+ bytes.
    A frame longer than ``max_payload`` is refused (1009) as soon as its header is read.
    """

    __slots__ = ("_allowed_rsv", "_buf", "_in_message", "_max", "closed")

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD, allowed_rsv: int = 0) -> None:
        self._buf = bytearray()
        self._max = max_payload
        self._allowed_rsv = allowed_rsv
        self._in_message = False
        self.closed = False  # a close frame was read

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return out
            out.append(frame)

    def _next(self) -> Frame | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        if self.closed:
            raise FrameError("data after a close frame")
        fin, rsv, op = bool(buf[0] & 0x80), (buf[0] >> 4) & 0b111, buf[0] & 0x0F
        if rsv & ~self._allowed_rsv:
            raise FrameError("reserved bits set without an extension")
        if op not in _KNOWN:
            raise FrameError(f"unknown opcode {op}")
        if not buf[1] & 0x80:
            raise FrameError("client frame not masked")
        if op >= OP_CLOSE and (not fin or rsv):
            raise FrameError("fragmented or extended control frame")
        header = self._length(buf)
        if header is None:
            return None
        start, n = header
        if len(buf) < start + n:
            return None
        payload = _unmask(buf[start : start + n], bytes(buf[start - 4 : start]))
        del buf[: start + n]
        self._sequence(fin, op, payload)
        return Frame(fin, rsv, op, payload)

    def _length(self, buf: bytearray) -> tuple[int, int] | None:
        """(payload offset, payload length), or None until the header is complete."""
        n = buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            if n < 126:
                raise FrameError("length not in its shortest form")
        elif n == 127:
            if len(buf) < 10:
                return None
            n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if n >> 63:
                raise FrameError("length with the most significant bit set")
            if n < 1 << 16:
                raise FrameError("length not in its shortest form")
        if buf[0] & 0x08 and n > MAX_CONTROL_PAYLOAD:
            raise FrameError("control frame longer than 125 bytes")
        if n > self._max:
            raise FrameError("frame larger than allowed", CLOSE_TOO_BIG)
        return pos + 4, n

    def _sequence(self, fin: bool, op: int, payload: bytes) -> None:
        if op == OP_CONTINUATION:
            if not self._in_message:
                raise FrameError("continuation frame outside a message")
            self._in_message = not fin
        elif op in (OP_TEXT, OP_BINARY):
            if self._in_message:
                raise FrameError("new message inside a fragmented one")
            self._in_message = not fin
        elif op == OP_CLOSE:
            if len(payload) == 1:
                raise FrameError("close frame with a one-byte payload")
            self.closed = True


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """One frame; ``mask`` (4 bytes) for the client-to-server direction, None from a server."""
    n = len(payload)
    first = (0x80 if fin else 0) | (rsv & 0b111) << 4 | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + _unmask(payload, mask)


def close_frame(code: int, reason: str = "") -> bytes:
    """A server's close frame (unmasked): ``code`` and a short UTF-8 reason."""
    body = struct.pack("!H", code) + reason.encode()[: MAX_CONTROL_PAYLOAD - 2]
    return encode_frame(OP_CLOSE, body)
