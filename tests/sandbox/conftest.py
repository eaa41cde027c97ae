"""Fixtures for the sandbox tests: a live Workload-API-like socket, agent-writable dirs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_RUN = Path(__file__).with_name("fake_run.py")
PY = sys.executable

MINIMAL_PROFILE = """\
id: sandbox-test
display_name: Sandbox test
description: minimal profile for the sandbox tests
category: test
credentials: []
endpoints:
  - host: example.com
    port: 443
binaries: []
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("SPIFFE_", "OPENSHELL_"))}
    env.update(extra)
    return env


@dataclass
class SocketServer:
    path: str
    directory: str
    connections: list[int] = field(default_factory=list)


@pytest.fixture
def workload_socket() -> Iterator[SocketServer]:
    """A unix socket server listening in a dedicated directory under /run (root only)."""
    directory = tempfile.mkdtemp(prefix="openshell-test-", dir="/run")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)  # reachable by anyone who can see it: only hiding protects it
    server.listen(16)
    server.settimeout(0.1)
    info = SocketServer(path=path, directory=directory)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            info.connections.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        stop.set()
        thread.join()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def agent_dir() -> Iterator[Path]:
    """A directory the unprivileged agent can write to (pytest's tmp_path is 0700 root)."""
    directory = Path(tempfile.mkdtemp(prefix="openshell-agent-", dir="/tmp"))
    directory.chmod(0o777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(MINIMAL_PROFILE)
    return path


def needs_real_cli() -> None:
    for module in ("supervisor.profiles.loader", "supervisor.services"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not available yet")


def run_cli(profile: Path, *command: str, options: tuple[str, ...] = (),
            timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess[str]:
    needs_real_cli()
    return subprocess.run(
        [PY, "-m", "supervisor", "run", "--profile", str(profile), *options, "--", *command],
        capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd="/",
        **kwargs,  # type: ignore[arg-type]
    )


def run_fake(*command: str, options: tuple[str, ...] = (), env: dict[str, str] | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, str(FAKE_RUN), *options, "--", *command],
        capture_output=True, text=True, timeout=timeout, env=env or clean_env(), cwd=str(REPO),
    )


def start_fake(*command: str, options: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """``run_fake`` left running (stderr piped, as text): for tests that signal it meanwhile."""
    return subprocess.Popen(
        [PY, str(FAKE_RUN), *options, "--", *command],
        env=clean_env(), cwd=str(REPO), stderr=subprocess.PIPE, text=True,
    )
