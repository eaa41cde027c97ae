"""A tiny line protocol between the harness and its runner processes.

A runner prints ``READY {json}`` once it serves, answers each ``stats`` line on stdin with
``STATS {json}``, and exits when stdin closes. Its stderr goes to a log file.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from integration.bench.procs import stop_process_group


def announce(kind: str, payload: dict[str, Any]) -> None:
    """Runner side: one protocol line on stdout."""
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def parse_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``KIND {json}`` -> (KIND, payload); None for any other line."""
    kind, sep, rest = line.strip().partition(" ")
    if not sep or not kind.isupper() or not rest.startswith("{"):
        return None
    payload = json.loads(rest)
    return (kind, payload) if isinstance(payload, dict) else None


class Runner:
    """Harness side: start a runner, wait for READY, ask for stats, stop it."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Runner:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                cwd=self.cwd, start_new_session=True,
                # Unbuffered: a line held in a Python buffer would be invisible to select().
                bufsize=0,
            )  # fmt: skip
        try:
            self.ready = self._expect("READY", timeout)
        except Exception:
            self.stop()
            raise
        return self

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        return self._expect("STATS", timeout)

    def _expect(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {kind} within {timeout:.0f} s")
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if not readable:
                continue
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(5)
                raise RuntimeError(
                    f"{self.name} exited {self.proc.returncode}: {self._last_log_line()}"
                )
            parsed = parse_line(line.decode(errors="replace"))
            if parsed is not None and parsed[0] == kind:
                return parsed[1]

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1][:300] if lines else f"(empty log {self.log_path})"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None and proc.stdin is not None:
            try:  # closing stdin is the polite stop
                proc.stdin.close()
                proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                stop_process_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_commands(stats: Any) -> None:
    """Runner side: answer ``stats`` lines until stdin closes. ``stats()`` -> dict."""
    for line in sys.stdin:
        if line.strip() == "stats":
            announce("STATS", stats())
