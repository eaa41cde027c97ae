"""Properties of the client-to-server WebSocket frame reader (supervisor.proxy.websocket):
valid streams read back frame for frame however they are split; any bytes give frames or a
FrameError, never another exception, and every frame returned obeys RFC 6455's rules."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.proxy.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientFrameReader,
    Frame,
    FrameError,
    encode_frame,
)

_payload = st.binary(max_size=300) | st.sampled_from([b"", b"x" * 126, b"y" * 70_000])
_control = st.tuples(st.sampled_from([OP_PING, OP_PONG]), st.binary(max_size=125))


@st.composite
def messages(draw: st.DrawFn) -> list[Frame]:
    """A valid client frame sequence: messages, some fragmented, pings between fragments,
    maybe a close at the end."""
    frames: list[Frame] = []
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from([OP_TEXT, OP_BINARY]))
        parts = draw(st.lists(_payload, min_size=1, max_size=3))
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            frames.append(Frame(last, 0, op if i == 0 else OP_CONTINUATION, part))
            if not last and draw(st.booleans()):
                c_op, c_payload = draw(_control)
                frames.append(Frame(True, 0, c_op, c_payload))
    if draw(st.booleans()):
        frames.append(Frame(True, 0, OP_CLOSE, draw(st.sampled_from([b"", b"\x03\xe8bye"]))))
    return frames


def _wire(draw: st.DrawFn, frames: list[Frame]) -> bytes:
    return b"".join(
        encode_frame(f.opcode, f.payload, fin=f.fin, mask=draw(st.binary(min_size=4, max_size=4)))
        for f in frames
    )


def _split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_valid_streams_read_back_however_split(data: st.DataObject) -> None:
    frames = data.draw(messages())
    wire = _wire(data.draw, frames)
    reader = ClientFrameReader(max_payload=1 << 17)
    got: list[Frame] = []
    for piece in _split(data.draw, wire):
        got += reader.feed(piece)
    assert got == frames
    assert reader.closed is (bool(frames) and frames[-1].opcode == OP_CLOSE)


def _check_frame(f: Frame) -> None:
    assert f.rsv == 0
    assert f.opcode in (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)
    if f.opcode >= OP_CLOSE:
        assert f.fin and len(f.payload) <= 125
    assert len(f.payload) <= 4096


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_bytes_frames_or_frame_error(data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        wire = bytearray(_wire(data.draw, data.draw(messages())))
        for _ in range(data.draw(st.integers(1, 3))):
            if wire:
                pos = data.draw(st.integers(0, len(wire) - 1))
                wire[pos] = data.draw(st.integers(0, 255))
        raw = bytes(wire)
    else:
        raw = data.draw(st.binary(max_size=200))
    reader = ClientFrameReader(max_payload=4096)
    in_message = False
    try:
        for piece in _split(data.draw, raw):
            for f in reader.feed(piece):
                _check_frame(f)
                if f.opcode in (OP_TEXT, OP_BINARY):
                    assert not in_message
                    in_message = not f.fin
                elif f.opcode == OP_CONTINUATION:
                    assert in_message
                    in_message = not f.fin
    except FrameError as exc:
        assert exc.code in (1002, 1009)


@given(st.binary(max_size=125), st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE]))
def test_unmasked_frames_refused(payload: bytes, op: int) -> None:
    reader = ClientFrameReader()
    try:
        reader.feed(encode_frame(op, payload))
    except FrameError as exc:
        assert "masked" in exc.reason
    else:
        raise AssertionError("an unmasked client frame was accepted")
