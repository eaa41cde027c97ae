"""The client frame reader's refusals, one rule at a time (RFC 6455 5.1-5.5)."""

from __future__ import annotations

import struct

import pytest

from supervisor.proxy.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    RSV1,
    ClientFrameReader,
    FrameError,
    close_frame,
    encode_frame,
)

MASK = b"\xaa\xbb\xcc\xdd"


def masked(op: int, payload: bytes = b"", **kw: object) -> bytes:
    return encode_frame(op, payload, mask=MASK, **kw)  # type: ignore[arg-type]


def long_header(first: int, n: int, width: int) -> bytes:
    """A masked frame header announcing ``n`` bytes in a 2- or 8-byte length field."""
    if width == 2:
        return bytes([first, 0x80 | 126]) + struct.pack("!H", n) + MASK
    return bytes([first, 0x80 | 127]) + struct.pack("!Q", n) + MASK


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (masked(OP_TEXT, rsv=RSV1), "reserved bits"),
        (bytes([0x83, 0x80]) + MASK, "unknown opcode"),
        (encode_frame(OP_TEXT, b"hi"), "not masked"),
        (masked(OP_PING, fin=False), "fragmented or extended control"),
        (long_header(0x89, 126, 2) + b"x" * 126, "control frame longer"),
        (long_header(0x81, 5, 2) + b"x" * 5, "shortest form"),
        (long_header(0x81, 300, 8) + b"x" * 300, "shortest form"),
        (long_header(0x81, 1 << 63, 8), "most significant bit"),
        (masked(OP_CONTINUATION, b"x"), "continuation frame outside"),
        (masked(OP_TEXT, b"a", fin=False) + masked(OP_BINARY, b"b"), "inside a fragmented"),
        (masked(OP_CLOSE) + masked(OP_TEXT, b"late"), "after a close"),
        (masked(OP_CLOSE, b"\x03"), "one-byte payload"),
    ],
)
def test_protocol_errors(stream: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason) as exc:
        ClientFrameReader().feed(stream)
    assert exc.value.code == 1002


def test_oversized_frame_refused_from_its_header() -> None:
    reader = ClientFrameReader(max_payload=1000)
    with pytest.raises(FrameError) as exc:
        reader.feed(long_header(0x82, 1001, 2))  # no payload byte sent yet
    assert exc.value.code == 1009


def test_extension_bits_when_negotiated_and_frames_split_anywhere() -> None:
    reader = ClientFrameReader(allowed_rsv=RSV1)
    stream = masked(OP_TEXT, b"compressed", rsv=RSV1) + masked(OP_BINARY, b"b" * 70_000)
    got = []
    for i in range(0, len(stream), 7):
        got += reader.feed(stream[i : i + 7])
    assert [(f.opcode, f.rsv, len(f.payload)) for f in got] == [
        (OP_TEXT, RSV1, 10),
        (OP_BINARY, 0, 70_000),
    ]
    assert got[0].payload == b"compressed"


def test_close_frame_is_a_servers() -> None:
    frame = close_frame(1008, "policy")
    assert frame == b"\x88\x08" + struct.pack("!H", 1008) + b"policy"
