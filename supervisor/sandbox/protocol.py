"""What the sandbox init and the supervisor tell each other, over two pipes.

go pipe (supervisor -> child): one JSON object ``{"env": {...}}`` then EOF; EOF alone = abort.
status pipe (child, then openshell-init -> supervisor): JSON lines, each one of
  ``{"kind": "setup", "step": str, "reason": str}``   set-up failed (exit 125)
  ``{"kind": "exec", "code": 126|127, "reason": str}`` the command could not be executed
  ``{"kind": "exec", "code": 126|127, "errno": int}``  the same, from openshell-init
  ``{"kind": "exit", "status": int}``                  raw wait status of the agent

launch spec (child -> openshell-init, a memfd on fd 3): ``"<n> <m>\n"`` then n + m
NUL-terminated strings: the path to execute and argv (n = 1 + len(argv)), then the
agent's environment (m entries). The status pipe is fd 4.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from supervisor.record import field, record

EXIT_SETUP = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

# openshell-init's whole interface: its argv, and the two fds it reads and writes.
INIT_ARGV = ("openshell-init",)
INIT_SPEC_FD = 3
INIT_STATUS_FD = 4

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


@record(frozen=False)
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


def encode_launch_spec(path: str, argv: tuple[str, ...], env: dict[str, str]) -> bytes:
    """The launch spec openshell-init reads (see the module docstring)."""
    strings = [path, *argv, *(f"{k}={v}" for k, v in env.items())]
    encoded = [s.encode("utf-8", "surrogateescape") for s in strings]
    if not argv or any(b"\0" in s for s in encoded) or any("=" in k for k in env):
        raise ValueError("argv must be non-empty; no NUL in any string, no '=' in names")
    head = f"{1 + len(argv)} {len(env)}\n".encode()
    return head + b"".join(s + b"\0" for s in encoded)


def _exec_reason(msg: dict[str, object], code: int) -> str:
    if "reason" in msg:
        return str(msg["reason"])
    if code == EXIT_NOT_FOUND:
        return "command not found"
    err = msg.get("errno")
    return f"cannot execute: {os.strerror(err) if isinstance(err, int) else 'unknown error'}"


def parse_report(data: bytes) -> InitReport:
    report = InitReport()
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
            kind = msg["kind"]
            if kind == "setup":
                report.setup_step, report.setup_reason = str(msg["step"]), str(msg["reason"])
            elif kind == "exec":
                report.exec_code = int(msg["code"])
                report.exec_reason = _exec_reason(msg, report.exec_code)
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
