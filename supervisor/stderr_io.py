"""Writing whole chunks to the supervisor's stderr (or the audit log) from several threads.

The audit writer and the agent's stderr relay share fd 2 when ``--audit-log -``: one lock
keeps their lines whole. ``write_all`` waits out a non-blocking descriptor (EAGAIN) instead
of losing the rest of a line.
"""

from __future__ import annotations

import os
import select
import threading

STDERR_FD = 2
STDERR_LOCK = threading.Lock()


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; raises OSError (not EAGAIN) when the sink fails."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except InterruptedError:
            continue
