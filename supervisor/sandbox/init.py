"""The sandbox's minimal init: PID 1 of the agent's PID namespace (ARCHITECTURE.md 3.4).

Runs in the process the supervisor forked before any secret is in memory. It starts a
session of its own (no controlling terminal), enters the sanitized mount and the network
namespaces, mounts a fresh /proc and /sys, drops every privilege (same uid as the agent,
no capabilities, non-dumpable), loads the agent's seccomp filter, waits for the
supervisor's go with the agent's environment, forks and execs the agent, forwards signals
to it, reaps orphans, and exits with the agent's status.

A PID-namespace init cannot die of a signal it sends itself with the default disposition,
so death by signal N is reported as exit code 128+N (and the raw status over the status
pipe); the supervisor exits with that same code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
from dataclasses import dataclass

from supervisor.sandbox import agentfs, linux
from supervisor.sandbox.privileges import PrivilegeError, drop_privileges
from supervisor.sandbox.protocol import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP,
    FORWARDED_SIGNALS,
    exit_code_of,
    write_message,
)
from supervisor.sandbox.seccomp import SeccompSetupError, install_agent_filter


@dataclass(frozen=True)
class InitSpec:
    command: tuple[str, ...]
    uid: int
    gid: int
    groups: tuple[int, ...]
    workdir: str | None  # explicit --workdir: failure to enter it is a setup error
    default_workdir: str  # the supervisor's cwd, "/" if the agent cannot enter it
    mount_ns_fd: int
    net_ns_fd: int | None


class _SetupFailure(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class _Forwarder:
    """Signal handler: forward to the agent, or hold until it exists."""

    def __init__(self) -> None:
        self.agent_pid: int | None = None
        self.pending: list[int] = []

    def __call__(self, signum: int, _frame: object) -> None:
        if self.agent_pid is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.agent_pid, signum)


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # e.g. the fd listdir used
                os.close(fd)


def _leave_terminal() -> None:
    """A session of our own: the operator's terminal is no longer the controlling terminal
    of the init or the agent (TIOCSTI on it fails with EPERM), and Ctrl-C on it reaches
    the agent only through the supervisor's forwarding, i.e. once."""
    try:
        os.setsid()
    except OSError as exc:
        raise _SetupFailure("session", f"setsid: {exc.strerror}") from exc


def _enter_namespaces(spec: InitSpec) -> None:
    try:
        linux.setns(spec.mount_ns_fd, linux.CLONE_NEWNS)
    except OSError as exc:
        raise _SetupFailure("mount namespace", f"setns: {exc.strerror}") from exc
    os.close(spec.mount_ns_fd)
    if spec.net_ns_fd is not None:
        try:
            linux.setns(spec.net_ns_fd, linux.CLONE_NEWNET)
        except OSError as exc:
            raise _SetupFailure("network namespace", f"setns: {exc.strerror}") from exc
        os.close(spec.net_ns_fd)
    try:
        # A namespace of our own on top of the sanitized one, so the fresh /proc (showing
        # only this PID namespace) and /sys do not change the sanitized namespace itself.
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC)
        proc_warning = agentfs.mount_proc()
    except agentfs.MaskingError as exc:
        raise _SetupFailure("/proc masking", str(exc)) from exc
    except OSError as exc:
        raise _SetupFailure("/proc", str(exc)) from exc
    try:
        sys_warning = agentfs.mount_sys(isolated_network=spec.net_ns_fd is not None)
    except OSError as exc:
        raise _SetupFailure("/sys", str(exc)) from exc
    for warning in (proc_warning, sys_warning):
        if warning is not None:
            with contextlib.suppress(OSError):
                os.write(2, f"openshell-supervisor: warning: {warning}\n".encode())


def _read_go(fd: int) -> dict[str, str] | None:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        return None
    env = json.loads(b"".join(chunks))["env"]
    return {str(k): str(v) for k, v in env.items()}


def _enter_workdir(spec: InitSpec) -> None:
    if spec.workdir is not None:
        try:
            os.chdir(spec.workdir)
        except OSError as exc:
            raise _SetupFailure(
                "--workdir", f"cannot enter {spec.workdir}: {exc.strerror}"
            ) from exc
        return
    try:
        os.chdir(spec.default_workdir)
    except OSError:
        os.chdir("/")


