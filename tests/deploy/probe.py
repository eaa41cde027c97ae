"""Perform the supervisor's privileged steps (ARCHITECTURE.md 3) with a chosen capability
set and, optionally, a seccomp profile, and report which steps the kernel allowed.

Test-only. It issues the same system calls as supervisor/sandbox (mountns, netns, spawn,
init, agentfs, privileges), in the same order, so the deployment's capability list and
seccomp profile are checked against the kernel itself rather than against a comment. The
agent's seccomp filter is the one exception: it is loaded with the supervisor's own
installer (``install_agent_filter``), since the point is that *that* filter loads inside the
container's profile.

Like the supervisor, a failed step ends the setup (later steps would act on the wrong
namespace: a /proc mounted in a copy of the host's mount namespace instead of the
sanitized one). Forwarding a signal is independent of the setup and is always tried.

``run_probe`` runs the probe in a fresh interpreter (``python -m tests.deploy.probe``), not
in a fork of the test process: a fork inherits that process's threads' at-fork handlers
(gRPC restarts its EventEngine threads in every child, and setns into a mount namespace
then fails with EINVAL), its signal mask and its environment. Everything happens in forked
children and in namespaces they create; the host is untouched.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import prctl

from supervisor.sandbox.confine import ConfineError
from supervisor.sandbox.seccomp import SeccompSetupError, install_agent_filter
from tests.deploy.seccomp_oci import load_profile, syscall_number

ROOT = Path(__file__).resolve().parents[2]
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
AGENT_ID = 65534
_AGENT_FS = MS_NOSUID | MS_NODEV | MS_NOEXEC  # agentfs: /proc and /sys of the agent

# The supervisor's setup, in order (mountns, netns, spawn, then the init).
SETUP_STEPS: tuple[str, ...] = (
    "unshare mount namespace",
    "make / private",
    "tmpfs over the socket directory",
    "return to the original mount namespace",
    "unshare network namespace",
    "bring lo up",
    "return to the original network namespace",
    "unshare pid namespace",
    "return to the original pid namespace",
    "init: setsid",
    "init: setns mount namespace",
    "init: setns network namespace",
    "init: unshare mount and ipc namespaces",
    "init: mount /proc",
    "init: mount sysfs",
    "init: remount /sys read-only",
    "init: /sys shows only lo",
    "init: open the Landlock paths",
    "init: drop bounding set",
    "init: setgroups",
    "init: setresgid",
    "init: setresuid",
    "init: no_new_privs",
    "init: enforce Landlock",
    "init: load the agent's seccomp filter",
)
SIGNAL_STEP = "forward a signal to the agent"
# Binary identity (ARCHITECTURE.md 11): the agent's executable and fd links, another uid's
# (and non-dumpable after its setuid), are readable only with CAP_SYS_PTRACE.
IDENTITY_STEP = "read the agent's executable and fds"
STEPS: tuple[str, ...] = (*SETUP_STEPS, IDENTITY_STEP, SIGNAL_STEP)
# What a loaded container profile must refuse, to everyone in the container.
DENIED_STEPS: tuple[str, ...] = (
    "denied: unshare user namespace",
    "denied: bpf",
    "denied: keyctl",
    "denied: open_tree",
    "denied: clone3",
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Step(NamedTuple):
    ok: bool
    errno: int  # 0 when ok, or when a check (not a system call) failed
    detail: str = ""


class CheckFailed(Exception):
    """A step's system calls succeeded but their effect is not the expected one."""


def _check(rc: int) -> None:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype))


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
    )


def raw_syscall(name: str, *args: int) -> None:
    number = syscall_number(name)
    if number < 0:
        raise OSError(errno.ENOSYS, f"{name} unknown here")
    _check(_libc.syscall(number, *[ctypes.c_long(a) for a in args]))


def _lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _restrict(caps: Sequence[str]) -> None:
    """Keep only ``caps`` in the bounding, permitted and effective sets (uid stays 0)."""
    values = [getattr(prctl, f"CAP_{c}") for c in caps]
    prctl.cap_inheritable.limit()
    prctl.capbset.limit(*values)
    prctl.cap_effective.limit(*values)  # effective first: it must stay within permitted
    prctl.cap_permitted.limit(*values)


