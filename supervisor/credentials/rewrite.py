"""Placeholder substitution in the parts of a request (pure: strings and bytes in, out).

Header values (a ``Basic`` credential is decoded, rewritten and re-encoded), the path and
the query (values inserted percent-encoded), bodies of the JSON, form and text types, and
WebSocket text messages. Each function raises ``CredentialRefused`` when the request must
not go upstream; ``None`` means "unchanged" so the caller keeps its bytes as they were.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from supervisor.credentials.placeholders import (
    PREFIX,
    UNAVAILABLE,
    CredentialRefused,
    Resolver,
    may_contain,
    placeholder,
)

Headers = list[tuple[str, str]]
BODY_LIMIT = 256 * 1024  # request_body_credential_rewrite buffers at most this much

# RFC 3986 pchar without '/': a value inserted into a path stays inside its segment.
_PATH_SAFE = "-._~!$&'()*+,;=:@"
_CTL = frozenset(chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F))


def _path_value(value: str) -> str:
    if value in (".", ".."):  # would turn into a dot segment upstream
        raise CredentialRefused(UNAVAILABLE, "path")
    return quote(value, safe=_PATH_SAFE)


def _query_value(value: str) -> str:
    return quote(value, safe="-._~")


def _json_value(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _header_value(value: str) -> str:
    if any(c in _CTL for c in value):  # CR/LF/NUL would split or end the header
        raise CredentialRefused(UNAVAILABLE, "header")
    # Heads are latin-1 text here (one char per wire byte): a value goes out as its UTF-8
    # bytes. (Encoded as is, a character past U+00FF failed serialization, cut the
    # connection and logged the character in the traceback.)
    return value.encode("utf-8").decode("latin-1")


def header_value(r: Resolver, value: str) -> str | None:
    """A header value with its placeholders replaced, or ``None`` when it has none."""
    basic = value[:6].lower() == "basic " and _basic_has_marker(value[6:])
    if not basic and PREFIX not in value:
        if may_contain(value):  # only percent-encoded: headers are not decoded upstream
            raise CredentialRefused(UNAVAILABLE, "header")
        return None
    scheme, sep, rest = value.strip().partition(" ")
    if sep and scheme.lower() == "basic":
        decoded = _b64(rest.strip())
        if decoded is not None and PREFIX in decoded:
            text, _ = r.substitute(decoded, "header", str)  # re-encoded: any byte is safe
            return f"{scheme} {base64.b64encode(text.encode()).decode('ascii')}"
    out, n = r.substitute(value, "header", _header_value)
    return out if n else None


def _b64(text: str) -> str | None:
    # Unpadded too: lenient servers decode it, so a placeholder in it must not pass unseen.
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _basic_has_marker(rest: str) -> bool:
    decoded = _b64(rest.strip())
    return decoded is not None and PREFIX in decoded


def path(r: Resolver, raw: str) -> str | None:
    if not may_contain(raw):
        return None
    out, n = r.substitute(raw, "path", _path_value, encoded=True)
    return out if n else None


def query(r: Resolver, raw: str) -> str | None:
    """``raw`` is ``""`` or ``"?..."``; query strings never reach a log."""
    if not may_contain(raw):
        return None
    out, n = r.substitute(raw, "query", _query_value, encoded=True)
    return out if n else None


@dataclass(frozen=True, slots=True)
class Head:
    path: str
    query: str
    headers: list[tuple[str, str]]
    replaced: int  # how many parts changed (0 = the request is untouched)


def head(
    r: Resolver, raw_path: str, raw_query: str, headers: Sequence[tuple[str, str]]
) -> Head:
    """The request line's target and the headers with placeholders replaced."""
    changed = 0
    new_path = path(r, raw_path)
    new_query = query(r, raw_query)
    changed += (new_path is not None) + (new_query is not None)
    out: list[tuple[str, str]] = []
    for name, value in headers:
        new = header_value(r, value)
        if new is not None:
            changed += 1
            value = new
        out.append((name, value))
    return Head(
        new_path if new_path is not None else raw_path,
        new_query if new_query is not None else raw_query,
        out,
        changed,
    )


