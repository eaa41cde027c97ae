"""Perform the supervisor's privileged steps (DESIGN.md section 6) with a chosen capability
set and, optionally, a seccomp profile, and report which steps the kernel allowed.

Test-only. It does not use the supervisor's code (another team writes it): it issues the
same system calls the design prescribes, so the deployment's capability list and seccomp
profile are checked against the kernel itself rather than against a list in a comment.
Everything happens in forked children and in namespaces they create; the host is untouched.
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
from collections.abc import Callable
from typing import Any

import prctl

from tests.deploy.seccomp_oci import load_profile, syscall_number

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
AGENT_ID = 65534

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(rc: int) -> None:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags))


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype))


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
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


def _restrict(caps: list[str]) -> None:
    """Keep only ``caps`` in the bounding, permitted and effective sets (uid stays 0)."""
    values = [getattr(prctl, f"CAP_{c}") for c in caps]
    prctl.cap_inheritable.limit()
    prctl.capbset.limit(*values)
    prctl.cap_effective.limit(*values)  # effective first: it must stay within permitted
    prctl.cap_permitted.limit(*values)


class _Log:
    """Step results, written as JSON lines to a pipe shared by every process of the probe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def step(self, name: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except OSError as err:
            self._write({"step": name, "ok": False, "errno": err.errno})
            return False
        self._write({"step": name, "ok": True, "errno": 0})
        return True

    def error(self, err: BaseException) -> None:
        self._write({"step": "probe error", "ok": False, "errno": -1, "detail": repr(err)})

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(record) + "\n").encode())


def _agent(log: _Log, sanitized: int, agent_net: int) -> None:
    """Child: enter the sanitized namespaces, start a PID namespace, drop everything."""
    ok = log.step("agent: setns mount namespace", lambda: setns(sanitized, CLONE_NEWNS))
    ok &= log.step("agent: setns network namespace", lambda: setns(agent_net, CLONE_NEWNET))
    ok &= log.step("agent: unshare pid namespace", lambda: unshare(CLONE_NEWPID))
    if not ok:
        return
    pid = os.fork()
    if pid == 0:  # PID 1 of the new namespace: the sandbox's init
        try:
            log.step("init: mount /proc", lambda: mount("proc", "/proc", "proc", 0, None))
            log.step("init: drop bounding set", _drop_bounding)
            log.step("init: setgroups", lambda: os.setgroups([]))
            log.step("init: setresgid", lambda: os.setresgid(AGENT_ID, AGENT_ID, AGENT_ID))
            log.step("init: setresuid", lambda: os.setresuid(AGENT_ID, AGENT_ID, AGENT_ID))
            log.step("init: no_new_privs", lambda: prctl.set_no_new_privileges(True))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _drop_bounding() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl.capbset.drop(cap)


def _supervisor(
    log: _Log, caps: list[str], profile: dict[str, Any] | None, socket_dir: str, victim: int
) -> None:
    """Child: restrict itself like the container, then run the design's steps in order."""
    _restrict(caps)
    if profile is not None:
        load_profile(profile)
    original_mnt = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY)
    original_net = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    log.step("unshare mount namespace", lambda: unshare(CLONE_NEWNS))
    log.step("make / private", lambda: mount("none", "/", None, MS_REC | MS_PRIVATE, None))
    log.step(
        "tmpfs over the socket directory",
        lambda: mount(
            "tmpfs",
            socket_dir,
            "tmpfs",
            MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "size=4k,mode=0555",
        ),
    )
    sanitized = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY)
    log.step("return to the original mount namespace", lambda: setns(original_mnt, CLONE_NEWNS))
    log.step("unshare network namespace", lambda: unshare(CLONE_NEWNET))
    log.step("bring lo up", _lo_up)
    agent_net = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    log.step("return to the original network namespace", lambda: setns(original_net, CLONE_NEWNET))
    log.step("forward a signal to the agent", lambda: os.kill(victim, signal.SIGTERM))
    pid = os.fork()
    if pid == 0:
        try:
            _agent(log, sanitized, agent_net)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    if profile is not None:
        # What the profile must refuse, to everyone in the container.
        log.step("denied: unshare user namespace", lambda: unshare(CLONE_NEWUSER))
        log.step("denied: bpf", lambda: raw_syscall("bpf", 0, 0, 0))
        log.step("denied: keyctl", lambda: raw_syscall("keyctl", 0, 0, 0))
        log.step("denied: open_tree", lambda: raw_syscall("open_tree", -100, 0, 0))
        log.step("denied: clone3", lambda: raw_syscall("clone3", 0, 0))


def run_probe(
    caps: list[str],
    socket_dir: str,
    profile: dict[str, Any] | None = None,
) -> dict[str, tuple[bool, int]]:
    """Run the probe; return {step: (ok, errno)}. Must be called as root."""
    ready_r, ready_w = os.pipe()
    victim = os.fork()
    if victim == 0:  # stands in for the agent: another uid, waiting for a signal
        os.setresgid(AGENT_ID, AGENT_ID, AGENT_ID)
        os.setresuid(AGENT_ID, AGENT_ID, AGENT_ID)
        os.write(ready_w, b"x")
        signal.pause()
        os._exit(0)
    os.close(ready_w)
    # Only once it runs as the agent's uid may the signal test start (else it proves nothing).
    if os.read(ready_r, 1) != b"x":
        raise RuntimeError("probe: the stand-in agent did not start")
    os.close(ready_r)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        log = _Log(write_fd)
        try:
            _supervisor(log, caps, profile, socket_dir, victim)
        except BaseException as err:  # reported, so a broken probe fails the test visibly
            log.error(err)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    os.kill(victim, signal.SIGKILL)
    os.waitpid(victim, 0)
    results: dict[str, tuple[bool, int]] = {}
    for line in b"".join(chunks).decode().splitlines():
        record = json.loads(line)
        if record["step"] == "probe error":
            raise RuntimeError(f"probe failed: {record['detail']}")
        results[record["step"]] = (record["ok"], record["errno"])
    return results
