"""PyYAML, imported without compiling the regular expressions it does not use yet.

``import yaml`` compiles a dozen patterns in class bodies. One of them, the pure-Python
reader's ``NON_PRINTABLE`` (a class over all of Unicode), costs ~47M instructions, about
10 ms and an eighth of `run -- /bin/true`: CPython's ``re`` fills a 64K-entry table for
it in Python, then throws the table away. The profile loader parses with libyaml
(``CSafeLoader``), which checks printability in C and never touches that pattern. So the
patterns PyYAML's own modules compile while it is imported are made lazy: each is compiled
by ``re.compile``, with the same source and flags, the first time it is used. What PyYAML
parses, accepts and refuses is unchanged; only when the cost is paid moves.

Import ``yaml`` from here (``from supervisor.profiles.yaml_import import yaml``). When
something imported PyYAML before, it is used as it is.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

_real_compile = re.compile
_lock = threading.Lock()  # two threads importing at once must not save each other's patch


class LazyPattern:
    """Stands for ``re.compile(pattern, flags)``; compiles on the first attribute used."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: str | bytes, flags: int) -> None:
        self._pattern = pattern
        self._flags = flags
        self._compiled: re.Pattern[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        compiled = self._compiled
        if compiled is None:  # a race compiles twice: both results are equal
            compiled = self._compiled = _real_compile(self._pattern, self._flags)
        return getattr(compiled, name)


def _compile(pattern: Any, flags: int = 0) -> Any:
    """``re.compile`` while PyYAML is imported: lazy for PyYAML's own modules only."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if isinstance(caller, str) and caller.startswith("yaml.") and isinstance(pattern, str):
        return LazyPattern(pattern, int(flags))
    return _real_compile(pattern, flags)


with _lock:
    if "yaml" not in sys.modules:
        re.compile = _compile
        try:
            import yaml as yaml
        finally:
            re.compile = _real_compile
    else:  # imported before (by a test, or a tool embedding the supervisor): keep it
        import yaml as yaml
