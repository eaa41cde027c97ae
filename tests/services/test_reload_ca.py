"""A reload that adds an inspected host outside the per-run CA's name constraints: a clear
log line at reload, and the tunnel to that host is refused (logged) until restart."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from supervisor.profiles.loader import load_profiles
from supervisor.services import Services
from supervisor.settings import RunSettings
from tests.proxy.harness import Env, recv_response

PROFILE = """\
id: p
endpoints:
  - {{ host: {host}, port: 443, protocol: rest, access: read-only }}
"""


def _profiles(tmp_path: Path, host: str) -> object:
    path = tmp_path / f"{host}.yaml"
    path.write_text(PROFILE.format(host=host))
    return load_profiles([str(path)])


def test_ca_covers_inspected_hosts_and_reload_outside_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _profiles(tmp_path, "api.one.test")
    svc = Services(RunSettings(profiles=(), command=("true",)), first)  # type: ignore[arg-type]
    svc._prepare_tls(first)  # type: ignore[arg-type]
    try:
        ca = svc._ca_material
        assert ca is not None and ca.covers("api.one.test") and not ca.covers("api.two.test")
        with caplog.at_level(logging.WARNING):
            svc.reload(_profiles(tmp_path, "api.two.test"))  # type: ignore[arg-type]
        assert any("api.two.test needs a restart" in r.getMessage() for r in caplog.records)
    finally:
        if svc._bundle_dir:
            shutil.rmtree(svc._bundle_dir, ignore_errors=True)


def test_tunnel_to_a_host_outside_the_ca_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from supervisor.proxy.interception import SandboxCA

    ca = SandboxCA.generate(["api.one.test"])
    env = Env(None, None, str(tmp_path / "audit.jsonl"), interceptor=ca)  # type: ignore[arg-type]
    try:
        env.policy = _profiles(tmp_path, "api.two.test").table  # type: ignore[attr-defined]
        s = env.connect()
        with caplog.at_level(logging.WARNING, logger="supervisor.proxy"):
            s.sendall(b"CONNECT api.two.test:443 HTTP/1.1\r\nHost: api.two.test:443\r\n\r\n")
            assert recv_response(s, head_only=True)[0] == 200
            s.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record: interception starts
            s.settimeout(5)
            assert s.recv(100) == b""  # closed: no certificate for that host
        s.close()
        assert any("no interception certificate" in r.getMessage()
                   and "api.two.test" in r.getMessage() for r in caplog.records)
    finally:
        env.close()
