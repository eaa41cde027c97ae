"""Sans-IO strict HTTP/1.1: head detection, request/response head parsing, chunked framing.

Nothing here performs I/O; the server feeds bytes in and acts on the results. Every
rejection raises ``ParseError`` (status 400, or 431 for an oversized head) *before* any
byte would be forwarded. Strictness is deliberate: the agent is hostile, and any
ambiguity a downstream server might resolve differently is a smuggling vector.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

MAX_HEAD = 16 * 1024
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024
MAX_CHUNK_HEX = 16

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_STATUS = re.compile(rb"HTTP/1\.[01] [1-9][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?")
_REG_NAME = re.compile(r"[a-z0-9_~-]+(?:\.[a-z0-9_~-]+)*\.?")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_TCHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CHUNK_EXT = re.compile(
    rb"(?:;[\t ]*"
    + _TCHARS
    + rb"(?:=(?:"
    + _TCHARS
    + rb"|\"[\t\x20-\x21\x23-\x5b\x5d-\x7e]*\"))?)*"
)
# Methods whose response echoes the request (RFC 9110 9.3.8; TRACK is IIS's TRACE): an
# echo would hand the agent the credential the proxy injected. Never forwarded
# (ARCHITECTURE.md S13).
ECHO_METHODS = frozenset({"TRACE", "TRACK"})
# Headers frameworks read as "treat this request as method X".
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})

# Path segments an upstream would normalize away: a policy on /api/** must not admit /api/../x.
# An encoded '/' (%2F) passes here: the policy's canonicalization refuses it (400) unless
# the endpoint sets allow_encoded_slash (npm's '/@scope%2Fname').
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|%2[eE]|%5[cC]|\\")

Headers = list[tuple[str, str]]
TargetForm = Literal["absolute", "authority", "origin"]


class ParseError(Exception):
    """The peer sent something we refuse to interpret; answer ``status`` and close."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def find_head_end(buf: bytes | bytearray, limit: int = MAX_HEAD) -> int:
    """Index just past the head's terminating empty line, or -1 if more bytes are needed.

    Rejects a bare LF as soon as one is visible (so a bare-LF head cannot stall until the
    timeout) and anything longer than ``limit`` with 431.
    """
    end = buf.find(b"\r\n\r\n", 0, limit + 4)
    scan = end + 4 if end >= 0 else min(len(buf), limit + 4)
    if buf.count(b"\n", 0, scan) != buf.count(b"\r\n", 0, scan):
        raise ParseError("bare LF in head")
    if end < 0:
        if len(buf) > limit:
            raise ParseError("request head too large", 431)
        return -1
    if end + 4 > limit:
        raise ParseError("request head too large", 431)
    return end + 4


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def parse_authority(text: str, *, require_port: bool) -> tuple[str, int | None]:
    """``host[:port]`` → (normalized host, port). IPv6 literals in brackets, no userinfo."""
    if not text or "@" in text:
        raise ParseError("invalid authority")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ParseError("invalid IPv6 literal")
        try:
            host = str(ipaddress.IPv6Address(text[1:close]))
        except ValueError:
            raise ParseError("invalid IPv6 literal") from None
        rest = text[close + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
        host = host.lower()
        if not _REG_NAME.fullmatch(host):
            raise ParseError("invalid host")
        host = host.rstrip(".")
    if not rest:
        if require_port:
            raise ParseError("authority needs a port")
        return host, None
    if rest[0] != ":" or not _DIGITS.fullmatch(rest[1:]):
        raise ParseError("invalid port")
    port = int(rest[1:])
    if not 0 < port < 65536:
        raise ParseError("invalid port")
    return host, port


def split_path(target: str) -> tuple[str, str]:
    """Origin-form target → (path, query-with-'?'); rejects fragments and dot segments."""
    if "#" in target:
        raise ParseError("fragment in target")
    path, sep, query = target.partition("?")
    if not path.startswith("/"):
        raise ParseError("invalid path")
    if _DOT_SEGMENT.search(path):
        raise ParseError("dot segment or encoded '.' or '\\' in path")
    return path, sep + query


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: Headers
    form: TargetForm
    scheme: str | None  # absolute-form scheme; None otherwise
    host: str  # from the target, else from Host (normalized)
    port: int | None  # explicit port, None = scheme default
    path: str  # without query ("" for CONNECT)
    query: str  # "" or "?..."; never logged
    content_length: int | None
    chunked: bool
    keep_alive: bool
    connection_tokens: frozenset[str]
    expect_continue: bool
    max_forwards: int | None  # OPTIONS only (RFC 9110 7.6.2); None when absent

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: Headers
    content_length: int | None
    chunked: bool
    keep_alive: bool
    connection_tokens: frozenset[str]


def _split_head(head: bytes | bytearray) -> tuple[bytes, bytes]:
    """(start line, field block): the block is every field line with its CRLF, or b""."""
    data = bytes(head)
    while data.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before the start line
        data = data[2:]
    if not data.endswith(b"\r\n\r\n"):
        raise ParseError("head not terminated by CRLF CRLF")
    if data.count(b"\n") != data.count(b"\r\n"):
        raise ParseError("bare LF in head")
    start, _, block = data[:-2].partition(b"\r\n")
    return start, block


# A whole well-formed field block in one C-level match: token ":" value CRLF, values free
# of CTLs but HTAB (the same rules ``_fields`` applies line by line).
_FIELD_BLOCK = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")


def _field_block(block: bytes) -> Headers:
    """Fields of a block from ``_split_head``; one regex for the common, valid case."""
    if _FIELD_BLOCK.fullmatch(block):
        out: Headers = []
        for line in block.decode("latin-1").split("\r\n")[:-1]:
            name, _, value = line.partition(":")
            out.append((name, value.strip(" \t")))
        return out
    return _fields(block.split(b"\r\n")[:-1])  # invalid: the slow path names the error


def _fields(lines: list[bytes]) -> Headers:
    out: Headers = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise ParseError("obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep:
            raise ParseError("header line without colon")
        if not _TOKEN.fullmatch(name):
            raise ParseError("invalid header name")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise ParseError("control character in header value")
        out.append((name.decode("ascii"), value.decode("latin-1")))
    return out


@dataclass(slots=True)
class _Framing:
    content_length: int | None
    chunked: bool
    connection_tokens: frozenset[str]
    hosts: list[str]
    expect_continue: bool


def _framing(headers: Headers) -> _Framing:
    lengths: list[str] = []
    te: list[str] = []
    conn: set[str] = set()
    hosts: list[str] = []
    expect = False
    for name, value in headers:
        lname = name.lower()
        if lname == "content-length":
            lengths.extend(v.strip(" \t") for v in value.split(","))
        elif lname == "transfer-encoding":
            te.extend(v.strip(" \t").lower() for v in value.split(","))
        elif lname == "connection":
            conn.update(v.strip(" \t").lower() for v in value.split(",") if v.strip(" \t"))
        elif lname == "host":
            hosts.append(value)
        elif lname == "expect":
            expect = value.lower() == "100-continue"
    length: int | None = None
    if lengths:
        if any(not _DIGITS.fullmatch(v) for v in lengths):
            raise ParseError("invalid Content-Length")
        if len(set(lengths)) != 1:
            raise ParseError("conflicting Content-Length")
        length = int(lengths[0])
    chunked = False
    if te:
        if length is not None:
            raise ParseError("Content-Length together with Transfer-Encoding")
        if te != ["chunked"]:
            raise ParseError("unsupported Transfer-Encoding")
        chunked = True
    return _Framing(length, chunked, frozenset(conn), hosts, expect)


def parse_request_head(head: bytes | bytearray, *, origin_ok: bool = False) -> RequestHead:
    """Parse a complete request head (as delimited by ``find_head_end``).

    ``origin_ok``: origin-form targets are accepted (only inside a CONNECT tunnel).
    """
    start, block = _split_head(head)
    method, target, version = _request_line(start)
    headers = _field_block(block)
    fr = _framing(headers)
    host_hdr = _host_field(method, version, fr)
    if method == "CONNECT":
        form: TargetForm = "authority"
        scheme, path, query = None, "", ""
        host, port = parse_authority(target, require_port=True)
        if host_hdr is not None and host_hdr != (host, port) and host_hdr != (host, None):
            raise ParseError("Host does not match the CONNECT target")
    elif target.startswith("/"):
        if not origin_ok:
            raise ParseError("origin-form target outside a tunnel")
        form, scheme = "origin", None
        path, query = split_path(target)
        assert host_hdr is not None  # only a bare CONNECT may lack Host
        host, port = host_hdr
    else:
        form = "absolute"
        assert host_hdr is not None
        scheme, host, port, path, query = _absolute_target(target, host_hdr)
    return RequestHead(
        method=method,
        target=target,
        version=version,
        headers=headers,
        form=form,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        query=query,
        content_length=fr.content_length,
        chunked=fr.chunked,
        keep_alive=_keep_alive(version, fr.connection_tokens),
        connection_tokens=fr.connection_tokens,
        expect_continue=fr.expect_continue,
        max_forwards=_max_forwards(headers) if method == "OPTIONS" else None,
    )


def _request_line(start: bytes) -> tuple[str, str, str]:
    """(method, target, version) of a request line, each part checked before decoding."""
    parts = start.split(b" ")
    if len(parts) != 3:
        raise ParseError("malformed request line")
    raw_method, raw_target, raw_version = parts
    if not _TOKEN.fullmatch(raw_method):
        raise ParseError("invalid method")
    if not _TARGET.fullmatch(raw_target):
        raise ParseError("invalid characters in target")
    if not _VERSION.fullmatch(raw_version):
        raise ParseError("unsupported HTTP version")
    return raw_method.decode("ascii"), raw_target.decode("ascii"), raw_version.decode("ascii")


def _host_field(method: str, version: str, fr: _Framing) -> tuple[str, int | None] | None:
    """The request's one Host field, parsed; None only for a bare HTTP/1.0 CONNECT.

    Also refuses chunked framing in HTTP/1.0 (checked between the two, as before, so the
    first error a head has is the one reported).
    """
    # HTTP/1.0 has no Host requirement, and Python's http.client tunnels with a bare
    # "CONNECT host:port HTTP/1.0": accepted there (the target names the authority; no
    # upstream head is built from a CONNECT). Everything else needs exactly one Host.
    bare_connect = method == "CONNECT" and version == "HTTP/1.0" and not fr.hosts
    if len(fr.hosts) != 1 and not bare_connect:
        raise ParseError("exactly one Host header required")
    if fr.chunked and version == "HTTP/1.0":
        raise ParseError("Transfer-Encoding in HTTP/1.0 request")
    return parse_authority(fr.hosts[0], require_port=False) if fr.hosts else None


def _absolute_target(
    target: str, host_hdr: tuple[str, int | None]
) -> tuple[str, str, int | None, str, str]:
    """(scheme, host, port, path, query) of an absolute-form target; Host must name the
    same authority (ports compared after applying the scheme's default)."""
    lower = target[:8].lower()
    if lower.startswith("http://"):
        scheme, rest = "http", target[7:]
    elif lower.startswith("https://"):
        scheme, rest = "https", target[8:]
    else:
        raise ParseError("unsupported target form")
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    host, port = parse_authority(rest[:cut], require_port=False)
    rest = rest[cut:]
    path, query = split_path(rest if rest.startswith("/") else "/" + rest)
    dp = default_port(scheme)
    if (host_hdr[0], host_hdr[1] or dp) != (host, port or dp):
        raise ParseError("Host does not match the target authority")
    return scheme, host, port, path, query


def _keep_alive(version: str, connection_tokens: frozenset[str]) -> bool:
    """Persistence per RFC 9112 9.3: 1.1 unless "close", 1.0 only with "keep-alive"."""
    if connection_tokens:
        return "close" not in connection_tokens and (
            version == "HTTP/1.1" or "keep-alive" in connection_tokens
        )
    return version == "HTTP/1.1"


def _max_forwards(headers: Headers) -> int | None:
    values = [v for n, v in headers if n.lower() == "max-forwards"]
    if not values:
        return None
    if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
        raise ParseError("invalid Max-Forwards")
    return int(values[0])


def echo_method(method: str, headers: Iterable[tuple[str, str]]) -> str | None:
    """The echoing method (TRACE/TRACK, any case) this request is or asks to be run as
    through a method-override header; None for every other request."""
    if method.upper() in ECHO_METHODS:
        return method
    for name, value in headers:
        if name.lower() in METHOD_OVERRIDES:
            for item in value.split(","):
                if item.strip(" \t").upper() in ECHO_METHODS:
                    return item.strip(" \t")
    return None


def host_header(host: str, port: int, scheme: str) -> str:
    """The Host value for a normalized target: IPv6 in brackets, default port omitted."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port(scheme) else f"{shown}:{port}"


_ALWAYS_DROP = frozenset({"host", "proxy-authorization", "proxy-connection"})
_DROP_EXPECT = _ALWAYS_DROP | {"expect"}


def upstream_request_head(
    req: RequestHead,
    authority: str,
    credential: tuple[str, str] | None,
    *,
    upgrade: str | None = None,
    sign: Callable[[str, str, Headers], Headers] | None = None,
) -> bytes:
    """The head sent upstream for ``req``: Host regenerated from the judged target
    (``authority``, from ``host_header``), hop-by-hop and connection-nominated fields
    removed, the credential header (if any) replacing every agent copy, Max-Forwards
    decremented, framing regenerated from the parsed request. Nothing the agent nominates
    in ``Connection`` removes Host, the credential or the framing: they are added after.
    ``upgrade`` re-adds ``Connection: Upgrade`` and ``Upgrade`` for a
    protocol switch the proxy relays (both are hop-by-hop, dropped otherwise).
    """
    drop = _DROP_EXPECT if req.expect_continue else _ALWAYS_DROP
    if credential is not None:
        drop = drop | {credential[0].lower()}
    if req.max_forwards is not None:
        drop = drop | {"max-forwards"}
    headers = [("Host", authority)]
    headers += forwardable(req.headers, req.connection_tokens, drop)
    # The proxy answers 0 itself (never sent as -1); a nominated one was meant for us only.
    if req.max_forwards is not None and "max-forwards" not in req.connection_tokens:
        headers.append(("Max-Forwards", str(max(req.max_forwards - 1, 0))))
    if credential is not None:
        headers.append(credential)
    if upgrade is not None:
        headers.append(("Connection", "Upgrade"))
        headers.append(("Upgrade", upgrade))
    if req.chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif req.content_length is not None:
        headers.append(("Content-Length", str(req.content_length)))
    if sign is not None:  # SigV4 (static credentials): over the final path, query, headers
        headers = sign(req.path, req.query, headers)
    return serialize_head(f"{req.method} {req.path}{req.query} HTTP/1.1", headers)


def parse_response_head(head: bytes | bytearray) -> ResponseHead:
    start, block = _split_head(head)
    if not _STATUS.fullmatch(start):
        raise ParseError("malformed status line")
    version = start[:8].decode("ascii")
    status = int(start[9:12])
    reason = start[13:].decode("latin-1")
    headers = _field_block(block)
    fr = _framing(headers)
    if fr.connection_tokens:
        keep = "close" not in fr.connection_tokens and (
            version == "HTTP/1.1" or "keep-alive" in fr.connection_tokens
        )
    else:
        keep = version == "HTTP/1.1"
    return ResponseHead(
        version, status, reason, headers, fr.content_length, fr.chunked, keep, fr.connection_tokens
    )


BodyMode = Literal["none", "length", "chunked", "close"]


def response_body_mode(request_method: str, resp: ResponseHead) -> BodyMode:
    """RFC 9112 6.3 message body length, for a response to ``request_method``."""
    if request_method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        return "none"
    if resp.chunked:
        return "chunked"
    if resp.content_length is not None:
        return "length" if resp.content_length else "none"
    return "close"


def forwardable(
    headers: Headers, connection_tokens: frozenset[str], drop: frozenset[str]
) -> Headers:
    """Headers minus hop-by-hop, connection-nominated, framing and ``drop`` (lower-case) names.

    Names are compared trimmed and case-insensitively (a field name cannot carry whitespace
    after parsing, but trimming keeps the rule true for any caller).
    """
    out: Headers = []
    for name, value in headers:
        lname = name.strip().lower()
        if (
            lname in HOP_BY_HOP
            or lname in connection_tokens
            or lname in drop
            or lname == "content-length"
        ):
            continue
        out.append((name, value))
    return out


def serialize_head(start_line: str, headers: Headers) -> bytes:
    parts = [start_line]
    parts.extend(f"{n}: {v}" for n, v in headers)
    parts.append("\r\n")
    return "\r\n".join(parts).encode("latin-1")


WEBSOCKET = "websocket"
# Never relayed in a 101: they would describe a body or a hop that no longer exists.
_SWITCH_DROP = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authenticate",
        "proxy-connection",
    }
)


def _field_values(headers: Headers, name: str) -> list[str]:
    return [
        item.strip(" \t").lower()
        for n, v in headers
        if n.lower() == name
        for item in v.split(",")
        if item.strip(" \t")
    ]


def requested_upgrade(req: RequestHead) -> str | None:
    """``"websocket"`` when ``req`` is an RFC 6455 opening handshake the proxy relays
    (a bodiless HTTP/1.1 GET with ``Connection: upgrade`` and ``Upgrade: websocket``);
    None otherwise, and any other upgrade (h2c, TLS) is dropped like a hop-by-hop field."""
    if req.method != "GET" or req.version != "HTTP/1.1" or req.has_body:
        return None
    if "upgrade" not in req.connection_tokens:
        return None
    return WEBSOCKET if _field_values(req.headers, "upgrade") == [WEBSOCKET] else None


def switch_accepted(upgrade: str | None, resp: ResponseHead) -> bool:
    """A 101 the proxy relays: it answers an upgrade the agent asked for, to that protocol."""
    return (
        upgrade is not None
        and resp.status == 101
        and "upgrade" in resp.connection_tokens
        and _field_values(resp.headers, "upgrade") == [upgrade]
    )


def switch_response_head(resp: ResponseHead) -> bytes:
    """The 101 for the agent as the upstream sent it (``Connection``, ``Upgrade`` and the
    protocol's own fields such as ``Sec-WebSocket-Accept`` untouched)."""
    headers = [(n, v) for n, v in resp.headers if n.lower() not in _SWITCH_DROP]
    return serialize_head(f"HTTP/1.1 101 {resp.reason or 'Switching Protocols'}", headers)


class AgentResponse(NamedTuple):
    """What the proxy writes to the agent for a final response, and what follows it."""

    head: bytes
    mode: BodyMode  # how the body is read from the upstream
    encode_chunked: bool  # re-encode a chunked body (False: an HTTP/1.0 agent, close-delimited)
    keep_alive: bool  # the agent connection may carry another request afterwards
    upstream_reusable: bool  # the upstream connection may go back to the pool after it


def agent_response(req: RequestHead, resp: ResponseHead) -> AgentResponse:
    """The response head for the agent and the keep-alive decision (RFC 9112 9.3).

    The agent connection stays open when the agent wants it, the body has an end other
    than the connection closing, and an HTTP/1.0 agent can be told that end (it cannot
    read chunked framing: the body is then close-delimited).
    """
    mode = response_body_mode(req.method, resp)
    agent11 = req.version == "HTTP/1.1"
    keep = req.keep_alive and mode != "close" and (agent11 or mode != "chunked")
    headers = forwardable(resp.headers, resp.connection_tokens, frozenset())
    if mode == "chunked" and agent11:
        headers.append(("Transfer-Encoding", "chunked"))
    elif resp.content_length is not None and (
        mode != "none" or req.method == "HEAD" or resp.status == 304
    ):
        headers.append(("Content-Length", str(resp.content_length)))
    elif mode == "none" and resp.status >= 200 and resp.status not in (204, 304):
        headers.append(("Content-Length", "0"))
    if not keep:
        headers.append(("Connection", "close"))
    elif not agent11:
        headers.append(("Connection", "keep-alive"))
    head = serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", headers)
    return AgentResponse(head, mode, agent11, keep, resp.keep_alive and mode != "close")


def is_event_stream(resp: ResponseHead) -> bool:
    """A ``text/event-stream`` response (server-sent events): it may pause for minutes."""
    for name, value in resp.headers:
        if name.lower() == "content-type":
            return value.partition(";")[0].strip(" \t").lower() == "text/event-stream"
    return False


class ChunkedDecoder:
    """Incremental chunked-body decoder. ``feed`` returns decoded data pieces; ``done``
    turns true after the last chunk and trailers; bytes after the body go to ``leftover``.
    Chunk extensions and trailers are validated and dropped (never forwarded)."""

    __slots__ = (
        "_line",
        "_remaining",
        "_seen_size",
        "_state",
        "_trailer_bytes",
        "done",
        "leftover",
    )

    def __init__(self) -> None:
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._line = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0
        self._seen_size = False
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n and not self.done:
            st = self._state
            if st == 1:
                take = min(self._remaining, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = 2
            elif st == 2:
                piece = data[pos : pos + 2 - len(self._line)]
                self._line += piece
                pos += len(piece)
                if len(self._line) == 2:
                    if self._line != b"\r\n":
                        raise ParseError("missing CRLF after chunk data")
                    self._line.clear()
                    self._state = 0
            else:
                nl = data.find(b"\n", pos)
                stop = n if nl < 0 else nl + 1
                self._line += data[pos:stop]
                pos = stop
                limit = MAX_CHUNK_LINE if st == 0 else MAX_TRAILERS
                if len(self._line) > limit:
                    raise ParseError("chunk line too long")
                if nl < 0:
                    continue
                line = bytes(self._line)
                self._line.clear()
                if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                    raise ParseError("bare LF or CR in chunked framing")
                line = line[:-2]
                if st == 0:
                    self._size_line(line)
                else:
                    self._trailer_line(line)
        if self.done and pos < n:
            self.leftover = data[pos:]
        return out

    def needs_first_line(self) -> bool:
        """True until the first chunk-size line has been seen."""
        return self._state == 0 and self._remaining == 0 and not self._seen_size

    def _size_line(self, line: bytes) -> None:
        self._seen_size = True
        size_part, _, ext = line.partition(b";")
        if not _HEX.fullmatch(size_part) or len(size_part) > MAX_CHUNK_HEX:
            raise ParseError("invalid chunk size")
        if ext and not _CHUNK_EXT.fullmatch(b";" + ext):
            raise ParseError("invalid chunk extension")
        size = int(size_part, 16)
        if size >= 1 << 62:
            raise ParseError("chunk size overflow")
        if size:
            self._remaining = size
            self._state = 1
        else:
            self._state = 3

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self.done = True
            return
        self._trailer_bytes += len(line)
        if self._trailer_bytes > MAX_TRAILERS:
            raise ParseError("trailers too large")
        _fields([line])


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