class _Log:
    """Step results as JSON lines on one pipe (stdout) shared by every process of the probe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def step(self, name: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except OSError as err:
            self._write({"step": name, "ok": False, "errno": err.errno, "detail": str(err)})
            return False
        except (CheckFailed, SeccompSetupError, ConfineError) as err:
            self._write({"step": name, "ok": False, "errno": 0, "detail": str(err)})
            return False
        self._write({"step": name, "ok": True, "errno": 0})
        return True

    def steps(self, steps: Sequence[tuple[str, Callable[[], object]]]) -> bool:
        """Run ``steps`` in order up to the first failure, like the supervisor's setup."""
        return all(self.step(name, action) for name, action in steps)

    def error(self, err: BaseException) -> None:
        self._write({"step": "probe error", "ok": False, "errno": -1, "detail": repr(err)})

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(record) + "\n").encode())


def _in_child(log: _Log, body: Callable[[], None]) -> int:
    """Fork; the child runs ``body`` and reports any unexpected error (a probe bug)."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        except BaseException as err:  # reported, so a broken probe fails the test visibly
            log.error(err)
        finally:
            os._exit(0)
    return pid


def _sys_ro() -> None:
    mount(None, "/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | _AGENT_FS, None)
    if not os.statvfs("/sys").f_flag & os.ST_RDONLY:
        raise CheckFailed("/sys is writable after the remount")


def _sys_shows_only_lo() -> None:
    names = sorted(os.listdir("/sys/class/net"))
    if names != ["lo"]:  # the sysfs was mounted for another network namespace
        raise CheckFailed(f"/sys/class/net lists {names}")


def _drop_bounding() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl.capbset.drop(cap)


def _no_new_privs() -> None:
    prctl.set_no_new_privs(1)
    if prctl.get_no_new_privs() != 1:
        raise CheckFailed("no_new_privs is not set")


def _landlock_steps() -> tuple[Callable[[], object], Callable[[], object]]:
    """confine.py's two steps with a hard_requirement plan: open as root, enforce later."""
    from supervisor.sandbox import confine
    from supervisor.sandbox.fsrules import FsPolicy, plan_rules

    prepared: list[confine.Prepared] = []
    plan = plan_rules(FsPolicy(("/usr", "/proc"), ("/dev/null",), hard_requirement=True), None)
    return (lambda: prepared.append(confine.prepare(plan)),
            lambda: confine.enforce(prepared[0]))


def _init(log: _Log, sanitized: int, agent_net: int) -> None:
    """PID 1 of the new PID namespace: the sandbox's init (supervisor/sandbox/child.py, then openshell-init)."""
    open_paths, enforce = _landlock_steps()
    log.steps(
        [
            ("init: setsid", os.setsid),
            ("init: setns mount namespace", lambda: setns(sanitized, CLONE_NEWNS)),
            ("init: setns network namespace", lambda: setns(agent_net, CLONE_NEWNET)),
            ("init: unshare mount and ipc namespaces", lambda: unshare(CLONE_NEWNS | CLONE_NEWIPC)),
            ("init: mount /proc", lambda: mount("proc", "/proc", "proc", _AGENT_FS, None)),
            ("init: mount sysfs", lambda: mount("sysfs", "/sys", "sysfs", _AGENT_FS, None)),
            ("init: remount /sys read-only", _sys_ro),
            ("init: /sys shows only lo", _sys_shows_only_lo),
            ("init: open the Landlock paths", open_paths),
            ("init: drop bounding set", _drop_bounding),
            ("init: setgroups", lambda: os.setgroups([])),
            ("init: setresgid", lambda: os.setresgid(AGENT_ID, AGENT_ID, AGENT_ID)),
            ("init: setresuid", lambda: os.setresuid(AGENT_ID, AGENT_ID, AGENT_ID)),
            ("init: no_new_privs", _no_new_privs),
            ("init: enforce Landlock", enforce),
            ("init: load the agent's seccomp filter", install_agent_filter),
        ]
    )