def head_has_placeholder(raw_path: str, raw_query: str, headers: Sequence[tuple[str, str]]) -> bool:
    """Fast check used on every request before building a ``Resolver``."""
    if may_contain(raw_path) or may_contain(raw_query):
        return True
    for _name, value in headers:
        if PREFIX in value or ("%" in value and may_contain(value)):
            return True
        if value[:6].lower() == "basic " and _basic_has_marker(value[6:]):
            return True
    return False


# -- bodies ----------------------------------------------------------------------------

def body_kind(content_type: str | None) -> str | None:
    """``json``, ``form`` or ``text`` for a UTF-8 body we may rewrite; else ``None``."""
    if not content_type:
        return None
    media, *params = (p.strip() for p in content_type.split(";"))
    media = media.lower()
    for p in params:
        key, _, val = p.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in (
            "utf-8", "utf8", "us-ascii",
        ):
            return None
    if media == "application/json" or (media.startswith("application/") and media[-5:] == "+json"):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media.startswith("text/"):
        return "text"
    return None


_PREFIX_B = PREFIX.encode()


def body_may_contain(data: bytes) -> bool:
    return _PREFIX_B in data or (b"%" in data and b"resolve" in data.lower())


def body(r: Resolver, content_type: str | None, data: bytes) -> bytes | None:
    """A rewritten body, or ``None`` when it holds no placeholder.

    A placeholder in a body we cannot rewrite (another type, not UTF-8) fails closed.
    """
    if not body_may_contain(data):
        return None
    kind = body_kind(content_type)
    try:
        text = data.decode("utf-8") if kind is not None else None
    except UnicodeDecodeError:
        text = None
    if text is None or kind is None:
        if _PREFIX_B in data:
            raise CredentialRefused(UNAVAILABLE, "body")
        return None
    if kind == "json":
        out, n = r.substitute(text, "body", _json_value)
    elif kind == "form":
        out, n = r.substitute(text, "body", _query_value, encoded=True)
    else:
        out, n = r.substitute(text, "body", str)
    return out.encode("utf-8") if n else None


def websocket_text(r: Resolver, text: str) -> str | None:
    """A client text message with its placeholders replaced, or ``None``."""
    if PREFIX not in text:
        return None
    out, n = r.substitute(text, "websocket message", str)
    return out if n else None


# -- responses --------------------------------------------------------------------------

# Framing and handshake fields: parsed already, regenerated or checked by the client.
_KEEP = frozenset(
    {"content-length", "transfer-encoding", "connection", "upgrade", "sec-websocket-accept"}
)
Reflected = tuple[tuple[str, str], ...]  # (a value as it may come back, its placeholder)


def reflections(values: Mapping[str, str]) -> Reflected:
    """Each variable's value as a response head may carry it back (raw, as UTF-8 bytes in a
    latin-1 head; percent-encoded as a path or a query got it), longest first."""
    pairs = {
        (form, placeholder(var))
        for var, value in values.items()
        if value
        for form in (
            value.encode("utf-8").decode("latin-1"),
            quote(value, safe=_PATH_SAFE),
            _query_value(value),
        )
    }
    return tuple(sorted(pairs, key=lambda p: (-len(p[0]), p)))


def hide_in_head(reason: str, headers: Headers, reflected: Reflected) -> tuple[str, Headers]:
    """A response head with every reflected value shown as its placeholder.

    An upstream answering a request that carried a value may send it back in its head: a
    redirect keeping the path and query (the agent's client would then send the value to
    wherever it points), a header echoing the request's. The agent gets the placeholder.
    """

    def hide(text: str) -> str:
        for form, ph in reflected:
            if form in text:
                text = text.replace(form, ph)
        return text

    out: Headers = [
        (name, value if name.lower() in _KEEP else hide(value)) for name, value in headers
    ]
    return hide(reason), out
