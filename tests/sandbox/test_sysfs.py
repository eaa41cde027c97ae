"""The agent's /sys (root): a fresh, read-only sysfs of its own network namespace."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import PY, REPO, run_fake

pytestmark = pytest.mark.privileged

SYS_PROBE = """\
import json, os
print(json.dumps({
    "net": sorted(os.listdir("/sys/class/net")),
    "read_only": bool(os.statvfs("/sys").f_flag & os.ST_RDONLY),
    "cgroup": sorted(os.listdir("/sys/fs/cgroup")) if os.path.isdir("/sys/fs/cgroup") else None,
}))
"""


def _host_submounts_under_sys() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith("/sys/")]


def test_isolated_agent_sees_only_lo_in_sysfs() -> None:
    assert "lo" in os.listdir("/sys/class/net")
    result = run_fake(PY, "-c", SYS_PROBE)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["net"] == ["lo"]
    assert probe["read_only"] is True
    if any(p.startswith("/sys/fs/cgroup/") for p in _host_submounts_under_sys()):
        assert probe["cgroup"] == []  # the host's submounts are not stacked on the fresh one


def test_host_network_agent_sees_host_interfaces_read_only() -> None:
    result = run_fake(PY, "-c", SYS_PROBE, options=("--network", "host", "--port", "0"))
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["net"] == sorted(os.listdir("/sys/class/net"))
    assert probe["read_only"] is True


# Runs agentfs.mount_sys in a private mount and network namespace of a child process, with
# linux.mount failing for the file system types named on the command line.
FALLBACK = """\
import errno, json, os, sys
from supervisor.sandbox import agentfs, linux
failing = set(sys.argv[1:])
real_mount = linux.mount
def mount(source, target, fstype, flags, data):
    if fstype in failing:
        raise OSError(errno.EPERM, f"mount {target}: refused by the test")
    real_mount(source, target, fstype, flags, data)
linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWNET)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
agentfs.linux.mount = mount
try:
    warning = agentfs.mount_sys(isolated_network=True)
except OSError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({
    "warning": warning,
    "listing": os.listdir("/sys"),
    "read_only": bool(os.statvfs("/sys").f_flag & os.ST_RDONLY),
}))
"""


def _fallback(*failing: str) -> dict[str, object]:
    result = subprocess.run([PY, "-c", FALLBACK, *failing], capture_output=True, text=True,
                            cwd=str(REPO), timeout=30)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_sysfs_refused_falls_back_to_an_empty_read_only_sys() -> None:
    report = _fallback("sysfs")
    assert report["listing"] == [] and report["read_only"] is True
    assert "cannot mount sysfs" in str(report["warning"])


def test_sysfs_and_tmpfs_refused_is_an_error() -> None:
    report = _fallback("sysfs", "tmpfs")
    assert "refused by the test" in str(report["error"])


def test_fresh_sysfs_is_not_the_fallback() -> None:
    report = _fallback()
    assert report["warning"] is None and "class" in report["listing"]
    assert report["read_only"] is True
