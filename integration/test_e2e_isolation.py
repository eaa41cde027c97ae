"""check-isolation inside ``run`` passes; on the host, as root with the socket variable set,
it fails (the negative control that proves the checks can fail). Plus the exit-status and
environment contract of ``run`` seen from a real agent."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from integration.e2e import DevEnv, host_environment

pytestmark = pytest.mark.privileged

MUST_CHECK = {"environment", "workload-api-socket", "capabilities", "no-new-privs",
              "not-root", "interfaces", "processes", "direct-loopback", "proxy",
              "seccomp", "masked-paths"}


def isolation_argv(devenv: DevEnv) -> list[str]:
    return [sys.executable, "-m", "supervisor", "check-isolation", "--json",
            "--spiffe-socket", str(devenv.socket_path),
            "--expect-blocked", f"127.0.0.2:{devenv.alpha.port}",
            "--expect-blocked", f"127.0.0.1:{devenv.issuer.base_url.rsplit(':', 1)[1]}"]


def test_check_isolation_passes_inside_run(devenv: DevEnv, run_agent: Any) -> None:
    run = run_agent(isolation_argv(devenv))
    assert run.returncode == 0, run.explain()
    report = json.loads(run.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["ok"] is True and not failed, failed
    assert MUST_CHECK <= {c["name"] for c in report["checks"]}


def test_check_isolation_fails_on_the_host(devenv: DevEnv) -> None:
    proc = subprocess.run(
        isolation_argv(devenv), capture_output=True, text=True, timeout=60, check=False,
        env=host_environment(SPIFFE_ENDPOINT_SOCKET=f"unix://{devenv.socket_path}"),
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert {"environment", "workload-api-socket", "not-root", "direct-loopback"} <= failed


def test_agent_environment_is_scrubbed(devenv: DevEnv, run_agent: Any) -> None:
    script = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
              "if k.upper().startswith(('SPIFFE', 'OPENSHELL')) or k.lower().endswith('proxy')"
              "}))")
    run = run_agent([sys.executable, "-c", script])
    assert run.returncode == 0, run.explain()
    env = run.report()
    assert {k for k in env if k.upper().startswith(("SPIFFE", "OPENSHELL"))} == {
        "OPENSHELL_SANDBOX"}
    assert env["OPENSHELL_SANDBOX"] == "1"
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1"


@pytest.mark.parametrize(("argv", "status"), [
    (["/bin/sh", "-c", "exit 7"], 7),
    (["/bin/sh", "-c", "kill -TERM $$"], 143),
    (["/nonexistent/agent"], 127),
])
def test_run_exit_status(run_agent: Any, argv: list[str], status: int) -> None:
    run = run_agent(argv)
    assert run.returncode == status, run.explain()
