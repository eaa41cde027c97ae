"""The agent's own stderr when the audit log is the supervisor's stderr (``--audit-log -``).

Sharing fd 2 would let the agent forge audit lines (print OCSF JSON of its own) or silence
them (set O_NONBLOCK on the shared file description and fill the pipe, so the supervisor's
writes fail). Instead the agent writes into a pipe; a supervisor thread copies it to the
real stderr line by line, each line prefixed with ``agent: ``, so no agent line can look
like an audit event. What is relayed is always valid UTF-8 (a strict reader of the stream
must not choke on the agent's bytes and lose the audit lines with them), and control
characters are shown escaped (``\\x0d``): a carriage return, form feed, U+2028 or another
line break of Python's text mode or ``str.splitlines`` would otherwise start a line of the
agent's own for such a reader, and ESC sequences could erase the prefix on a terminal
showing the log (the agent's stderr is a pipe here, so its tools print no colours anyway).
When the operator's stderr is a terminal the agent keeps it (there is no audit consumer to
fool, and the agent keeps its terminal behaviour).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading

from supervisor.stderr_io import STDERR_FD, STDERR_LOCK, write_all

PREFIX = b"agent: "
MAX_LINE = 4096  # a longer line is cut into prefixed pieces of this size


@functools.cache
def _control() -> re.Pattern[str]:
    """C0 controls but tab (newline never reaches here), DEL, C1 controls, U+2028/U+2029.
    Compiled by the relay thread on the agent's first line (~2.4M instructions that were
    spent at import, before the agent's release)."""
    return re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(line: bytes) -> bytes:
    """``line`` as valid UTF-8 with no control character: invalid bytes and controls are
    written ``\\xNN`` (U+2028/9 ``\\uNNNN``). A multi-byte character cut at MAX_LINE comes
    out as escaped bytes."""
    text = line.decode("utf-8", "backslashreplace")
    return _control().sub(_shown, text).encode("utf-8")


def frame(pending: bytes, chunk: bytes, final: bool = False) -> tuple[bytes, bytes]:
    """Prefix every complete line of ``pending + chunk`` (control characters escaped);
    return (output, the incomplete rest). Lines longer than MAX_LINE are cut into prefixed
    pieces; with ``final`` the rest is emitted too."""
    data = pending + chunk
    out: list[bytes] = []
    start = 0
    while True:
        end = data.find(b"\n", start, start + MAX_LINE)
        if end >= 0:
            out.append(PREFIX + escape(data[start:end]) + b"\n")
            start = end + 1
        elif len(data) - start >= MAX_LINE:
            out.append(PREFIX + escape(data[start : start + MAX_LINE]) + b"\n")
            start += MAX_LINE
        else:
            break
    rest = data[start:]
    if final and rest:
        out.append(PREFIX + escape(rest) + b"\n")
        rest = b""
    return b"".join(out), rest


class StderrRelay:
    """Create before forking the sandbox's child (``agent_fd`` becomes the agent's fd 2),
    ``start`` right after (closes the supervisor's copy), ``finish`` once the agent exited."""

    def __init__(self) -> None:
        self._read_fd, self.agent_fd = os.pipe()  # both close-on-exec
        self._thread = threading.Thread(target=self._run, name="agent-stderr", daemon=True)

    def start(self) -> None:
        os.close(self.agent_fd)  # the child holds the only write end now: EOF when it ends
        self._thread.start()

    def finish(self, timeout: float = 1.0) -> None:
        """Wait for what the agent wrote last (EOF comes when the namespace is gone)."""
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def close_unstarted(self) -> None:
        """Release the pipe when the child was never forked (else it is the thread's)."""
        if self._thread.ident is not None:
            return
        for fd in (self._read_fd, self.agent_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(self._read_fd, 65536)
                out, pending = frame(pending, chunk, final=not chunk)
                if out:
                    with STDERR_LOCK:
                        write_all(STDERR_FD, out)
                if not chunk:
                    return
        except OSError:
            return  # our stderr is gone: nothing to relay to
        finally:
            with contextlib.suppress(OSError):
                os.close(self._read_fd)


def wanted() -> bool:
    """A relay is needed whenever the supervisor's stderr is not a terminal.

    Not only for ``--audit-log -``: a shared pipe or file would let the agent print lines
    that read as the supervisor's own (a forged "reload refused"), or set O_NONBLOCK on the
    shared open file and fill the pipe so the supervisor's lines are lost. A terminal is
    the operator's interactive session and is shared as it is.
    """
    return not os.isatty(STDERR_FD)
