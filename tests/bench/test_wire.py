"""The bench's own wire formats: WebSocket frames, chunked bodies, server-sent events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.bench.wire import (
    OP_BINARY,
    OP_TEXT,
    ChunkedReader,
    EventReader,
    FrameReader,
    WireError,
    chunk,
    sse_event,
    ws_accept,
    ws_frame,
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def test_accept_key_of_rfc6455_example() -> None:
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@settings(max_examples=150)
@given(
    st.lists(st.binary(max_size=70_000), min_size=1, max_size=4),
    st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_frames_round_trip_whatever_the_split(
    payloads: list[bytes], mask: bytes | None, cuts: list[int]
) -> None:
    wire = b"".join(ws_frame(OP_BINARY, p, mask) for p in payloads)
    reader = FrameReader()
    frames = [f for piece in _split(wire, cuts) for f in reader.feed(piece)]
    assert [f.payload for f in frames] == payloads
    assert all(f.masked == (mask is not None) and f.opcode == OP_BINARY for f in frames)


def test_masking_changes_the_wire_bytes_and_lengths_use_the_right_width() -> None:
    assert ws_frame(OP_TEXT, b"hi", b"\x01\x02\x03\x04")[6:] != b"hi"
    assert ws_frame(OP_TEXT, b"x" * 125)[1] == 125
    assert ws_frame(OP_TEXT, b"x" * 126)[1] == 126
    assert ws_frame(OP_TEXT, b"x" * 70_000)[1] == 127
    with pytest.raises(ValueError):
        ws_frame(OP_TEXT, b"", b"\x00")


@pytest.mark.parametrize(
    "wire", [b"\x01\x02hi", b"\xc2\x00", b"\x82\x7f" + (2**40).to_bytes(8, "big")]
)
def test_unsupported_frames_are_refused(wire: bytes) -> None:
    with pytest.raises(WireError):
        FrameReader().feed(wire)


@settings(max_examples=150)
@given(
    st.lists(st.binary(min_size=1, max_size=3000), max_size=6),
    st.lists(st.integers(min_value=0), max_size=8),
    st.binary(max_size=20),
)
def test_chunked_round_trip_whatever_the_split(
    parts: list[bytes], cuts: list[int], after: bytes
) -> None:
    wire = b"".join(chunk(p) for p in parts) + chunk(b"") + after
    reader = ChunkedReader()
    body = b"".join(reader.feed(piece) for piece in _split(wire, cuts))
    assert reader.done and body == b"".join(parts)
    assert reader.leftover == after


def test_chunk_extensions_and_trailers_are_skipped() -> None:
    reader = ChunkedReader()
    assert reader.feed(b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n") == b"abc"
    assert reader.done


@pytest.mark.parametrize("wire", [b"zz\r\n", b"-3\r\nabc\r\n", b"3\r\nabcdef\r\n", b"1" * 5000])
def test_bad_chunked_bodies_are_refused(wire: bytes) -> None:
    with pytest.raises(WireError):
        ChunkedReader().feed(wire)


@given(
    st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
             max_size=5),
    st.lists(st.integers(min_value=0), max_size=5),
)  # fmt: skip
def test_events_split_on_blank_lines(datas: list[bytes], cuts: list[int]) -> None:
    wire = b": comment\n\n" + b"".join(sse_event(d) for d in datas)
    reader = EventReader()
    assert [e for piece in _split(wire, cuts) for e in reader.feed(piece)] == datas


def test_multi_line_event_data_and_crlf() -> None:
    assert EventReader().feed(b"event: x\r\ndata: a\r\ndata:b\r\n\r\n") == [b"a\nb"]
