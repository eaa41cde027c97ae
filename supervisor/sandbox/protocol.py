"""What the sandbox init and the supervisor tell each other, over two pipes.

go pipe (supervisor -> init): one JSON object ``{"env": {...}}`` then EOF; EOF alone = abort.
status pipe (init -> supervisor): JSON lines, each one of
  ``{"kind": "setup", "step": str, "reason": str}``   the init could not set up (exit 125)
  ``{"kind": "exec", "code": 126|127, "reason": str}`` the command could not be executed
  ``{"kind": "exit", "status": int}``                  raw wait status of the agent
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field

EXIT_SETUP = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

# Signals the supervisor forwards to the init and the init forwards to the agent
# (ARCHITECTURE.md 3.4).
FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


@dataclass
class InitReport:
    setup_step: str | None = None
    setup_reason: str | None = None
    exec_code: int | None = None
    exec_reason: str | None = None
    agent_status: int | None = None
    garbage: list[str] = field(default_factory=list)


def write_message(fd: int, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone: nothing left to tell
        os.write(fd, json.dumps(message).encode() + b"\n")


def parse_report(data: bytes) -> InitReport:
    report = InitReport()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
            kind = msg["kind"]
            if kind == "setup":
                report.setup_step, report.setup_reason = str(msg["step"]), str(msg["reason"])
            elif kind == "exec":
                report.exec_code, report.exec_reason = int(msg["code"]), str(msg["reason"])
            elif kind == "exit":
                report.agent_status = int(msg["status"])
            else:
                report.garbage.append(line[:200])
        except (ValueError, KeyError, TypeError):
            report.garbage.append(line[:200])
    return report


def exit_code_of(status: int) -> int:
    """Shell convention: the exit code, or 128+N for death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
