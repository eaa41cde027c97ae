"""Host and path patterns: parsing, compilation, specificity and overlap.

Host patterns: ``*`` inside a label matches within that label (a bare ``*`` label is
exactly one label, never crossing a dot); a ``**`` label is one or more labels.
Path patterns: ``*`` matches within one segment; a trailing ``/**`` means "X and below".
Everything is compiled once at load time; the matcher only runs precompiled regexes.
"""

from __future__ import annotations

import functools
import re

from supervisor.profiles.hosts import ip_of, normalize_host
from supervisor.record import record

_LABEL_CHARS = re.compile(r"[a-z0-9_*-]+")
_PATH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f?#%\\]")

# Specificity: bigger is more specific. (path_specific, host_rank, host_literal,
# path_literal, path_rank). Path-specific beats host-only; then exact host > '*' > '**'
# and a longer literal host wins; then the longer literal path, then exact > '*' > '/**'.
Specificity = tuple[int, int, int, int, int]

RANK_EXACT, RANK_STAR, RANK_DOUBLE = 2, 1, 0


@record
class HostPattern:
    text: str
    labels: tuple[str, ...]
    regex: re.Pattern[str] | None  # None = literal host, compare with ==
    rank: int
    literal_len: int

    @property
    def is_literal(self) -> bool:
        return self.regex is None

    def matches(self, host: str) -> bool:
        """``host`` must already be normalized."""
        return host == self.text if self.regex is None else self.regex.fullmatch(host) is not None


@record
class PathPattern:
    text: str
    segments: tuple[str, ...]  # without the trailing '**'
    subtree: bool  # pattern ends in '/**'
    regex: re.Pattern[str] | None  # None = exact path
    rank: int
    literal_len: int

    def matches(self, path: str) -> bool:
        """``path`` must be canonical (see ``canonical_path``)."""
        return path == self.text if self.regex is None else self.regex.fullmatch(path) is not None


def _glob_regex(glob: str, one: str) -> str:
    return one.join(re.escape(part) for part in glob.split("*"))


def parse_host_pattern(raw: str) -> HostPattern:
    """Validate and compile a host or host pattern; ``ValueError`` says what is wrong."""
    text = normalize_host(raw)
    if not text:
        raise ValueError("host is empty")
    if len(text) > 253:
        raise ValueError("host is longer than 253 characters")
    if ip_of(text) is not None:
        return HostPattern(text, (text,), None, RANK_EXACT, len(text))
    if not text.isascii():
        raise ValueError("host must be ASCII (use the punycode form of IDNs)")
    labels = tuple(text.split("."))
    for label in labels:
        if not label:
            raise ValueError("host has an empty label")
        if len(label) > 63:
            raise ValueError(f"host label {label!r} is longer than 63 characters")
        if _LABEL_CHARS.fullmatch(label) is None:
            raise ValueError(f"host label {label!r} has characters other than a-z 0-9 - _ *")
        if "**" in label and label != "**":
            raise ValueError(f"'**' must be a whole label, not part of {label!r}")
    wild = [label for label in labels if "*" in label]
    if not wild:
        return HostPattern(text, labels, None, RANK_EXACT, len(text))
    # A wildcard in the last two labels would cover whole public suffixes (*.com).
    if len(labels) < 3 or any("*" in label for label in labels[-2:]):
        raise ValueError(
            "host pattern too broad: its last two labels must be literal (e.g. '*.example.com')"
        )
    parts = [
        r"[^.]+(?:\.[^.]+)*" if label == "**"
        else r"[^.]+" if label == "*"
        else _glob_regex(label, r"[^.]*")
        for label in labels
    ]
    rank = RANK_DOUBLE if "**" in labels else RANK_STAR
    return HostPattern(
        text, labels, re.compile(r"\.".join(parts)), rank, len(text) - text.count("*")
    )


def parse_path_pattern(raw: str) -> PathPattern:
    """Validate and compile a path glob; ``ValueError`` says what is wrong."""
    if not raw.startswith("/"):
        raise ValueError("path must start with '/'")
    if _PATH_FORBIDDEN.search(raw):
        raise ValueError(
            "path must not contain whitespace, control characters, '?', '#', '%' or '\\'"
        )
    segments = raw[1:].split("/")
    subtree = segments[-1] == "**"
    if subtree:
        segments = segments[:-1]
    for i, seg in enumerate(segments):
        if seg in (".", ".."):
            raise ValueError("path must not contain '.' or '..' segments")
        if "**" in seg:
            raise ValueError("'**' is only allowed as the last segment ('X/**')")
        if not seg and i != len(segments) - 1:
            raise ValueError("path must not contain empty segments ('//')")
    if subtree and segments and segments[-1] == "":
        raise ValueError("path must not contain empty segments ('//')")
    body = "/" + "/".join(segments) if segments else ""
    literal_len = len(body) - body.count("*")
    if not subtree and "*" not in raw:
        return PathPattern(raw, tuple(segments), False, None, RANK_EXACT, literal_len)
    regex = "/" + "/".join(_glob_regex(seg, r"[^/]*") for seg in segments) if segments else ""
    if subtree:
        regex += r"(?:/.*)?"
    rank = RANK_DOUBLE if subtree else RANK_STAR
    return PathPattern(
        raw, tuple(segments), subtree, re.compile(regex, re.DOTALL), rank, literal_len
    )


