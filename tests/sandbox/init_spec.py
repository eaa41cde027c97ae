"""Run an openshell-init binary as an ordinary process, fed a launch spec (no root needed).

fd 3 holds the spec (a memfd, as the child hands it over) and fd 4 is the status pipe;
what the init wrote there comes back parsed, one JSON object a line.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from supervisor.sandbox.protocol import INIT_SPEC_FD, INIT_STATUS_FD


def run_with_spec(
    argv: Sequence[str],
    spec: bytes,
    *,
    timeout: float,
    executable: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.CompletedProcess[bytes], list[dict[str, object]]]:
    """The finished process (stdout and stderr captured) and the status messages."""
    launch = os.memfd_create("spec", 0)
    os.write(launch, spec)
    status_r, status_w = os.pipe()

    def fds() -> None:
        os.dup2(launch, INIT_SPEC_FD)
        os.dup2(status_w, INIT_STATUS_FD)

    try:
        result = subprocess.run(
            list(argv), executable=executable, env=env or {}, capture_output=True,
            timeout=timeout, preexec_fn=fds, close_fds=False,
            cwd=str(cwd) if cwd is not None else None, stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(launch)
        os.close(status_w)
    with os.fdopen(status_r, "rb") as f:
        lines = [json.loads(line) for line in f.read().splitlines()]
    return result, lines
