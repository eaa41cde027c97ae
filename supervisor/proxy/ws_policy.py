"""L7 rules on a relayed WebSocket's client messages (sans-IO).

A WebSocket endpoint's rules judge client text messages as ``WEBSOCKET_TEXT`` on the path
of the upgrade (ARCHITECTURE.md 4.2); ``read-only`` allows the handshake only. When the
rules deny text messages on a connection, this filter sits on the agent-to-upstream
direction: binary and control frames pass, the first text message closes the WebSocket
with 1008 (policy violation) both ways and never reaches the upstream. What passes is
handed on to the static-credential filter when there is one.
"""

from __future__ import annotations

import os
from typing import Protocol

from supervisor.proxy.websocket import (
    CLOSE_POLICY_VIOLATION,
    OP_TEXT,
    ClientFrameReader,
    encode_frame,
)
from supervisor.proxy.ws_creds import WsRefused, read_frames

POLICY_DENIED = "policy_denied"


class FrameFilter(Protocol):
    def feed(self, data: bytes) -> bytes: ...


class TextPolicy:
    """Client bytes in, bytes for the upstream out; raises ``WsRefused`` on a text message."""

    def __init__(self, reason: str, then: FrameFilter | None = None) -> None:
        self._reader = ClientFrameReader()
        self._reason = reason
        self._then = then

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for f in read_frames(self._reader, data):
            # A continuation can only follow a data frame that passed: a binary one.
            if f.opcode == OP_TEXT:
                raise WsRefused(CLOSE_POLICY_VIOLATION, POLICY_DENIED, self._reason)
            out += encode_frame(f.opcode, f.payload, fin=f.fin, rsv=f.rsv, mask=os.urandom(4))
        data = bytes(out)
        return self._then.feed(data) if self._then is not None and data else data
