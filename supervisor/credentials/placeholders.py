"""Finding and replacing ``openshell:resolve:env:<VAR>`` placeholders in text.

One pass, left to right, over the text; each placeholder is replaced by its variable's
value passed through an encoder chosen by the caller (raw for headers and text bodies,
percent-encoding for paths, queries and forms, JSON escaping for JSON strings). A
variable name is the longest run of ``[A-Za-z0-9_]`` after the prefix (as environment
variable names are spelled), so ``...:GITHUB_TOKEN2`` names ``GITHUB_TOKEN2``, never
``GITHUB_TOKEN``.

Where the text may be percent-encoded (path, query, form bodies) a second pattern also
finds placeholders whose characters are written as ``%XX``: an agent's URL library may
encode the ``:``. After the pass the result must hold no prefix any more, neither raw nor
percent-decoded; a leftover (a prefix with no name, a value that itself holds a
placeholder) fails closed as ``credential_unavailable``.

Errors carry a code and where in the request it happened, never the variable's name, the
placeholder or the value: they end up in logs and in the agent's error body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, Literal
from urllib.parse import unquote

from supervisor.record import field, record

PREFIX = "openshell:resolve:env:"
MISMATCH: Final = "credential_endpoint_mismatch"
UNAVAILABLE: Final = "credential_unavailable"
Code = Literal["credential_endpoint_mismatch", "credential_unavailable"]

_VAR_CHARS = "A-Za-z0-9_"
_RAW = re.compile(re.escape(PREFIX) + f"([{_VAR_CHARS}]*)")


def _hex(c: str) -> str:
    """A regex for ``%XX`` spelling ``c`` (hex digits of either case)."""
    return "%" + "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{ord(c):02X}")


_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
_ENCODED = re.compile(
    "".join(f"(?:{re.escape(c)}|{_hex(c)})" for c in PREFIX)
    + f"((?:[{_VAR_CHARS}]|{'|'.join(_hex(c) for c in _NAME_CHARS)})*)"
)
_ENCODED_PREFIX_HINT = re.compile(r"%[0-9A-Fa-f]{2}")


class CredentialRefused(Exception):
    """A request that must not go upstream: the code and the place, nothing secret."""

    def __init__(self, code: Code, location: str) -> None:
        self.code: Code = code
        self.location = location
        super().__init__(self.detail)

    @property
    def status(self) -> int:
        return 403 if self.code == MISMATCH else 500

    @property
    def detail(self) -> str:
        if self.code == MISMATCH:
            return f"credential placeholder in the {self.location} is not bound to this endpoint"
        return f"credential placeholder in the {self.location} cannot be resolved"


def placeholder(var: str) -> str:
    return PREFIX + var


def may_contain(text: str) -> bool:
    """Cheap pre-check: could ``text`` hold a placeholder, raw or percent-encoded?"""
    return PREFIX in text or ("%" in text and PREFIX in unquote(text, errors="replace"))


def contains_marker(text: str) -> bool:
    """Is the prefix in ``text``, raw or after percent-decoding? (The fail-closed check.)"""
    return may_contain(text)


@record
class Resolver:
    """Values of the exposed variables and which of them this request may use.

    ``values``: every exposed variable → its value (a name outside it is unknown).
    ``allowed``: the variables bound to the request's destination (host, port, path).
    """

    values: Mapping[str, str]
    allowed: frozenset[str]
    used: set[str] = field(default_factory=set, compare=False)  # variables substituted

    def value(self, var: str, location: str) -> str:
        got = self.values.get(var) if var else None
        if got is None:
            raise CredentialRefused(UNAVAILABLE, location)
        if var not in self.allowed:
            raise CredentialRefused(MISMATCH, location)
        self.used.add(var)
        return got

    def substitute(
        self,
        text: str,
        location: str,
        encode: Callable[[str], str] = str,
        *,
        encoded: bool = False,
    ) -> tuple[str, int]:
        """``text`` with every placeholder replaced by ``encode(value)``; the count.

        ``encoded``: the text is percent-encoded (path, query, form), so placeholders
        written with ``%XX`` are found too. Raises ``CredentialRefused``.
        """
        if PREFIX not in text and not (encoded and "%" in text):
            return text, 0
        pattern = _ENCODED if encoded and _ENCODED_PREFIX_HINT.search(text) else _RAW
        count = 0

        def one(m: re.Match[str]) -> str:
            nonlocal count
            count += 1
            var = unquote(m.group(1)) if pattern is _ENCODED else m.group(1)
            return encode(self.value(var, location))

        out = pattern.sub(one, text)
        if contains_marker(out):
            raise CredentialRefused(UNAVAILABLE, location)
        return out, count


def first_variable(text: str) -> str | None:
    """The variable named by the first placeholder in ``text`` (tests, diagnostics)."""
    m = _RAW.search(text)
    return m.group(1) if m else None


def redact(text: str) -> str:
    """``text`` with every placeholder (raw or percent-encoded) shown as ``[CREDENTIAL]``,
    for log lines that carry a path; a bare prefix is redacted too."""
    if not may_contain(text):
        return text
    return _ENCODED.sub("[CREDENTIAL]", text)
