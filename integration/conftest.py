"""Shared test configuration: the `privileged` marker skips unless running as root; the
end-to-end fixtures (development servers once per session, ``run_agent``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="privileged test: needs root")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def devenv() -> Iterator[Any]:
    """Workload API, token issuer, alpha, beta and the profiles: started once per session."""
    from integration.e2e import dev_env

    with dev_env() as env:
        yield env


@pytest.fixture
def run_agent(devenv: Any) -> Iterator[Callable[..., Any]]:
    """``run_agent(argv, **opts) -> AgentRun`` (a CompletedProcess with ``audit_lines``).

    Each test starts and ends with the issuer's faults reset; each call is a fresh
    supervisor, so no token cache or backoff carries over between scenarios.
    """
    from integration.e2e import run_supervisor

    devenv.issuer.reset_faults()

    def run(argv: Sequence[str], **opts: Any) -> Any:
        return run_supervisor(devenv, argv, **opts)

    yield run
    devenv.issuer.reset_faults()


@pytest.fixture(scope="session")
def undici_dir() -> Iterator[Path]:
    """The `undici` npm package in a world-readable tmp dir, installed once per session."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed (scripts/bootstrap-system.sh test installs nodejs)")
    node_major = subprocess.run(["node", "-p", "process.versions.node.split('.')[0]"],
                                capture_output=True, text=True, timeout=30, check=False)
    # undici 7 needs Node >= 20.18; Debian's Node 18 gets undici 6 (same EnvHttpProxyAgent).
    major = int(node_major.stdout.strip() or 0)
    if major < 18:
        pytest.skip(f"node {node_major.stdout.strip() or '?'} is too old for undici (need 18+)")
    spec = "undici@^7" if major >= 20 else "undici@^6"
    base = Path(tempfile.mkdtemp(prefix="openshell-e2e-undici-"))
    try:
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(base),
             spec],
            capture_output=True, text=True, timeout=180, check=False,
        )
        if proc.returncode != 0 or not (base / "node_modules" / "undici").is_dir():
            pytest.skip(f"npm install undici failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-300:]}")
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
