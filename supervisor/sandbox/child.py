"""The forked child that becomes the sandbox's PID 1 (ARCHITECTURE.md 3.1 and 3.4).

The supervisor forks this child into the new PID namespace before any secret is in its
memory. In order, the child:

1. leaves the operator's terminal (a session of its own) and closes inherited fds;
2. joins the sanitized mount namespace and the agent's network namespace, then a mount
   and IPC namespace of its own with a fresh /proc and /sys;
3. drops its identity and every capability (the agent's uid, no_new_privs, non-dumpable);
4. enforces the Landlock ruleset of ``--policy`` (ARCHITECTURE.md 10; its paths were
   opened as root right after step 2, in the agent's namespaces);
5. loads the agent's seccomp filter;
6. waits for the supervisor's go on the go pipe (the agent's environment, once the
   per-run CA exists) and enters the working directory;
7. execs ``openshell-init`` (supervisor/sandbox/openshell-init.c) with an empty
   environment and argv ``["openshell-init"]``: PID 1 holds nothing of the supervisor
   (no environment block, argv or heap). It forks and execs the agent, forwards signals,
   reaps orphans and reports on the status pipe.

Every failure before the exec is reported on the status pipe as a setup step (125).
Python is used only up to the exec; nothing here runs while the agent does.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from typing import TYPE_CHECKING

from supervisor.record import record
from supervisor.sandbox import agentfs, linux
from supervisor.sandbox.privileges import PrivilegeError, drop_privileges
from supervisor.sandbox.protocol import (
    EXIT_NOT_FOUND,
    EXIT_SETUP,
    INIT_ARGV,
    INIT_SPEC_FD,
    INIT_STATUS_FD,
    encode_launch_spec,
    write_message,
)
from supervisor.sandbox.seccomp import SeccompSetupError, install_agent_filter

if TYPE_CHECKING:  # Landlock's modules load only for a run with a filesystem_policy
    from supervisor.sandbox.confine import Prepared
    from supervisor.sandbox.fsrules import LandlockPlan

@record
class InitSpec:
    command: tuple[str, ...]
    uid: int
    gid: int
    groups: tuple[int, ...]
    workdir: str | None  # explicit --workdir: failure to enter it is a setup error
    default_workdir: str  # the supervisor's cwd, "/" if the agent cannot enter it
    mount_ns_fd: int
    net_ns_fd: int | None
    init_path: str  # the openshell-init executable (checked by the supervisor)
    landlock: LandlockPlan | None = None  # filesystem_policy of --policy (ARCHITECTURE.md 10)
    stderr_fd: int | None = None  # the agent's own stderr (a relay pipe), else ours


class _SetupFailure(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


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


def _drop_identity(spec: InitSpec) -> None:
    try:
        drop_privileges(spec.uid, spec.gid, spec.groups)
    except (OSError, PrivilegeError) as exc:
        raise _SetupFailure("privileges", str(exc)) from exc


def _install_seccomp() -> None:
    try:
        install_agent_filter()  # inherited by the init and the agent from their first instruction
    except SeccompSetupError as exc:
        raise _SetupFailure("seccomp", str(exc)) from exc


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


class _NotFound(Exception):
    pass


def _move_fd(fd: int, target: int) -> None:
    """Make ``target`` a copy of ``fd`` that survives exec."""
    if fd != target:
        os.dup2(fd, target, inheritable=True)
    else:
        os.set_inheritable(fd, True)


def _exec_init(spec: InitSpec, env: dict[str, str], status_fd: int) -> None:
    """Replace this process by openshell-init; returns only by raising."""
    path = resolve_command(spec.command[0], env.get("PATH"))
    if path is None:
        raise _NotFound
    launch = os.memfd_create("openshell-init-spec", os.MFD_CLOEXEC)
    data = encode_launch_spec(path, spec.command, env)
    while data:
        data = data[os.write(launch, data) :]
    if spec.stderr_fd is not None:  # from here on our own warnings would look like the agent's
        os.dup2(spec.stderr_fd, 2)
    # Out of the way of fds 3 and 4 first, then into place (dup2 leaves them inheritable).
    high_launch = os.dup(launch) if launch in (INIT_SPEC_FD, INIT_STATUS_FD) else launch
    high_status = os.dup(status_fd) if status_fd == INIT_SPEC_FD else status_fd
    _move_fd(high_launch, INIT_SPEC_FD)
    _move_fd(high_status, INIT_STATUS_FD)
    try:
        os.execve(spec.init_path, list(INIT_ARGV), {})  # noqa: S606 - argv, no shell
    except OSError as exc:
        raise _SetupFailure("init", f"cannot execute {spec.init_path}: {exc.strerror}") from exc


def _warn(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"openshell-supervisor: warning: {message}\n".encode())


def _prepare_landlock(plan: LandlockPlan | None) -> Prepared | None:
    if plan is None:
        return None
    from supervisor.sandbox import confine

    try:
        return confine.prepare(plan, warn=_warn)
    except confine.ConfineError as exc:
        raise _SetupFailure(exc.step, exc.reason) from exc


def _enforce_landlock(prepared: Prepared | None) -> None:
    if prepared is None:
        return
    from supervisor.sandbox import confine

    try:
        confine.enforce(prepared)
    except confine.ConfineError as exc:
        raise _SetupFailure(exc.step, exc.reason) from exc


def run_child(spec: InitSpec, go_fd: int, status_fd: int) -> int:
    """Body of the forked child; returns an exit code only when it could not exec the init.

    The supervisor blocked the forwarded signals across the fork; they stay blocked (and
    pending) through the exec, and openshell-init forwards them once the agent exists."""
    keep = {0, 1, 2, go_fd, status_fd, spec.mount_ns_fd}
    if spec.net_ns_fd is not None:
        keep.add(spec.net_ns_fd)
    if spec.stderr_fd is not None:
        keep.add(spec.stderr_fd)
    try:
        _close_fds_except(keep)
        _leave_terminal()
        _enter_namespaces(spec)
        prepared = _prepare_landlock(spec.landlock)  # as root: every listed path opens
        _drop_identity(spec)
        _enforce_landlock(prepared)  # after no_new_privs, before seccomp
        _install_seccomp()
        env = _read_go(go_fd)
        if env is None:
            return EXIT_SETUP  # the supervisor gave up before starting the agent
        _enter_workdir(spec)
        _exec_init(spec, env, status_fd)
    except _SetupFailure as exc:
        write_message(status_fd, {"kind": "setup", "step": exc.step, "reason": exc.reason})
        return EXIT_SETUP
    except _NotFound:
        write_message(status_fd, {"kind": "exec", "code": EXIT_NOT_FOUND,
                                  "reason": "command not found"})
        return EXIT_NOT_FOUND
    return EXIT_SETUP  # not reached: _exec_init either execs or raises
