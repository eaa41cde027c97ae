"""The supervisor's log configuration, applied when logging is first needed.

Importing ``logging`` (with traceback, textwrap, string, ...) costs ~22M instructions, about
5 ms of `run -- /bin/true`, and a run normally logs nothing before its agent starts. So `run`
only records the level (``configure``); the loggers of the modules on its start-up path come
from ``get``, which imports and configures logging the first time one of them is used;
``ready`` does the same for code that uses ``logging`` directly: the proxy thread calls it
before it imports its stack (asyncio, the grant clients), which log through ``logging``.
The configuration is the one `run` always had (``basicConfig`` on stderr, one format).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from logging import Logger

FORMAT = "openshell-supervisor: %(levelname)s: %(message)s"

_level: str | None = None  # set by configure(); None: logging's defaults
_lock = threading.Lock()


def configure(level: str, *, now: bool = False) -> None:
    """Log at ``level`` (debug, info, warning, error) on stderr: at once with ``now`` or when
    logging is already imported, else from the first use of a logger."""
    global _level
    with _lock:
        _level = level
    if now or "logging" in sys.modules:
        ready()


def ready() -> ModuleType:
    """``logging``, configured (basicConfig does nothing once the root logger has a handler)."""
    import logging

    with _lock:
        level = _level
    if level is not None:
        logging.basicConfig(
            level=getattr(logging, level.upper()), format=FORMAT, stream=sys.stderr
        )
    return logging


def shutdown() -> None:
    """Flush the handlers, if logging was ever imported. `run` may exit while the proxy
    thread is still importing logging (a module without ``shutdown`` yet has no handlers)
    or is inside basicConfig (a handler registered before its stream is set: flushing it
    raises). Nothing may stop the exit: the only handler writes to stderr, which the
    caller flushes itself."""
    flush = getattr(sys.modules.get("logging"), "shutdown", None)
    if flush is not None:
        with contextlib.suppress(Exception):
            flush()


class _LazyLogger:
    """Stands for ``logging.getLogger(name)``; imports and configures logging on first use.
    Attributes are the real logger's (bound methods), so records name the real caller."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Logger | None = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            logger = self._logger = ready().getLogger(self._name)
        return getattr(logger, attr)


def get(name: str) -> Logger:
    """A logger for ``name`` that costs nothing until it is used."""
    return cast("Logger", _LazyLogger(name))
