"""Policy binary patterns (as OpenShell's): ``*`` matches within one path component,
``**`` any number of components (``/usr/lib/node_modules/@openai/**``, ``/**``).
Everything else is literal. Pure."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def is_glob(pattern: str) -> bool:
    return "*" in pattern


def matches(pattern: str, path: str) -> bool:
    if not is_glob(pattern):
        return pattern == path
    return compile_pattern(pattern).fullmatch(path) is not None


def literal_prefix(pattern: str) -> str:
    """The directory part before the first glob component (what can be symlink-resolved)."""
    if not is_glob(pattern):
        return pattern
    head = pattern[: pattern.index("*")]
    return head[: head.rindex("/")] if "/" in head else ""


def with_resolved(patterns: Iterable[str]) -> tuple[str, ...]:
    """The patterns plus their symlink-resolved forms (the kernel names a process's
    executable by its real path: ``/usr/bin/python3`` runs as ``/usr/bin/python3.11``).
    Only the literal part before a glob is resolved. I/O: reads symlinks."""
    out: list[str] = []
    for pattern in patterns:
        out.append(pattern)
        prefix = literal_prefix(pattern)
        if not prefix:
            continue
        out.append(os.path.realpath(prefix) + pattern[len(prefix):])
    return tuple(dict.fromkeys(out))  # first occurrence kept: a resolved twin, a repeat