def _setup(log: _Log, socket_dir: str) -> None:
    """mountns.py, netns.py and spawn.py: the sanitized namespaces, then the init."""
    original_mnt = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY)
    original_net = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    original_pid = os.open("/proc/thread-self/ns/pid", os.O_RDONLY)
    fds: dict[str, int] = {}

    def leave(kind: str, original: int, nstype: int) -> None:
        """Keep the new namespace (an fd, like the supervisor) and return to ``original``."""
        fds[kind] = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY)
        setns(original, nstype)

    tmpfs = "size=4k,nr_inodes=1,mode=000"
    ok = log.steps(
        [
            ("unshare mount namespace", lambda: unshare(CLONE_NEWNS)),
            ("make / private", lambda: mount(None, "/", None, MS_REC | MS_PRIVATE, None)),
            (
                "tmpfs over the socket directory",
                lambda: mount("tmpfs", socket_dir, "tmpfs", MS_RDONLY | _AGENT_FS, tmpfs),
            ),
            (
                "return to the original mount namespace",
                lambda: leave("mnt", original_mnt, CLONE_NEWNS),
            ),
            ("unshare network namespace", lambda: unshare(CLONE_NEWNET)),
            ("bring lo up", _lo_up),
            (
                "return to the original network namespace",
                lambda: leave("net", original_net, CLONE_NEWNET),
            ),
            ("unshare pid namespace", lambda: unshare(CLONE_NEWPID)),
        ]
    )
    if not ok:
        return
    init = _in_child(log, lambda: _init(log, fds["mnt"], fds["net"]))
    log.step("return to the original pid namespace", lambda: setns(original_pid, CLONE_NEWPID))
    os.waitpid(init, 0)


def _supervisor(
    log: _Log, caps: Sequence[str], profile: dict[str, Any] | None, socket_dir: str, victim: int
) -> None:
    """Child: restrict itself like the container, then run the design's steps."""
    _restrict(caps)
    if profile is not None:
        load_profile(profile)
    os.waitpid(_in_child(log, lambda: _setup(log, socket_dir)), 0)
    log.step(IDENTITY_STEP, lambda: (os.readlink(f"/proc/{victim}/exe"),
                                     os.listdir(f"/proc/{victim}/fd")))
    log.step(SIGNAL_STEP, lambda: os.kill(victim, signal.SIGTERM))
    if profile is not None:
        log.step(DENIED_STEPS[0], lambda: unshare(CLONE_NEWUSER))
        log.step(DENIED_STEPS[1], lambda: raw_syscall("bpf", 0, 0, 0))
        log.step(DENIED_STEPS[2], lambda: raw_syscall("keyctl", 0, 0, 0))
        log.step(DENIED_STEPS[3], lambda: raw_syscall("open_tree", -100, 0, 0))
        log.step(DENIED_STEPS[4], lambda: raw_syscall("clone3", 0, 0))


def _probe(caps: Sequence[str], socket_dir: str, profile: dict[str, Any] | None) -> None:
    """Body of the fresh interpreter: JSON lines on stdout, one per step."""
    ready_r, ready_w = os.pipe()
    victim = os.fork()
    if victim == 0:  # stands in for the agent: another uid, waiting for a signal
        os.setresgid(AGENT_ID, AGENT_ID, AGENT_ID)
        os.setresuid(AGENT_ID, AGENT_ID, AGENT_ID)
        os.write(ready_w, b"x")
        signal.pause()
        os._exit(0)
    try:
        os.close(ready_w)
        # Only once it runs as the agent's uid may the signal test start (else it proves nothing).
        if os.read(ready_r, 1) != b"x":
            raise RuntimeError("probe: the stand-in agent did not start")
        log = _Log(sys.stdout.fileno())
        os.waitpid(_in_child(log, lambda: _supervisor(log, caps, profile, socket_dir, victim)), 0)
    finally:
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)


def run_probe(
    caps: Sequence[str],
    socket_dir: str,
    profile: dict[str, Any] | None = None,
) -> dict[str, Step]:
    """Run the probe; return {step name: Step}. Must be called as root."""
    request = json.dumps({"caps": list(caps), "socket_dir": socket_dir, "profile": profile})
    proc = subprocess.run(
        [sys.executable, "-E", "-s", "-m", "tests.deploy.probe"],
        input=request,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe exited {proc.returncode}: {proc.stderr[-2000:]}")
    results: dict[str, Step] = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if record["step"] == "probe error":
            raise RuntimeError(f"probe failed: {record['detail']}")
        if record["step"] in results:
            raise RuntimeError(f"probe: step {record['step']!r} reported twice")
        results[record["step"]] = Step(record["ok"], record["errno"], record.get("detail", ""))
    return results


def main() -> None:
    request = json.load(sys.stdin)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # an exec keeps the caller's mask
    _probe(request["caps"], request["socket_dir"], request["profile"])


if __name__ == "__main__":
    main()
