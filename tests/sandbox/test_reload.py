"""Profile reloads end to end (root): the real supervisor, proxy, token provider and the
development Workload API, token issuer and protected service on loopback.

One run, one agent that makes a request each time the test lets it (a marker file), and
between requests the test rewrites the profile:

0. the original set                        -> 200, one token issued
1. an invalid set (file change only)       -> refused, diagnostics on stderr; still 200
                                              with the cached token (old set kept)
2. the endpoint removed (SIGHUP)           -> 403 policy_denied
3. the original set again (file change)    -> 200 with a NEW token: the removed binding's
                                              cached token was dropped at step 2
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import PY, clean_env, needs_real_cli

pytestmark = pytest.mark.privileged

SPIFFE_ID = "spiffe://reload.openshell.test/ns/default/sa/agent"

FULL = """\
id: reload-test
display_name: Reload test
description: one credentialed loopback endpoint
category: test
credentials:
  - name: access_token
    description: token grant for the protected service
    token_grant:
      token_endpoint: {token_url}
      audience: alpha
      jwt_svid_audience: {issuer_url}
      scopes: [alpha]
      cache_ttl_seconds: 120
endpoints:
  - host: 127.0.0.2
    port: {port}
    allowed_ips: [127.0.0.0/8]
binaries: []
"""
INVALID = FULL + "unknown_key: true\n"
NO_ENDPOINT = """\
id: reload-test
display_name: Reload test
description: the endpoint was removed
category: test
credentials: []
endpoints: []
binaries: []
"""

AGENT = """\
import json, os, pathlib, sys, time, urllib.error, urllib.request
url, directory, steps = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
for step in range(steps):
    go = directory / f"go-{step}"
    while not go.exists():
        time.sleep(0.02)
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            result = {"status": resp.status}
    except urllib.error.HTTPError as err:
        result = {"status": err.code, "error": json.loads(err.read()).get("error")}
    tmp = directory / f".result-{step}"
    tmp.write_text(json.dumps(result))
    tmp.rename(directory / f"result-{step}")
"""


@dataclass
class DevServers:
    issuer: Any
    service: Any
    socket_path: str


@pytest.fixture(scope="module")
def dev_servers() -> Iterator[DevServers]:
    needs_real_cli()
    from supervisor.devenv.services import ProtectedService
    from supervisor.devenv.token_issuer import TokenIssuer
    from supervisor.devenv.workload_api import WorkloadAPIServer

    directory = tempfile.mkdtemp(prefix="openshell-reload-", dir="/run")
    os.chmod(directory, 0o755)
    socket_path = os.path.join(directory, "agent.sock")
    started: list[Any] = []
    try:
        workload = WorkloadAPIServer(socket_path, spiffe_id=SPIFFE_ID).start()
        started.append(workload)
        issuer = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience="pending",
                             trust_domain=workload.trust_domain).start()
        started.append(issuer)
        issuer.expected_svid_audience = issuer.base_url
        service = ProtectedService("alpha", issuer.jwks_url, host="127.0.0.2").start()
        started.append(service)
        yield DevServers(issuer=issuer, service=service, socket_path=socket_path)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class StderrLines:
    """Collects the supervisor's stderr on a thread; wait for a line containing a text."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, *needles: str, after: int = 0, timeout: float = 15) -> str:
        def found() -> str | None:
            return next((line for line in self.lines[after:]
                         if all(n in line for n in needles)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no stderr line with {needles}: {self.lines}")
            line = found()
            assert line is not None
            return line


def _write_atomically(path: Path, text: str) -> None:
    """Like a ConfigMap update: the new content appears at once, never half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _step(agent_dir: Path, step: int, timeout: float = 20) -> dict[str, Any]:
    (agent_dir / f"go-{step}").touch()
    result = agent_dir / f"result-{step}"
    deadline = time.monotonic() + timeout
    while not result.exists():
        assert time.monotonic() < deadline, f"the agent never answered step {step}"
        time.sleep(0.02)
    outcome: dict[str, Any] = json.loads(result.read_text())
    return outcome


def test_reload_swaps_valid_sets_and_refuses_invalid_ones(
    dev_servers: DevServers, agent_dir: Path, tmp_path: Path
) -> None:
    issuer = dev_servers.issuer
    values = {"token_url": issuer.token_url, "issuer_url": issuer.base_url,
              "port": dev_servers.service.port}
    profile = tmp_path / "profile.yaml"
    _write_atomically(profile, FULL.format(**values))
    issued_before = issuer.issued
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "--log-level", "info", "run", "--profile", str(profile),
         "--spiffe-socket", f"unix://{dev_servers.socket_path}",
         "--", PY, "-c", AGENT, dev_servers.service.url, str(agent_dir), "4"],
        stderr=subprocess.PIPE, text=True, env=clean_env(), cwd="/",
    )
    stderr = StderrLines(proc)
    try:
        assert _step(agent_dir, 0) == {"status": 200}
        assert issuer.issued == issued_before + 1

        mark = len(stderr.lines)
        _write_atomically(profile, INVALID.format(**values))
        refused = stderr.wait_for("refused", "profile file changed", after=mark)
        assert "unknown_key" in refused
        assert _step(agent_dir, 1) == {"status": 200}
        assert issuer.issued == issued_before + 1  # the old set and its cached token stay

        mark = len(stderr.lines)
        _write_atomically(profile, NO_ENDPOINT)
        proc.send_signal(signal.SIGHUP)
        stderr.wait_for("profiles reloaded (SIGHUP)", after=mark)
        assert _step(agent_dir, 2) == {"status": 403, "error": "policy_denied"}

        mark = len(stderr.lines)
        _write_atomically(profile, FULL.format(**values))
        stderr.wait_for("profiles reloaded (profile file changed)", after=mark)
        assert _step(agent_dir, 3) == {"status": 200}
        assert issuer.issued == issued_before + 2  # the dropped token was not reused

        assert proc.wait(timeout=10) == 0, stderr.lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any("Traceback" in line for line in stderr.lines), stderr.lines
