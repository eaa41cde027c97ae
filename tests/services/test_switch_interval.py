"""The GIL switch interval is short only while the proxy thread starts (services.py).

A short interval lets the main thread finish a short agent's run while the proxy thread
imports its stack; once the proxy serves, or fails to start, the interpreter's own interval
is back (a long-running proxy keeps the default).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import services as services_mod
from supervisor.profiles.loader import load_profiles
from supervisor.services import Services
from supervisor.settings import RunSettings, SetupError

PROFILE = """\
- id: tunnels-only
  display_name: Tunnels only
  description: nothing to intercept
  category: other
  credentials: []
  endpoints:
    - host: 127.0.0.1
      port: 9
      tls: skip
"""


@pytest.fixture
def listen_sock() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def default_interval() -> Iterator[float]:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.004)  # not the default: restoring must restore what was set
    yield 0.004
    sys.setswitchinterval(saved)


def _services(tmp_path: Path, sock: socket.socket, **overrides: object) -> Services:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE)
    settings = RunSettings(
        profiles=(str(path),), command=("true",), network="host",
        proxy_port=sock.getsockname()[1], audit_log=str(tmp_path / "audit.log"), **overrides,  # type: ignore[arg-type]
    )  # fmt: skip
    services = Services(settings, load_profiles([str(path)]))
    services.start(sock)
    return services


def test_short_while_starting_then_restored_once_serving(
    tmp_path: Path, listen_sock: socket.socket, default_interval: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _services(tmp_path, listen_sock)
    seen: list[float] = []
    gate = threading.Event()
    real_serve = services._serve

    def serve(sock: socket.socket) -> None:  # the proxy thread, as it begins
        seen.append(sys.getswitchinterval())
        gate.wait(10)
        real_serve(sock)

    monkeypatch.setattr(services, "_serve", serve)
    try:
        services.begin()
        assert sys.getswitchinterval() == services_mod._STARTING_SWITCH_INTERVAL
        gate.set()
        services.wait_ready(30)
        assert seen == [services_mod._STARTING_SWITCH_INTERVAL]
        assert sys.getswitchinterval() == default_interval
    finally:
        gate.set()
        services.stop()


def test_restored_when_the_proxy_cannot_start(
    tmp_path: Path, listen_sock: socket.socket, default_interval: float
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    services = _services(tmp_path, listen_sock, ca_bundle=str(bad))
    try:
        with pytest.raises(SetupError):
            services.wait_ready(30)
        assert sys.getswitchinterval() == default_interval
    finally:
        services.stop()


def test_restored_when_the_thread_cannot_be_started(
    tmp_path: Path, listen_sock: socket.socket, default_interval: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _services(tmp_path, listen_sock)

    def refuse() -> None:
        raise RuntimeError("can't start new thread")

    assert services._thread is not None
    monkeypatch.setattr(services._thread, "start", refuse)
    try:
        with pytest.raises(RuntimeError):
            services.begin()
        assert sys.getswitchinterval() == default_interval
    finally:
        services.stop()
