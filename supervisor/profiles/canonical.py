"""Request paths as policy sees them and as the upstream is sent them: one canonical form.

Path rules are only sound when the path the proxy judges is the path the upstream
serves. Servers disagree on ``//`` (nginx merges slashes), ``;params`` (Java servlet
containers drop them), dot segments and percent-encoding, so a rule on ``/admin/**``
could be dodged with ``//admin/x`` or ``/admin;x/y``. As OpenShell does
(``l7/path.rs``), the proxy canonicalizes every request path once, judges the result,
and forwards exactly that result:

* percent-escapes are decoded; unreserved characters and RFC 3986 sub-delims, ``:`` and
  ``@`` are written literally, every other byte as upper-case ``%HH``;
* ``;params`` are stripped from every segment (before dot segments are resolved, so
  ``..;`` cannot hide a ``..``);
* ``.`` and ``..`` segments are resolved; ``..`` above the root is refused;
* repeated slashes collapse (a trailing ``/`` is kept);
* ``%2F`` (an encoded slash) is refused unless the endpoint sets ``allow_encoded_slash``;
  then it stays ``%2F`` inside its segment (matching sees one segment, as the upstream
  does) and no ``.``/``..`` may hide behind it;
* control bytes (raw or encoded), raw non-ASCII bytes, fragments and over-long paths are
  refused.

Case: paths are case-sensitive (RFC 3986 section 6.2.2.1, and OpenShell's matcher). An
upstream that folds case (IIS, some Java frameworks) serves ``/ADMIN`` like ``/admin``;
so that such a change can never dodge a denial, ``deny_rules`` paths also match
case-insensitively (``rules.py``). Allow rules and endpoint ``path`` selection stay exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

MAX_PATH_LENGTH = 8192
_SENTINEL = "\x01"  # an encoded '/' while segments are split; raw \x01 is refused
_LITERAL = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
)
_HEX = "0123456789ABCDEF"
# Already canonical (the common case): literal characters only, no '%' or ';', no '//'
# and no segment starting with '.'. Such a path is returned as it is.
_PLAIN = re.compile(r"(?:/[A-Za-z0-9\-_~!$&'()*+,=:@][A-Za-z0-9\-._~!$&'()*+,=:@]*)*/?")


class CanonicalError(ValueError):
    """The path cannot be judged safely: the request is refused (400)."""


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    path: str
    has_encoded_slash: bool  # a %2F survived (only possible when allowed)


def canonicalize(path: str, *, allow_encoded_slash: bool) -> CanonicalPath:
    """The canonical form of an origin-form path (no query); ``CanonicalError`` if none."""
    if not path:
        path = "/"
    if not path.startswith("/"):
        raise CanonicalError("path must start with '/'")
    if len(path) > MAX_PATH_LENGTH:
        raise CanonicalError("path too long")
    if _PLAIN.fullmatch(path) is not None:
        return CanonicalPath(path, False)
    decoded = _decode(path, allow_encoded_slash)
    segments = decoded[1:].split("/")
    # ';params' go first: '..;x' must be seen as '..' by the resolution below.
    segments = [seg.split(";", 1)[0] for seg in segments]
    resolved = _resolve(segments)
    for seg in resolved:
        if _SENTINEL in seg and any(p in (".", "..") for p in seg.split(_SENTINEL)):
            raise CanonicalError("dot segment hidden behind an encoded '/'")
    out = "/" + "/".join(_encode(seg) for seg in resolved)
    return CanonicalPath(out, "%2F" in out)


def _decode(path: str, allow_encoded_slash: bool) -> str:
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        o = ord(c)
        if o < 0x20 or o == 0x7F:
            raise CanonicalError("control character in path")
        if o >= 0x80:
            raise CanonicalError("raw non-ASCII byte in path")
        if c == "#":
            raise CanonicalError("fragment in path")
        if c != "%":
            out.append(c)
            i += 1
            continue
        pair = path[i + 1 : i + 3]
        if len(pair) != 2 or any(h not in "0123456789abcdefABCDEF" for h in pair):
            raise CanonicalError("invalid percent-encoding in path")
        b = int(pair, 16)
        if b == 0x2F:
            if not allow_encoded_slash:
                raise CanonicalError("encoded '/' (%2F) is not allowed on this endpoint")
            out.append(_SENTINEL)
        elif b < 0x20 or b == 0x7F:
            raise CanonicalError("encoded control character in path")
        else:
            out.append(chr(b))  # bytes >= 0x80 stay single code points, re-encoded below
        i += 3
    return "".join(out)


def _resolve(segments: list[str]) -> list[str]:
    stack: list[str] = []
    last = len(segments) - 1
    for idx, seg in enumerate(segments):
        if seg == "..":
            if not stack:
                raise CanonicalError("'..' above the root")
            stack.pop()
            if idx == last:
                stack.append("")  # '/a/b/..' is the directory '/a/'
            continue
        if seg == ".":
            if idx == last:
                stack.append("")
            continue
        if not seg and idx != last:
            continue  # '//' collapses; a trailing empty segment keeps the trailing '/'
        stack.append(seg)
    return stack


def _encode(seg: str) -> str:
    parts: list[str] = []
    for c in seg:
        if c == _SENTINEL:
            parts.append("%2F")
        elif c in _LITERAL:
            parts.append(c)
        else:
            b = ord(c)
            parts.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(parts)


def query_params(query: str) -> dict[str, list[str]]:
    """Decoded query parameters (``?`` optional), values in order, for query matchers.

    Names and values are percent-decoded (``+`` is a space, as forms encode it);
    undecodable bytes become U+FFFD so a matcher can never see raw bytes.

    Servers split on ``&``, some on ``;`` too (Rack 2, so Rails; Python's ``parse_qs``
    before 3.9.2): a part holding a raw ``;`` adds what both readings see, so
    ``?x=1;action=delete`` has ``action`` for a deny matcher, and an allow matcher (every
    value must match) sees the value a ``;``-splitting server would use.
    """
    if query.startswith("?"):
        query = query[1:]
    out: dict[str, list[str]] = {}
    if not query:
        return out
    for part in query.split("&"):
        _add_param(out, part)
        if ";" in part:
            for sub in part.split(";"):
                _add_param(out, sub)
    return out


def _add_param(out: dict[str, list[str]], part: str) -> None:
    if not part:
        return
    name, _, value = part.partition("=")
    key = unquote(name.replace("+", " "), errors="replace")
    out.setdefault(key, []).append(unquote(value.replace("+", " "), errors="replace"))
