"""check-isolation cannot pass wrongly (issue 12 item 12, root).

Three false passes: any seccomp filter refusing unshare(0) with EPERM passed the seccomp
check (a runtime's default profile does that); any listener on the proxy's port was exempt
whatever its address; vsock was never probed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import FAKE_RUN, PY, REPO, clean_env

pytestmark = pytest.mark.privileged

FOREIGN = str(Path(__file__).with_name("foreign_filter.py"))
CHECK = (PY, "-m", "supervisor", "check-isolation", "--json")


def _checks(stdout: str) -> dict[str, dict[str, object]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_another_filter_refusing_unshare_is_not_the_agent_filter() -> None:
    result = subprocess.run([PY, FOREIGN], capture_output=True, text=True, timeout=30,
                            cwd=str(REPO), env=clean_env())
    assert result.returncode == 1, result.stdout + result.stderr
    seccomp = _checks(result.stdout)["seccomp"]
    assert seccomp["ok"] is False
    assert "Seccomp=2" in str(seccomp["detail"]) and "unshare(0) refused" in str(seccomp["detail"])


def test_a_listener_beside_the_proxy_port_is_not_exempt(agent_dir: Path) -> None:
    """A process outside the sandbox listens in the agent's network namespace on the
    proxy's port, on another loopback address: the agent can reach it directly."""
    ready, go = agent_dir / "ready", agent_dir / "go"
    agent = f"touch {ready}; while [ ! -e {go} ]; do sleep 0.02; done; exec {' '.join(CHECK)}"
    proc = subprocess.Popen([PY, str(FAKE_RUN), "--", "/bin/sh", "-c", agent],
                            env=clean_env(), cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    hostile = None
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        (init,) = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                   .read_text().split()]
        listener = ("import socket, sys, time\n"
                    "s = socket.socket(); s.bind(('127.0.0.2', 3128)); s.listen()\n"
                    "print('listening', flush=True); time.sleep(60)\n")
        hostile = subprocess.Popen(["nsenter", f"--net=/proc/{init}/ns/net", PY, "-c", listener],
                                   stdout=subprocess.PIPE, text=True)
        assert hostile.stdout is not None and hostile.stdout.readline() == "listening\n"
        go.touch()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if hostile is not None:
            hostile.kill()
            hostile.wait()
    listeners = _checks(stdout)["direct-loopback"]
    assert listeners["ok"] is False, stdout + stderr
    assert "127.0.0.2:3128" in str(listeners["detail"])


def test_vsock_is_probed_inside_and_out() -> None:
    inside = subprocess.run([PY, str(FAKE_RUN), "--", *CHECK], capture_output=True, text=True,
                            timeout=60, cwd=str(REPO), env=clean_env())
    families = _checks(inside.stdout)["socket-families"]
    assert families["ok"] is True, inside.stdout + inside.stderr
    assert "vsock" in str(families["detail"])
    if not os.path.exists("/dev/vsock"):
        pytest.skip("no vsock on this host: the negative control would not open one either")
    outside = subprocess.run([*CHECK], capture_output=True, text=True, timeout=60,
                             env=clean_env())
    families = _checks(outside.stdout)["socket-families"]
    assert families["ok"] is False and "vsock" in str(families["detail"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