def specificity(host: HostPattern, path: PathPattern | None) -> Specificity:
    if path is None:
        return (0, host.rank, host.literal_len, 0, 0)
    return (1, host.rank, host.literal_len, path.literal_len, path.rank)


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def canonical_path(path: str) -> str | None:
    """The path as path globs see it, or ``None`` when it must match no path glob.

    Percent-encoded unreserved characters are decoded (``/%61dmin`` is ``/admin`` to
    every server). Paths that servers may rewrite differently from us (dot segments,
    ``//``, backslashes, encoded ``/`` or ``\\``) get ``None``: they then only match
    host-wide entries, so a more specific rule can never be dodged into a broader one
    that names the same path prefix.
    """
    if not path.startswith("/"):
        return None
    if "%" in path:
        decoded = _decode_unreserved(path)
        if decoded is None:
            return None
        path = decoded
    if "\\" in path or "//" in path:
        return None
    if "/." in path:
        for seg in path.split("/"):
            if seg in (".", ".."):
                return None
    return path


def _decode_unreserved(path: str) -> str | None:
    out: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        hexpart = path[i + 1 : i + 3]
        try:
            ch = chr(int(hexpart, 16)) if len(hexpart) == 2 else ""
        except ValueError:
            ch = ""
        if not ch or hexpart[0] in "+-" or hexpart[1] in "+-":
            return None  # malformed escape
        if ch in "/\\":
            return None  # an encoded separator means something else to each server
        out.append(ch if ch in _UNRESERVED else "%" + hexpart.upper())
        i += 3
    return "".join(out)


# ---- overlap: can two patterns match a common host / path? ----

_ANY = "*"
_STAR = None  # zero or more of any atom


def _atoms_intersect(a: str, b: str, sep: str) -> bool:
    """Can the single-label (or single-segment) globs ``a`` and ``b`` match one string?"""
    if "*" not in a or "*" not in b:
        lit, glob = (a, b) if "*" not in a else (b, a)
        if "*" not in glob:
            return lit == glob
        if glob == "*" and sep == ".":
            return lit != ""
        return re.fullmatch(_glob_regex(glob, f"[^{re.escape(sep)}]*"), lit) is not None
    # Both have a star: a witness exists iff their literal prefixes and suffixes agree
    # (fill the middle with both patterns' inner literals).
    pa, pb = a.split("*", 1)[0], b.split("*", 1)[0]
    sa, sb = a.rsplit("*", 1)[1], b.rsplit("*", 1)[1]
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def _seq_intersect(p: tuple[str | None, ...], q: tuple[str | None, ...], sep: str) -> bool:
    @functools.cache
    def go(i: int, j: int) -> bool:
        if i == len(p):
            return all(x is _STAR for x in q[j:])
        if j == len(q):
            return all(x is _STAR for x in p[i:])
        a, b = p[i], q[j]
        if a is _STAR or b is _STAR:
            # A star either ends here or swallows the other side's next element.
            if a is _STAR and go(i + 1, j):
                return True
            if b is _STAR and go(i, j + 1):
                return True
            return (a is _STAR and go(i, j + 1)) or (b is _STAR and go(i + 1, j))
        return _atoms_intersect(a, b, sep) and go(i + 1, j + 1)

    return go(0, 0)


def _host_seq(h: HostPattern) -> tuple[str | None, ...]:
    out: list[str | None] = []
    for label in h.labels:
        out.extend((_ANY, _STAR) if label == "**" else (label,))
    return tuple(out)


def hosts_overlap(a: HostPattern, b: HostPattern) -> bool:
    if a.is_literal and b.is_literal:
        return a.text == b.text
    if a.is_literal:
        return b.matches(a.text)
    if b.is_literal:
        return a.matches(b.text)
    return _seq_intersect(_host_seq(a), _host_seq(b), ".")


def paths_overlap(a: PathPattern | None, b: PathPattern | None) -> bool:
    if a is None or b is None:
        return True
    if a.regex is None and b.regex is None:
        return a.text == b.text
    if a.regex is None:
        return b.matches(a.text)
    if b.regex is None:
        return a.matches(b.text)
    sa: tuple[str | None, ...] = (*a.segments, *((_STAR,) if a.subtree else ()))
    sb: tuple[str | None, ...] = (*b.segments, *((_STAR,) if b.subtree else ()))
    return _seq_intersect(sa, sb, "/")


def host_covers(endpoint: HostPattern, override: HostPattern) -> bool:
    """Does every host of ``override`` fall under ``endpoint``? (Only narrowing is allowed.)

    Deliberately one-directional: an override may narrow a pattern endpoint to a literal
    host, never widen a literal endpoint to a pattern.
    """
    if endpoint.text == override.text:
        return True
    return override.is_literal and endpoint.matches(override.text)


def path_covers(endpoint: PathPattern | None, override: PathPattern | None) -> bool:
    """Does every path of ``override`` fall under ``endpoint``?"""
    if endpoint is None:
        return True
    if override is None:
        return False
    if endpoint.text == override.text:
        return True
    if override.regex is None:
        return endpoint.matches(override.text)
    if endpoint.subtree and "*" not in "/".join(endpoint.segments):
        prefix = endpoint.segments
        return override.segments[: len(prefix)] == prefix and (
            len(override.segments) > len(prefix) or override.subtree
        )
    return False
