"""Invariant checks on arbitrary input: what must hold whatever bytes arrive.

Each ``check_*`` takes raw bytes, runs them through the product's parser the way the proxy
or the grant client does, and raises ``Violation`` when a security invariant breaks (an
unexpected exception type is a finding too, so callers let it propagate). Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata

from supervisor.grants.errors import GrantError
from supervisor.grants.exchange import (
    MAX_ERROR_FIELD,
    error_for_status,
    parse_success,
    sanitize_error_body,
)
from supervisor.proxy.http1 import (
    HOP_BY_HOP,
    LAST_CHUNK,
    ChunkedDecoder,
    ParseError,
    RequestHead,
    default_port,
    echo_method,
    encode_chunk,
    find_head_end,
    host_header,
    parse_request_head,
    serialize_head,
    upstream_request_head,
)


class Violation(AssertionError):
    """A security invariant does not hold for some input."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise Violation(what)


# Independent restatements of the contract (ARCHITECTURE.md 5 and 6), deliberately not the product's
# own regexes: an oracle that reuses the code under test cannot disagree with it.
_TOKEN68_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/-")
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_FORBIDDEN_IN_VALUE = frozenset("\r\n\0")
_RFC6749_CODES = frozenset(
    {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
     "unsupported_grant_type", "invalid_scope", "access_denied", "unsupported_response_type",
     "server_error", "temporarily_unavailable"}
)  # fmt: skip
# An encoded '.' or '\' never passes the head parser. An encoded '/' does (npm's
# '/@scope%2Fname'): the policy's canonicalization refuses it unless the endpoint sets
# allow_encoded_slash, and keeps it one segment when it does (profiles/canonical.py).
_ENCODED_SEPARATOR = re.compile(r"%(?:2e|5c)", re.IGNORECASE)


def is_token68(value: str) -> bool:
    body = value.rstrip("=")
    return bool(body) and set(body) <= _TOKEN68_CHARS


