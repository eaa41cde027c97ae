"""Static credentials in a relayed WebSocket's client messages (sans-IO).

Used for switched connections to endpoints bound to static credentials. Client frames are
parsed (``websocket.ClientFrameReader``); a complete text message holding a placeholder is
rewritten when the endpoint sets ``websocket_credential_rewrite`` and sent on as one frame,
freshly masked. Anything else fails closed with close code 1008 (policy violation): a
placeholder where rewriting is off, one bound elsewhere, one naming no exposed variable.
Binary and control frames pass unchanged. The upgrade request asks for no extension, so
no message arrives compressed (``strip_extensions``).
"""

from __future__ import annotations

import os
import struct

from supervisor.credentials import rewrite
from supervisor.credentials.placeholders import (
    MISMATCH,
    PREFIX,
    UNAVAILABLE,
    Code,
    CredentialRefused,
    Resolver,
)
from supervisor.proxy.http1 import Headers
from supervisor.proxy.websocket import (
    CLOSE_POLICY_VIOLATION,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_TEXT,
    ClientFrameReader,
    Frame,
    FrameError,
    encode_frame,
)

_PREFIX = PREFIX.encode()
MAX_MESSAGE = 1 << 20  # a fragmented text message is assembled up to this size


class WsRefused(Exception):
    """Close the WebSocket with ``close_code``; ``code`` says why (for the audit)."""

    def __init__(self, close_code: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.code = code
        self.reason = reason


def read_frames(reader: ClientFrameReader, data: bytes) -> list[Frame]:
    """The frames ``data`` completes; a protocol error is a ``WsRefused`` with its close code."""
    try:
        return reader.feed(data)
    except FrameError as exc:
        raise WsRefused(exc.code, "websocket_protocol_error", exc.reason) from None


def strip_extensions(headers: Headers) -> Headers:
    """The upgrade request without ``Sec-WebSocket-Extensions``: messages stay readable."""
    return [(n, v) for n, v in headers if n.lower() != "sec-websocket-extensions"]


def _mask() -> bytes:
    return os.urandom(4)


def upstream_close(code: int) -> bytes:
    """A close frame as a client sends it (masked)."""
    return encode_frame(OP_CLOSE, struct.pack("!H", code), mask=_mask())


class ClientMessages:
    """Client bytes in, bytes for the upstream out; raises ``WsRefused``."""

    def __init__(
        self, resolver: Resolver, rewrite_allowed: bool, *, cleartext: bool = False
    ) -> None:
        self._reader = ClientFrameReader()
        self._resolver = resolver
        self._rewrite = rewrite_allowed
        # ws:// to a host where a credential may not travel unencrypted (as for a request)
        self._cleartext = cleartext
        self._text: bytearray | None = None  # a fragmented text message being assembled
        self.rewritten = 0

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for f in read_frames(self._reader, data):
            if f.opcode == OP_TEXT or (f.opcode == OP_CONTINUATION and self._text is not None):
                buf = self._text if self._text is not None else bytearray()
                buf += f.payload
                if len(buf) > MAX_MESSAGE:
                    raise WsRefused(1009, "websocket_message_too_big", "text message too large")
                if not f.fin:
                    self._text = buf
                    continue
                self._text = None
                out += encode_frame(OP_TEXT, self._message(bytes(buf)), mask=_mask())
            else:
                out += encode_frame(f.opcode, f.payload, fin=f.fin, rsv=f.rsv, mask=_mask())
        return bytes(out)

    def _message(self, payload: bytes) -> bytes:
        if _PREFIX not in payload:
            return payload
        if not self._rewrite:
            raise self._refused(UNAVAILABLE, "placeholder in a message, rewriting is off")
        try:
            text = payload.decode("utf-8")
            new = rewrite.websocket_text(self._resolver, text)
        except UnicodeDecodeError:
            raise self._refused(UNAVAILABLE, "message is not UTF-8") from None
        except CredentialRefused as exc:
            raise self._refused(exc.code, exc.detail) from None
        if new is None:
            return payload
        if self._cleartext:
            raise WsRefused(CLOSE_POLICY_VIOLATION, "policy_denied",
                            "credential would travel in cleartext")
        self.rewritten += 1
        return new.encode("utf-8")

    @staticmethod
    def _refused(code: Code, reason: str) -> WsRefused:
        assert code in (MISMATCH, UNAVAILABLE)
        return WsRefused(CLOSE_POLICY_VIOLATION, code, reason)
