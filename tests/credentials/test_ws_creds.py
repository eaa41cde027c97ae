"""WebSocket client messages with static credentials (sans-IO): rewriting and 1008."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.credentials.placeholders import Resolver, placeholder
from supervisor.proxy.websocket import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    ClientFrameReader,
    encode_frame,
)
from supervisor.proxy.ws_creds import ClientMessages, WsRefused, strip_extensions

R = Resolver({"K": "real-value", "OTHER": "x"}, frozenset({"K"}))
MASK = b"\x01\x02\x03\x04"


def _frames(text: str, cuts: list[int]) -> bytes:
    data = text.encode()
    points = sorted({c % (len(data) + 1) for c in cuts} - {0, len(data)})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    out = b""
    for i, part in enumerate(parts):
        op = OP_TEXT if i == 0 else OP_CONTINUATION
        out += encode_frame(op, part, fin=i == len(parts) - 1, mask=MASK)
    return out


def _messages(wire: bytes) -> list[tuple[int, bytes]]:
    return [(f.opcode, f.payload) for f in ClientFrameReader().feed(wire)]


@given(before=st.text(max_size=40).filter(lambda s: "openshell" not in s),
       after=st.text(max_size=40).filter(lambda s: not s[:1].isalnum() and s[:1] != "_"),
       cuts=st.lists(st.integers(0, 200), max_size=4), chunk=st.integers(1, 64))
def test_fragmented_text_message_is_rewritten_whatever_the_framing(before, after, cuts, chunk):
    m = ClientMessages(R, rewrite_allowed=True)
    wire = _frames(before + placeholder("K") + after, cuts)
    out = b"".join(m.feed(wire[i:i + chunk]) for i in range(0, len(wire), chunk))
    assert _messages(out) == [(OP_TEXT, (before + "real-value" + after).encode())]


def test_binary_and_control_frames_pass_unchanged():
    m = ClientMessages(R, rewrite_allowed=False)
    wire = (encode_frame(OP_BINARY, placeholder("K").encode(), mask=MASK)
            + encode_frame(OP_PING, b"p", mask=MASK) + encode_frame(OP_TEXT, b"hi", mask=MASK))
    assert _messages(m.feed(wire)) == [(OP_BINARY, placeholder("K").encode()),
                                       (OP_PING, b"p"), (OP_TEXT, b"hi")]


@pytest.mark.parametrize(("allowed", "var", "code"), [
    (False, "K", "credential_unavailable"), (True, "OTHER", "credential_endpoint_mismatch"),
    (True, "NONE", "credential_unavailable")])
def test_refusals_close_with_1008(allowed, var, code):
    m = ClientMessages(R, rewrite_allowed=allowed)
    with pytest.raises(WsRefused) as info:
        m.feed(encode_frame(OP_TEXT, f"a {placeholder(var)}".encode(), mask=MASK))
    assert (info.value.close_code, info.value.code) == (1008, code)
    assert var not in info.value.reason and "real-value" not in info.value.reason


def test_unmasked_frame_is_a_protocol_error():
    with pytest.raises(WsRefused) as info:
        ClientMessages(R, True).feed(encode_frame(OP_TEXT, b"x"))
    assert info.value.close_code == 1002


def test_extensions_are_not_offered():
    assert strip_extensions([("Sec-WebSocket-Extensions", "permessage-deflate"), ("A", "b")]) == [("A", "b")]
