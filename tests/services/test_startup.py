"""The proxy starts beside the agent; if it cannot, the agent is killed and `run` fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the agent (uid 65534) can use; pytest's tmp_path is root-only."""
    path = Path(tempfile.mkdtemp(prefix="openshell-startup-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "run", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )


def test_proxy_start_failure_kills_the_agent_and_exits_125(shared_dir: Path) -> None:
    bad = shared_dir / "bad-ca.pem"
    bad.write_text("not a certificate\n")
    marker = shared_dir / "marker"
    control = _run("--", "/bin/sh", "-c", f"touch {marker}")  # the agent can write here
    assert control.returncode == 0 and marker.exists(), control.stderr
    marker.unlink()
    started = time.monotonic()
    proc = _run("--ca-bundle", str(bad), "--", "/bin/sh", "-c", f"sleep 3; touch {marker}")
    elapsed = time.monotonic() - started
    assert proc.returncode == 125, proc.stderr
    assert "--ca-bundle" in proc.stderr
    assert elapsed < 3, "the agent was not killed: run waited for it"
    time.sleep(3.5)  # had the agent survived, it would write the marker by now
    assert not marker.exists()


def test_short_agent_does_not_wait_for_the_proxy() -> None:
    """`run -- /bin/true` returns the agent's status even while the proxy is still starting."""
    proc = _run("--", "/bin/sh", "-c", "exit 7")
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr == ""


def test_agent_reaches_the_proxy_started_beside_it(shared_dir: Path) -> None:
    """The agent's first connection, made at once, is answered (queued in the backlog)."""
    script = shared_dir / "probe.py"
    script.write_text(
        "import socket\n"
        "s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"
        "s.sendall(b'GET http://undeclared.invalid/ HTTP/1.1\\r\\nHost: undeclared.invalid\\r\\n\\r\\n')\n"
        "print(s.recv(100).split(b'\\r\\n')[0].decode())\n"
    )
    script.chmod(0o644)
    proc = _run("--", sys.executable, str(script))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "HTTP/1.1 403 Forbidden"
