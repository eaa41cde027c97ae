"""Real HTTP clients inside the sandbox: the proxy injects the workload's token, per service.

Each agent sends its own ``Authorization: Bearer stolen``; the services must see exactly one
Authorization header (the injected one), audience and scope of their own name, and a token
issued to the Workload API's SPIFFE ID.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from integration.e2e import SPIFFE_ID, DevEnv, parse_curl_output

pytestmark = pytest.mark.privileged


def assert_served(results: list[dict[str, Any]], names: list[str]) -> None:
    assert len(results) == len(names), results
    for name, result in zip(names, results, strict=True):
        assert result.get("status") == 200, (name, result)
        body = result["body"]
        assert body["service"] == name
        assert body["aud"] == name
        assert name in body["scope"].split()
        assert body["authorization_headers"] == 1, "the agent's own Authorization survived"
        assert body["subject"] == SPIFFE_ID


def urls(devenv: DevEnv) -> list[str]:
    return [devenv.alpha.url, devenv.beta.url]


def test_curl(devenv: DevEnv, run_agent: Any) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (scripts/bootstrap-system.sh test installs it)")
    run = run_agent(["/bin/sh", devenv.agent("curl_agent.sh"), *urls(devenv)])
    assert run.returncode == 0, run.explain()
    assert_served(parse_curl_output(run.stdout), ["alpha", "beta"])


@pytest.mark.parametrize("agent", ["urllib_agent.py", "httpx_agent.py"])
def test_python_clients(devenv: DevEnv, run_agent: Any, agent: str) -> None:
    run = run_agent([sys.executable, devenv.agent(agent), *urls(devenv)])
    assert run.returncode == 0, run.explain()
    assert_served(run.report(), ["alpha", "beta"])


def test_node_fetch(devenv: DevEnv, run_agent: Any, undici_dir: Path) -> None:
    node = shutil.which("node")
    assert node is not None  # undici_dir skips without node
    run = run_agent([node, devenv.agent("fetch_agent.cjs"), str(undici_dir), *urls(devenv)])
    assert run.returncode == 0, run.explain()
    assert_served(run.report(), ["alpha", "beta"])


def test_audit_records_each_injection(devenv: DevEnv, run_agent: Any) -> None:
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"), *urls(devenv)])
    assert run.returncode == 0, run.explain()
    allowed = [e for e in run.http_events() if e.get("action_id") == 1]
    hosts = sorted(e["http_request"]["url"]["hostname"] for e in allowed)
    assert hosts == ["127.0.0.2", "127.0.0.3"], run.audit_lines
    assert all(e.get("severity_id") == 1 for e in allowed), "injection is Allowed/Informational"