def resolve_command(name: str, path_var: str | None) -> str | None:
    """PATH lookup as the agent: the first executable regular file, else the first regular
    file (so exec reports "not executable"), else None (not found). Unlike execvp, a PATH
    directory the agent cannot search counts as "not there", not as EACCES."""
    if "/" in name:
        return name
    first_file: str | None = None
    for directory in (path_var if path_var is not None else os.defpath).split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            is_file = stat.S_ISREG(os.stat(candidate).st_mode)
        except OSError:
            continue
        if is_file and os.access(candidate, os.X_OK):
            return candidate
        if is_file and first_file is None:
            first_file = candidate
    return first_file


def _exec_agent(command: tuple[str, ...], env: dict[str, str], err_fd: int) -> None:
    """In the forked agent: restore default signal handling and exec; never returns."""
    try:
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        path = resolve_command(command[0], env.get("PATH"))
        if path is None:
            raise FileNotFoundError(errno.ENOENT, "not found")
        os.execve(path, list(command), env)  # noqa: S606 - argv, no shell
    except OSError as exc:
        not_found = exc.errno in (errno.ENOENT, errno.ENOTDIR)
        code = EXIT_NOT_FOUND if not_found else EXIT_NOT_EXECUTABLE
        reason = "command not found" if not_found else f"cannot execute: {exc.strerror}"
        try:
            os.write(err_fd, json.dumps({"code": code, "reason": reason}).encode())
        finally:
            os._exit(code)
    finally:
        os._exit(EXIT_NOT_EXECUTABLE)


def _spawn_agent(spec: InitSpec, env: dict[str, str], forwarder: _Forwarder) -> int:
    err_r, err_w = os.pipe()  # both O_CLOEXEC: EOF on successful exec
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        _exec_agent(spec.command, env, err_w)
    forwarder.agent_pid = pid
    os.close(err_w)
    for signum in forwarder.pending:
        forwarder(signum, None)
    forwarder.pending.clear()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    with os.fdopen(err_r, "rb") as err:
        failure = err.read()
    if failure:
        raise _ExecFailure(json.loads(failure))
    return pid


class _ExecFailure(Exception):
    def __init__(self, info: dict[str, object]) -> None:
        super().__init__(str(info.get("reason", "")))
        code = info.get("code", EXIT_NOT_EXECUTABLE)
        self.code = code if isinstance(code, int) else EXIT_NOT_EXECUTABLE
        self.reason = str(info.get("reason", ""))


def _wait_for(agent_pid: int) -> int:
    """Reap every child (orphans are re-parented to us) until the agent exits."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == agent_pid:
            return status


def run_init(spec: InitSpec, go_fd: int, status_fd: int) -> int:
    """Body of the init process; returns its exit code. Called right after fork."""
    os.environ.clear()  # the supervisor's variables have no business here
    forwarder = _Forwarder()
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forwarder)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    keep = {0, 1, 2, go_fd, status_fd, spec.mount_ns_fd}
    if spec.net_ns_fd is not None:
        keep.add(spec.net_ns_fd)
    try:
        _close_fds_except(keep)
        _leave_terminal()
        _enter_namespaces(spec)
        try:
            drop_privileges(spec.uid, spec.gid, spec.groups)
        except (OSError, PrivilegeError) as exc:
            raise _SetupFailure("privileges", str(exc)) from exc
        try:
            install_agent_filter()  # inherited by the agent from its first instruction
        except SeccompSetupError as exc:
            raise _SetupFailure("seccomp", str(exc)) from exc
        env = _read_go(go_fd)
        if env is None:
            return EXIT_SETUP  # the supervisor gave up before starting the agent
        _enter_workdir(spec)
        agent_pid = _spawn_agent(spec, env, forwarder)
    except _SetupFailure as exc:
        write_message(status_fd, {"kind": "setup", "step": exc.step, "reason": exc.reason})
        return EXIT_SETUP
    except _ExecFailure as exc:
        write_message(status_fd, {"kind": "exec", "code": exc.code, "reason": exc.reason})
        return exc.code
    status = _wait_for(agent_pid)
    write_message(status_fd, {"kind": "exit", "status": status})
    return exit_code_of(status)
