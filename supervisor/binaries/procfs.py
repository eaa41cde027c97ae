"""The /proc side of binary identity: who holds a socket, what they run. I/O only.

Everything is read through the supervisor's /proc (the agent's processes are visible
there under their global pids); the connection table is the one of the sandbox's network
namespace (``/proc/<init>/net/tcp``). Reading another uid's ``fd`` and ``exe`` links needs
``CAP_SYS_PTRACE`` (ARCHITECTURE.md 11): without it these calls fail with EACCES and the caller
denies the connection.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from supervisor.binaries.procnet import Address, find_inode

MAX_DEPTH = 64  # ancestors walked at most (a fork bomb does not make us loop)
_DELETED = " (deleted)"


def socket_inode(proc: str, init_pid: int, local: Address, remote: Address) -> int | None:
    """Inode of the agent's end of a connection (local = its address, remote = ours)."""
    for table in ("tcp", "tcp6") if ":" not in local[0] else ("tcp6", "tcp"):
        try:
            with open(f"{proc}/{init_pid}/net/{table}", encoding="ascii", errors="replace") as f:
                inode = find_inode(f, local, remote)
        except FileNotFoundError:
            continue
        if inode is not None:
            return inode
    return None


def descendants(proc: str, root_pid: int) -> list[int]:
    """Every process below ``root_pid`` (orphans in the sandbox are re-parented to its
    init, so this is the whole sandbox but the init itself)."""
    found: list[int] = []
    todo = [root_pid]
    while todo and len(found) < 65536:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"{proc}/{pid}/task/{tid}/children", encoding="ascii") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found.extend(children)
            todo.extend(children)
    return found


def socket_holders(proc: str, pids: list[int], inode: int) -> list[int]:
    """The processes with an fd on socket ``inode``. Raises PermissionError when an fd
    table cannot be read (no CAP_SYS_PTRACE): the caller must not guess."""
    target = f"socket:[{inode}]"
    holders: list[int] = []
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except FileNotFoundError:
            continue  # exited meanwhile
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == target:
                    holders.append(pid)
                    break
            except FileNotFoundError:
                continue
    return holders


@dataclass(frozen=True, slots=True)
class Exe:
    path: str  # what the kernel says the process runs (" (deleted)" removed)
    pid: int


def exe_of(proc: str, pid: int) -> Exe:
    """The executable of ``pid``. Raises OSError (PermissionError without ptrace rights)."""
    link = f"{proc}/{pid}/exe"
    path = os.readlink(link)
    if path.endswith(_DELETED):
        # The file was unlinked (or replaced) after exec. Strip the marker only when the
        # name does not exist as it is: a file literally named "x (deleted)" keeps it.
        with contextlib.suppress(OSError):
            os.lstat(path)
            return Exe(path, pid)
        path = path[: -len(_DELETED)]
    return Exe(path, pid)


def parent_of(proc: str, pid: int) -> int | None:
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def ancestors(proc: str, pid: int, stop_pid: int) -> list[int]:
    """Parents of ``pid`` up to, not including, ``stop_pid`` (the sandbox's init)."""
    out: list[int] = []
    current = pid
    for _ in range(MAX_DEPTH):
        parent = parent_of(proc, current)
        if parent is None or parent == stop_pid or parent <= 1:
            break
        out.append(parent)
        current = parent
    return out
