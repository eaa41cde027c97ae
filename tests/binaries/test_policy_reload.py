"""Reloading ``--policy`` (root): network_policies change on SIGHUP and on a file change;
the static part (filesystem_policy, landlock, process) stays as it started, with a log line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..sandbox.conftest import PY, REPO, clean_env
from .test_proxy_binaries import upstream  # noqa: F401 - fixture

pytestmark = pytest.mark.privileged

AGENT = """\
export NO_PROXY= no_proxy=
for step in 1 2 3; do
  while [ ! -e {box}/go$step ]; do sleep 0.05; done
  curl -s -o /dev/null -w '%{{http_code}}' {url} > {box}/out$step.tmp
  mv {box}/out$step.tmp {box}/out$step
done
"""


def entry(port: int) -> str:
    return (f"network_policies:\n  local:\n    endpoints: [{{host: 127.0.0.1, port: {port}, "
            "allowed_ips: [127.0.0.0/8]}]\n    binaries: [{path: /usr/bin/curl}]\n")


def wait_for(path: Path, timeout: float = 20) -> str:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_network_policies_reload_static_part_fixed(tmp_path: Path, upstream: int) -> None:  # noqa: F811
    box = Path(tempfile.mkdtemp(prefix="openshell-reload-", dir="/tmp"))
    os.chmod(box, 0o777)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n" + entry(upstream))
    url = f"http://127.0.0.1:{upstream}/"
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "run", "--policy", str(policy), "--", "/bin/sh", "-c",
         AGENT.format(box=box, url=url)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
        cwd=str(REPO),
    )
    try:
        (box / "go1").touch()
        assert wait_for(box / "out1") == "200"
        # The entry removed and a filesystem_policy added; SIGHUP.
        policy.write_text("version: 1\nfilesystem_policy: {read_only: [/usr]}\n"
                          "network_policies: {}\n")
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        (box / "go2").touch()
        assert wait_for(box / "out2") == "403"  # the agent could still write here: no Landlock
        # The entry back, noticed as a file change this time (no signal).
        policy.write_text("version: 1\n" + entry(upstream))
        time.sleep(2.5)  # the poll interval (2 s)
        (box / "go3").touch()
        assert wait_for(box / "out3") == "200"
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(box, ignore_errors=True)
    assert proc.returncode == 0, stderr
    assert "fixed at start: their change is ignored until restart" in stderr
