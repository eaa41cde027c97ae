"""The sandbox's capability list against the kernel: the list suffices for every step of
ARCHITECTURE.md 3 (supervisor/sandbox), and no capability in it is superfluous."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT
from tests.deploy.probe import IDENTITY_STEP, SIGNAL_STEP, STEPS, Step, run_probe
from tests.deploy.test_manifests import SUPERVISOR_CAPS

pytestmark = pytest.mark.privileged

# Without the capability, the first step the kernel refuses (the setup stops there, like
# the supervisor's); forwarding a signal is tried regardless.
FIRST_REFUSED = {
    "SYS_ADMIN": "unshare mount namespace",
    "SYS_CHROOT": "return to the original mount namespace",
    "NET_ADMIN": "bring lo up",
    "SETPCAP": "init: drop bounding set",
    "SETGID": "init: setgroups",
    "SETUID": "init: setresuid",
    "KILL": SIGNAL_STEP,
    "SYS_PTRACE": IDENTITY_STEP,
}


@pytest.fixture
def socket_dir(tmp_path: Path) -> str:
    path = tmp_path / "spiffe-workload-api"
    path.mkdir()
    return str(path)


def failures(results: dict[str, Step]) -> dict[str, Step]:
    return {name: step for name, step in results.items() if not step.ok}


def test_the_listed_capabilities_suffice(socket_dir: str) -> None:
    results = run_probe(sorted(SUPERVISOR_CAPS), socket_dir)
    assert failures(results) == {}
    assert set(results) == set(STEPS)


def test_every_listed_capability_has_a_reason() -> None:
    assert set(FIRST_REFUSED) == SUPERVISOR_CAPS


@pytest.mark.parametrize("missing", sorted(SUPERVISOR_CAPS))
def test_each_listed_capability_is_needed(socket_dir: str, missing: str) -> None:
    results = run_probe(sorted(SUPERVISOR_CAPS - {missing}), socket_dir)
    assert set(failures(results)) == {FIRST_REFUSED[missing]}, failures(results)


def test_the_probe_ignores_the_callers_threads_and_fork_handlers(socket_dir: str) -> None:
    # What gRPC does once a channel or server has run in the test process (the e2e dev
    # servers): restart its threads in every forked child. setns into a mount namespace
    # fails with EINVAL in a multi-threaded process, so a probe forked from such a process
    # reported failures that had nothing to do with capabilities.
    script = textwrap.dedent(
        f"""
        import json, os, threading
        from tests.deploy.probe import run_probe
        os.register_at_fork(
            after_in_child=lambda: threading.Thread(target=threading.Event().wait,
                                                    daemon=True).start())
        results = run_probe({sorted(SUPERVISOR_CAPS)!r}, {socket_dir!r})
        print(json.dumps({{name: step.ok for name, step in results.items()}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(proc.stdout)
    assert set(results) == set(STEPS)
    assert all(results.values()), results