def is_clean_text(value: str) -> bool:
    """No control, format, surrogate or line/paragraph separator character."""
    return not any(unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" for ch in value)


def path_is_normal(path: str) -> bool:
    """A path no upstream would rewrite: no dot segment, no encoded '.', no back-slash raw or
    encoded (an encoded '/' is the canonicalization's to refuse, see above)."""
    segments = path.split("/")
    return (
        path.startswith("/")
        and "." not in segments
        and ".." not in segments
        and "\\" not in path
        and _ENCODED_SEPARATOR.search(path) is None
    )


# -- HTTP request heads ------------------------------------------------------------------


def check_request_head(data: bytes) -> RequestHead | None:
    """Head detection + parsing + the upstream head the proxy would build; body framing of
    whatever follows the head. Returns the parsed head (for callers that want it)."""
    try:
        end = find_head_end(data)
    except ParseError as exc:
        _require(exc.status in (400, 431), f"unexpected status {exc.status}")
        return None
    if end < 0:
        return None
    _require(data[:end].endswith(b"\r\n\r\n"), "head end not after CRLF CRLF")
    head, rest = data[:end], data[end:]
    parsed: RequestHead | None = None
    for origin_ok in (False, True):
        try:
            req = parse_request_head(head, origin_ok=origin_ok)
        except ParseError as exc:
            _require(exc.status == 400, f"parse status {exc.status}")
            continue
        check_accepted_head(req, tunnel=origin_ok)
        parsed = parsed or req
        if req.chunked:
            check_chunked_body(rest, len(rest) // 2)
    return parsed


def check_accepted_head(req: RequestHead, *, tunnel: bool) -> None:
    """What a head the parser accepted must look like, and what goes upstream from it."""
    _require(set(req.method) <= _TCHAR and bool(req.method), "method not a token")
    _require(req.version in ("HTTP/1.0", "HTTP/1.1"), "version")
    _require(not (req.chunked and req.content_length is not None), "both CL and TE")
    _require(not (req.chunked and req.version == "HTTP/1.0"), "chunked in HTTP/1.0")
    _require(req.content_length is None or req.content_length >= 0, "negative length")
    hosts = [v for n, v in req.headers if n.lower() == "host"]
    _require(len(hosts) == 1, "not exactly one Host")
    for name, value in req.headers:
        _require(bool(name) and set(name) <= _TCHAR, "header name not a token")
        _require(not (_FORBIDDEN_IN_VALUE & set(value)), "CR, LF or NUL in a header value")
        _require(value == value.strip(" \t"), "untrimmed header value")
    _require(bool(req.host) and not (set(req.host) & set("@/?#\\ ")), "host characters")
    _require(req.host == req.host.lower(), "host not normalized")
    _require(req.port is None or 0 < req.port < 65536, "port range")
    if req.form == "authority":
        _require(req.method == "CONNECT" and req.port is not None, "authority form")
        return
    _require(req.method != "CONNECT", "CONNECT without authority form")
    _require(req.form == "absolute" or tunnel, "origin form outside a tunnel")
    _require(req.form != "absolute" or req.scheme in ("http", "https"), "scheme")
    _require(path_is_normal(req.path), "path with dot segment or encoded separator")
    _require("#" not in req.path + req.query, "fragment")
    _require(req.query == "" or req.query.startswith("?"), "query form")
    _check_upstream_head(req)
    again = parse_request_head(
        serialize_head(f"{req.method} {req.target} {req.version}", req.headers), origin_ok=tunnel
    )
    _require(again == req, "accepted head does not round-trip")


def _check_upstream_head(req: RequestHead) -> None:
    """Build the upstream head as the server does; the upstream must read the same request,
    with exactly one Host (the judged authority, whatever ``Connection`` nominated) and
    exactly the injected credential."""
    scheme = req.scheme or "https"
    port = req.port or default_port(scheme)
    authority = host_header(req.host, port, scheme)
    wire = upstream_request_head(req, authority, ("Authorization", "Bearer tok68"))
    _require(find_head_end(wire) == len(wire), "upstream head ends early (injection)")
    up = parse_request_head(wire, origin_ok=True)
    for name, _ in up.headers:
        lname = name.lower()
        _require(
            lname not in HOP_BY_HOP or (lname == "transfer-encoding" and req.chunked),
            "hop-by-hop field forwarded",
        )
        _require(
            lname not in req.connection_tokens
            or lname in ("host", "authorization", "content-length", "transfer-encoding"),
            "connection-nominated field forwarded",
        )
    _require(
        (up.method, up.path, up.query, up.chunked, up.content_length, up.host, up.port)
        == (req.method, req.path, req.query, req.chunked, req.content_length, req.host,
            None if port == default_port(scheme) else port),
        "upstream reads a different request",
    )
    hosts = [v for n, v in up.headers if n.lower() == "host"]
    _require(hosts == [authority], "Host not exactly the judged authority")
    auth = [v for n, v in up.headers if n.lower() == "authorization"]
    _require(auth == ["Bearer tok68"], "credential header not exactly the injected one")
    if req.max_forwards and "max-forwards" not in req.connection_tokens:
        forwards = [v for n, v in up.headers if n.lower() == "max-forwards"]
        _require(forwards == [str(req.max_forwards - 1)], "Max-Forwards not decremented")
    if req.method.upper() in ("TRACE", "TRACK"):
        _require(echo_method(req.method, req.headers) is not None, "echoing method not found")


# -- chunked bodies ----------------------------------------------------------------------


def _decode(pieces: list[bytes]) -> tuple[bytes, bool, bytes, str | None]:
    dec = ChunkedDecoder()
    out: list[bytes] = []
    leftover = b""
    try:
        for i, piece in enumerate(pieces):
            out += dec.feed(piece)
            if dec.done:
                leftover = dec.leftover + b"".join(pieces[i + 1 :])
                break
    except ParseError as exc:
        _require(exc.status == 400, f"chunked status {exc.status}")
        return b"", False, b"", "error"
    return b"".join(out), dec.done, leftover, None


def check_chunked_body(body: bytes, cut: int) -> None:
    """Split-independence: at once, at ``cut``, and byte by byte (short inputs) agree;
    a finished body re-encoded as the proxy forwards it decodes to the same bytes."""
    whole = _decode([body])
    cut = max(0, min(cut, len(body)))
    variants = [[body[:cut], body[cut:]]]
    if len(body) <= 256:
        variants.append([body[i : i + 1] for i in range(len(body))])
    for pieces in variants:
        _require(_decode(pieces) == whole, "chunked result depends on how the stream is split")
    data, done, _, err = whole
    if err is None and done:
        forwarded = (encode_chunk(data) if data else b"") + LAST_CHUNK
        _require(_decode([forwarded])[:2] == (data, True), "re-encoded body differs")


# -- token endpoint responses ------------------------------------------------------------


def check_token_response(data: bytes, status: int = 200) -> None:
    """The validator accepts only token68, never raises but GrantError; error text is clean."""
    try:
        resp = parse_success(data)
    except GrantError as exc:
        _require(is_clean_text(exc.reason), "control character in a grant error")
    else:
        _require(is_token68(resp.access_token), "accepted a token that is not token68")
        _require(
            resp.expires_in is None or (type(resp.expires_in) is int and resp.expires_in >= 0),
            "expires_in not a non-negative int",
        )
        _require("access_token" not in repr(resp), "token field in repr")
    fields = sanitize_error_body(data)
    _require(set(fields) <= {"error", "error_description"}, "extra error fields survive")
    for value in fields.values():
        _require(0 < len(value) <= MAX_ERROR_FIELD, "error field length")
        _require(is_clean_text(value), "control character in a sanitized error field")
    err = error_for_status(status, data)
    _require(isinstance(err, GrantError) and is_clean_text(err.reason), "error_for_status text")
    if not 300 <= status < 400:
        # What the agent sees: the status, then at most a registered RFC 6749 code.
        shown = err.reason.removeprefix(f"token endpoint answered {status}")
        _require(shown != err.reason, "status missing from the agent's text")
        code = fields.get("error")
        _require(
            shown == "" or (shown == f": {code}" and code in _RFC6749_CODES),
            "issuer text (description or private code) shown to the agent",
        )
        _require(is_clean_text(err.audit_detail or ""), "control character in the audit text")
