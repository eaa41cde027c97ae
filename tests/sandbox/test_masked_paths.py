"""The agent's fresh /proc and /sys mask again what container runtimes mask (root)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from supervisor.sandbox import agentfs, isolation

from .conftest import PY, REPO, clean_env, run_cli, run_fake

CHECK = (PY, "-m", "supervisor", "check-isolation", "--json")

PROBE = """\
import errno, json, os
def reads_nothing(path):
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(1) == b""
    except OSError:
        return True
def top_options(point):
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == point:
                found = fields[5].split(",")
    return found
try:
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write("agent")
    write_error = None
except OSError as exc:
    write_error = errno.errorcode[exc.errno]
proc_dev = os.stat("/proc").st_dev
print(json.dumps({
    "timer_list": reads_nothing("/proc/timer_list"),
    "kcore": reads_nothing("/proc/kcore") if os.path.lexists("/proc/kcore") else None,
    "keys_covered": os.stat("/proc/keys").st_dev != proc_dev,
    "keys": reads_nothing("/proc/keys"),
    "sys_options": top_options("/proc/sys"),
    "sys_statvfs_ro": bool(os.statvfs("/proc/sys").f_flag & os.ST_RDONLY),
    "sys_readable": open("/proc/sys/kernel/ostype").read().strip(),
    "write_error": write_error,
    "acpi": os.listdir("/proc/acpi") if os.path.isdir("/proc/acpi") else None,
    "firmware": os.listdir("/sys/firmware") if os.path.isdir("/sys/firmware") else None,
}))
"""


def _checks(stdout: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_check_isolation_lists_match_agentfs() -> None:
    assert isolation.MASKED_FILES == agentfs.MASKED_FILES
    assert isolation.READ_ONLY_DIRS == agentfs.READ_ONLY_DIRS
    assert isolation.EMPTY_DIRS == agentfs.EMPTY_PROC_DIRS + agentfs.EMPTY_SYS_DIRS
    assert agentfs.ESSENTIAL <= {*agentfs.MASKED_FILES, *agentfs.READ_ONLY_DIRS}


@pytest.mark.privileged
def test_agent_sees_masked_proc_and_sys() -> None:
    result = run_fake(PY, "-c", PROBE)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    probe = json.loads(result.stdout)
    assert probe["timer_list"] is True and probe["keys"] is True
    assert probe["keys_covered"] is True  # mounted over, not merely unreadable to the agent
    assert probe["kcore"] in (None, True)
    assert probe["sys_options"] is not None and "ro" in probe["sys_options"]
    assert probe["sys_statvfs_ro"] is True
    assert probe["sys_readable"] == "Linux"  # read-only, not hidden
    assert probe["write_error"] in ("EROFS", "EACCES")
    if os.path.isdir("/proc/acpi"):
        assert probe["acpi"] == []
    if os.path.isdir("/sys/firmware"):
        assert probe["firmware"] == []


@pytest.mark.privileged
def test_check_isolation_masked_paths_passes_inside() -> None:
    result = run_fake(*CHECK)
    checks = _checks(result.stdout)
    assert checks["masked-paths"]["ok"] is True, checks["masked-paths"]
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.privileged
def test_check_isolation_inside_real_cli(profile_file: Path) -> None:
    result = run_cli(profile_file, *CHECK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _checks(result.stdout)["masked-paths"]["ok"] is True


@pytest.mark.privileged
def test_masked_paths_check_fails_on_the_host() -> None:
    """Negative control: as root outside the sandbox nothing is masked."""
    result = subprocess.run(CHECK, capture_output=True, text=True, env=clean_env(),
                            cwd=str(REPO), timeout=60)
    assert result.returncode == 1
    check = _checks(result.stdout)["masked-paths"]
    assert check["ok"] is False
    assert "/proc/sys is mounted read-write" in check["detail"]
    assert "/proc/timer_list is procfs's own file" in check["detail"]


# Runs agentfs.mount_proc/mount_sys in private mount and network namespaces of a child
# process; argv[1] is a JSON object: "fail" lists mount targets linux.mount refuses,
# "extra" adds absent paths to mask, "dev_null" replaces the null device's path.
MASKING = """\
import errno, json, os, sys
from supervisor.sandbox import agentfs, linux
options = json.loads(sys.argv[1])
failing = set(options.get("fail", []))
real_mount = linux.mount
def mount(source, target, fstype, flags, data):
    if target in failing:
        raise OSError(errno.EPERM, f"mount {target}: refused by the test")
    real_mount(source, target, fstype, flags, data)
linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWNET)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
agentfs.linux.mount = mount
agentfs.MASKED_FILES += tuple(options.get("extra", []))
agentfs.DEV_NULL = options.get("dev_null", agentfs.DEV_NULL)
try:
    warnings = [agentfs.mount_proc(), agentfs.mount_sys(isolated_network=True)]
except agentfs.MaskingError as exc:
    print(json.dumps({"error": str(exc)}))
    sys.exit(0)
print(json.dumps({"warnings": warnings}))
"""


def _masking(**options: object) -> dict[str, Any]:
    result = subprocess.run([PY, "-c", MASKING, json.dumps(options)], capture_output=True,
                            text=True, cwd=str(REPO), timeout=30)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.privileged
def test_masking_succeeds_and_skips_absent_paths() -> None:
    assert _masking(extra=["/proc/no-such-file"]) == {"warnings": [None, None]}


@pytest.mark.privileged
@pytest.mark.parametrize("path", ["/proc/timer_list", "/proc/sys"])
def test_essential_mask_failure_fails_closed(path: str) -> None:
    error = _masking(fail=[path])["error"]
    assert error.startswith(f"{path}: ") and "refused by the test" in error  # init adds the step


@pytest.mark.privileged
def test_a_fake_null_device_fails_closed() -> None:
    error = _masking(dev_null="/etc/hostname")["error"]
    assert "/proc/keys" in error and "not the null device" in error


@pytest.mark.privileged
def test_best_effort_mask_failure_warns() -> None:
    failing = [p for p in ("/proc/acpi", "/proc/irq", "/sys/firmware") if os.path.exists(p)]
    if not failing:
        pytest.skip("none of the best-effort paths exists here")
    warnings = _masking(fail=failing)["warnings"]
    text = " ".join(w for w in warnings if w)
    for path in failing:
        assert f"{path}: mount {path}: refused by the test" in text
