"""The proxy's event loop: uvloop when it is installed, asyncio's own loop otherwise.

On the shared 2-core bench machine uvloop cut the proxy's CPU per request by 10-20 % at
32 keep-alive connections (noisy: other jobs shared the machine). The proxy does not depend
on it: its TLS runs over memory BIOs, not the loop's SSL transport, and it uses only the
portable transport API; its tests run on both loops.
"""

from __future__ import annotations

import asyncio
import importlib


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        uvloop = importlib.import_module("uvloop")  # optional: not a dependency
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: for a start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
