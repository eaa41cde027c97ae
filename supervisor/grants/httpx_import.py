"""Import httpx without its command-line client.

httpx's package ``__init__`` imports ``httpx._main``, its command-line client, which imports
click, rich and pygments whenever they are installed (they are: the supervisor's own CLI
uses click and rich). In the proxy that is ~5.7 MiB of resident memory and ~25 ms of the
first grant for code that never runs there. During httpx's first import ``httpx._main``
is reported as not importable, so httpx takes its own fallback for an install without the
``[cli]`` extra (a ``main`` that says the CLI's dependencies are missing); the library is
otherwise unchanged. If httpx stops importing ``_main``, nothing changes; if it ever needs
it, importing httpx fails at the first grant (a named GrantError), never silently.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

CLI_MODULE = "httpx._main"

_lock = threading.Lock()


class _NoCli(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == CLI_MODULE:
            raise ModuleNotFoundError("httpx's command-line client is not used here",
                                      name=fullname)
        return None  # every other module: the next finders decide


def import_httpx() -> ModuleType:
    """``import httpx`` with ``httpx._main`` refused during the first import."""
    with _lock:
        module = sys.modules.get("httpx")
        if module is not None:
            return module
        finder = _NoCli()
        sys.meta_path.insert(0, finder)
        try:
            import httpx
        finally:
            sys.meta_path.remove(finder)
        return httpx
