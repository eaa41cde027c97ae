"""Globs of L7 rules, compiled once at load time to anchored regular expressions.

Two flavours, as OpenShell's policy engine evaluates them (Rego ``glob.match``):

* path globs (``rules[].allow.path``, ``deny_rules[].path``): ``/`` separates segments;
  ``*`` matches within one segment, ``?`` one character of a segment, ``[abc]``/``[a-z]``/
  ``[!a]`` one character of a class, ``{a,b}`` alternatives; ``**`` as a whole segment
  matches zero or more segments (``/**/x`` also matches ``/x``; a trailing ``/**`` also
  matches the path without it); the pattern ``**`` alone matches every path.
* value globs (query values, GraphQL operation names and root fields, MCP methods and
  tool names): the same syntax with ``.`` as the only separator — OpenShell's
  ``glob.match(pattern, [], value)`` defaults to ``["."]`` — so ``v1.*`` matches ``v1.2``
  and not ``v1.2.3``; ``**`` crosses dots.

Matching is case-sensitive (RFC 3986 paths and OpenShell's matcher are).
"""

from __future__ import annotations

import functools
import re

MAX_GLOB_LENGTH = 1024


class GlobError(ValueError):
    pass


@functools.lru_cache(maxsize=4096)
def compile_path_glob(pattern: str) -> re.Pattern[str]:
    if pattern == "**":
        return re.compile(r".*", re.DOTALL)
    return re.compile(_translate(pattern, "/"), re.DOTALL)


@functools.lru_cache(maxsize=4096)
def compile_value_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(_translate(pattern, "."), re.DOTALL)


def check_path_glob(pattern: str) -> str | None:
    if not pattern:
        return "must not be empty"
    if pattern != "**" and not pattern.startswith(("/", "*")):
        return "path glob must start with '/' (or be '**')"
    return _check(pattern, compile_path_glob)


def check_value_glob(pattern: str) -> str | None:
    if not pattern:
        return "must not be empty"
    return _check(pattern, compile_value_glob)


def _check(pattern: str, compile_: object) -> str | None:
    if len(pattern) > MAX_GLOB_LENGTH:
        return f"glob longer than {MAX_GLOB_LENGTH} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        return "glob must not contain control characters"
    try:
        compile_(pattern)  # type: ignore[operator]
    except GlobError as exc:
        return f"invalid glob: {exc}"
    return None


def is_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[{")


def _translate(pattern: str, sep: str) -> str:
    out = _Translator(pattern, sep).run()
    return out


class _Translator:
    def __init__(self, pattern: str, sep: str) -> None:
        self.p = pattern
        self.sep = sep
        self.not_sep = f"[^{re.escape(sep)}]"
        self.i = 0

    def run(self) -> str:
        body = self._seq(top=True)
        if self.i != len(self.p):
            raise GlobError(f"unexpected {self.p[self.i]!r} at {self.i}")
        return body

    def _seq(self, *, top: bool) -> str:
        parts: list[str] = []
        p, sep = self.p, self.sep
        while self.i < len(p):
            c = p[self.i]
            if not top and c in ",}":
                break
            if c == sep and p[self.i + 1 :] == "**" and top:
                # trailing '/**': X itself and everything below it
                parts.append(f"(?:{re.escape(sep)}.*)?")
                self.i = len(p)
                break
            if c == "*":
                if p.startswith("**", self.i):
                    parts.append(self._double_star())
                    continue
                parts.append(f"{self.not_sep}*")
                self.i += 1
            elif c == "?":
                parts.append(self.not_sep)
                self.i += 1
            elif c == "[":
                parts.append(self._class())
            elif c == "{":
                parts.append(self._alternatives())
            elif c == "\\":
                if self.i + 1 >= len(p):
                    raise GlobError("trailing backslash")
                parts.append(re.escape(p[self.i + 1]))
                self.i += 2
            elif c in "]}" or (top and c == ","):
                if c == ",":
                    parts.append(re.escape(c))
                    self.i += 1
                else:
                    raise GlobError(f"unmatched {c!r}")
            else:
                parts.append(re.escape(c))
                self.i += 1
        return "".join(parts)

    def _double_star(self) -> str:
        """``**`` must be a whole segment: ``X/**/Y``, ``**/Y``, ``X/**`` or ``**``."""
        p, sep, i = self.p, self.sep, self.i
        before_ok = i == 0 or p[i - 1] == sep
        end = i + 2
        after_ok = end == len(p) or p[end] == sep
        if p.startswith("***", i) or not (before_ok and after_ok):
            raise GlobError("'**' must be a whole segment (e.g. '/a/**/b' or '/a/**')")
        self.i = end
        if end == len(p):
            return ".*"  # '**' alone, or inside alternatives
        # '**/' : zero or more whole segments, each followed by the separator.
        self.i += 1
        return f"(?:.*{re.escape(sep)})?"

    def _class(self) -> str:
        p = self.p
        j = self.i + 1
        negate = j < len(p) and p[j] in "!^"
        if negate:
            j += 1
        start = j
        if j < len(p) and p[j] == "]":
            j += 1  # a leading ']' is literal
        while j < len(p) and p[j] != "]":
            j += 1
        if j >= len(p):
            raise GlobError("unclosed '['")
        body = p[start:j]
        if not body:
            raise GlobError("empty character class")
        chars = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
        self.i = j + 1
        sep = re.escape(self.sep)
        # A class never matches the separator: it stands for one character of a segment.
        return f"[^{sep}{chars}]" if negate else f"(?:(?!{sep})[{chars}])"

    def _alternatives(self) -> str:
        self.i += 1  # '{'
        options: list[str] = []
        while True:
            options.append(self._seq(top=False))
            if self.i >= len(self.p):
                raise GlobError("unclosed '{'")
            c = self.p[self.i]
            self.i += 1
            if c == "}":
                break
        return "(?:" + "|".join(options) + ")"
