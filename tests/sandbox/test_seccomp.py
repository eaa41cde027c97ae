"""The agent's seccomp filter (root): refused syscalls, ordinary programs, fail closed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from supervisor.sandbox import filter_marks, isolation, libseccomp, seccomp

from .conftest import PY, REPO, run_fake

pytestmark = pytest.mark.privileged

PROBE = str(Path(__file__).with_name("syscall_probe.py"))
NAMES = ",".join(seccomp.DENIED)
TTY_CALLS = ("ioctl(TIOCSTI)", "ioctl(TIOCSTI|1<<32)")


def test_agent_gets_eperm_from_every_refused_syscall() -> None:
    result = run_fake(PY, PROBE, NAMES)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report.pop("Seccomp") == "2"
    assert report.pop("clone3") == "ENOSYS"  # so libc falls back to the filterable clone
    assert set(report) == {*seccomp.DENIED, "clone(CLONE_NEWUSER)", *TTY_CALLS}
    assert {name: r for name, r in report.items() if r != "EPERM"} == {}


def test_control_the_probe_sees_other_outcomes_without_the_filter() -> None:
    # Negative control: the same probe, unprivileged but unfiltered. Several calls then
    # run or fail differently, so EPERM above is the filter's doing, not missing privileges.
    result = subprocess.run(
        [PY, PROBE, NAMES], capture_output=True, text=True, timeout=30, cwd=str(REPO),
        user=65534, group=65534, extra_groups=[], stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["Seccomp"] == "0"
    assert report["unshare"] == "ok" and report["setns"] == "EBADF"
    assert report["clone3"] != "ENOSYS"
    assert {report[name] for name in TTY_CALLS} == {"ENOTTY"}


AGENT_WORK = """\
set -e
python3 -c 'import threading; t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()'
sh -c 'echo sh'
ls / > /dev/null && echo ls
curl -sS -o /dev/null -w 'curl %{http_code}\\n' http://probe.invalid/
"""


def test_ordinary_programs_still_run() -> None:
    # curl goes through the (fake) proxy, which answers 403 to everything.
    result = run_fake("/bin/sh", "-c", AGENT_WORK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["thread", "sh", "ls", "curl 403"]


def test_filter_that_cannot_load_fails_the_run(agent_dir: Path) -> None:
    marker = agent_dir / "ran"
    result = run_fake("/bin/touch", str(marker), options=("--break-seccomp",))
    assert result.returncode == 125
    assert "seccomp" in result.stderr and "broken by the test" in result.stderr
    assert not marker.exists()


def test_unknown_syscall_name_is_an_error() -> None:
    with libseccomp.Filter(libseccomp.ACT_ALLOW) as flt, pytest.raises(
        libseccomp.SeccompError, match="does not know"
    ):
        flt.add_rule(libseccomp.act_errno(1), "no_such_syscall")


def test_filter_builds_with_every_rule() -> None:
    flt = seccomp.build_agent_filter()
    flt.release()
    flt.release()  # idempotent
    with pytest.raises(libseccomp.SeccompError, match="released"):
        flt.load()


def test_check_seccomp_needs_mode_2_the_mark_and_eperm() -> None:
    mark = filter_marks.MARK_ERRNO
    probe = isolation.FilterProbe
    assert isolation.check_seccomp({"Seccomp": "2"}, lambda: probe(1, mark)).ok
    assert not isolation.check_seccomp({"Seccomp": "2"}, lambda: probe(1, 22)).ok  # EINVAL
    assert not isolation.check_seccomp({"Seccomp": "2"}, lambda: probe(0, mark)).ok
    assert not isolation.check_seccomp({"Seccomp": "0"}, lambda: probe(1, mark)).ok
    assert not isolation.check_seccomp({}, lambda: probe(1, mark)).ok


FAMILY_PROBE = """
import errno, json, socket
AF_BLUETOOTH, AF_PACKET, AF_VSOCK, AF_NETLINK = 31, 17, 40, 16
NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_KOBJECT_UEVENT = 0, 4, 15
def try_(family, kind, proto=0, listen=False):
    try:
        s = socket.socket(family, kind, proto)
    except OSError as e:
        return errno.errorcode[e.errno]
    try:
        if listen:  # a vsock listener is reachable from the hypervisor: out of the netns
            s.bind((socket.VMADDR_CID_ANY, 0xFFFFFFFF)); s.listen()
        return "ok"
    except OSError as e:
        return "created, " + errno.errorcode[e.errno]
    finally:
        s.close()
print(json.dumps({
    "vsock": try_(AF_VSOCK, socket.SOCK_STREAM, listen=True),
    "vsock_dgram": try_(AF_VSOCK, socket.SOCK_DGRAM),
    "packet": try_(AF_PACKET, socket.SOCK_DGRAM),
    "bluetooth": try_(AF_BLUETOOTH, socket.SOCK_STREAM),
    "netlink_diag": try_(AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG),
    "netlink_uevent": try_(AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT),
    "netlink_route": try_(AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE),
    "inet": try_(socket.AF_INET, socket.SOCK_STREAM),
    "inet6": try_(socket.AF_INET6, socket.SOCK_STREAM),
    "unix": try_(socket.AF_UNIX, socket.SOCK_STREAM),
}))
"""

# socket(2) through the raw syscall with the family's upper 32 bits set: the kernel reads an
# int, so a filter comparing all 64 bits would let AF_VSOCK through.
RAW_VSOCK = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
fd = libc.syscall(ctypes.c_long(41), ctypes.c_long(40 | 1 << 32), ctypes.c_long(1), ctypes.c_long(0))
print("ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
"""


def test_agent_cannot_open_vsock_or_other_unneeded_families() -> None:
    """Item 8: vsock is not confined by network namespaces (this host has /dev/vsock); the
    agent needs only unix, inet, inet6 and netlink's route protocol."""
    result = run_fake(PY, "-c", FAMILY_PROBE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    allowed = {k: report.pop(k) for k in ("netlink_route", "inet", "inet6", "unix")}
    assert allowed == dict.fromkeys(allowed, "ok")
    assert report == {"vsock": "EAFNOSUPPORT", "vsock_dgram": "EAFNOSUPPORT",
                      "packet": "EAFNOSUPPORT", "bluetooth": "EAFNOSUPPORT",
                      "netlink_diag": "EPROTONOSUPPORT", "netlink_uevent": "EPROTONOSUPPORT"}
    if os.uname().machine == "x86_64":
        result = run_fake(PY, "-c", RAW_VSOCK)
        assert result.stdout.strip() == "EAFNOSUPPORT", result.stdout + result.stderr


def test_control_vsock_opens_without_the_filter() -> None:
    """Negative control: unfiltered, the same unprivileged user opens and binds vsock here."""
    if not os.path.exists("/dev/vsock"):
        pytest.skip("no vsock on this host")
    result = subprocess.run(
        [PY, "-c", FAMILY_PROBE], capture_output=True, text=True, timeout=30, cwd=str(REPO),
        user=65534, group=65534, extra_groups=[],
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vsock"] == "ok" and report["netlink_diag"] == "ok", report
