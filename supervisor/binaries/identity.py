"""Who opened a connection to the proxy, and may it use an endpoint (ARCHITECTURE.md 11).

``BinaryResolver.lookup`` runs once per agent connection (the proxy caches the result on
the connection, so keep-alive requests cost nothing more): the socket's inode from the
sandbox's connection table, the sandbox processes holding it, each one's executable and
its ancestors' up to (not including) the sandbox's init, each verified against the
digest first seen for its path. ``cmdline`` is never read: argv is the agent's to forge.
"""

from __future__ import annotations

import itertools
import socket
import threading
from dataclasses import dataclass

from supervisor.binaries import diag, procfs
from supervisor.binaries.globs import matches
from supervisor.binaries.procnet import Address
from supervisor.binaries.trust import TrustStore


class IdentityError(Exception):
    """The connecting process cannot be determined: the connection gets no binary grant."""


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    exe: str
    chain: tuple[str, ...]  # its executable then its ancestors', content as first seen
    replaced: tuple[str, ...]  # executables whose content differs from first use


@dataclass(frozen=True, slots=True)
class ConnectionIdentity:
    holders: tuple[ProcessIdentity, ...]

    @property
    def name(self) -> str:
        """The binary to name in a denial."""
        return ", ".join(dict.fromkeys(h.exe for h in self.holders)) or "(unknown)"

    def allowed(self, patterns: tuple[str, ...]) -> bool:
        """Every process holding the socket runs, or descends from, a listed binary."""
        return bool(self.holders) and all(
            any(matches(p, path) for path in h.chain for p in patterns) for h in self.holders
        )

    def why_denied(self) -> str:
        replaced = sorted({r for h in self.holders for r in h.replaced})
        if replaced:
            return f"binary changed since first use: {', '.join(replaced)}"
        return f"binary {self.name} may not use this endpoint"


class BinaryResolver:
    def __init__(self, init_pid: int, proc: str = "/proc", trust: TrustStore | None = None,
                 diag: socket.socket | None = None):
        self.init_pid = init_pid
        self.proc = proc
        self.trust = trust or TrustStore()
        self.diag = diag  # sock_diag in the sandbox's network namespace (one kernel lookup)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def _inode(self, client: Address, proxy: Address) -> int | None:
        if self.diag is not None:
            try:
                with self._lock:
                    inode = diag.lookup(self.diag, client, proxy, next(self._seq) & 0xFFFFFFFF)
                if inode is not None:
                    return inode
            except (OSError, ValueError):
                pass
        # No sock_diag, or it did not find it: the tables answer too, more slowly.
        return procfs.socket_inode(self.proc, self.init_pid, client, proxy)

    def lookup(self, client: Address, proxy: Address) -> ConnectionIdentity:
        """Raises IdentityError when the owner cannot be established (fail closed)."""
        try:
            inode = self._inode(client, proxy)
            if inode is None:
                raise IdentityError("connection not found in the sandbox's table")
            pids = procfs.socket_holders(
                self.proc, procfs.descendants(self.proc, self.init_pid), inode
            )
            if not pids:
                raise IdentityError("no sandbox process holds the connection")
            return ConnectionIdentity(tuple(self._process(pid) for pid in pids))
        except PermissionError as exc:
            raise IdentityError(
                f"cannot read /proc ({exc.strerror}): the supervisor needs CAP_SYS_PTRACE"
            ) from exc
        except OSError as exc:
            raise IdentityError(f"cannot read /proc: {exc.strerror}") from exc

    def _process(self, pid: int) -> ProcessIdentity:
        chain: list[str] = []
        replaced: list[str] = []
        first: str | None = None
        for member in (pid, *procfs.ancestors(self.proc, pid, self.init_pid)):
            try:
                exe = procfs.exe_of(self.proc, member)
                trusted = self.trust.verify(exe.path, f"{self.proc}/{member}/exe")
            except FileNotFoundError:
                if member == pid:
                    raise IdentityError(f"process {pid} exited") from None
                continue  # an ancestor exited meanwhile: it grants nothing
            if first is None:
                first = exe.path
            (chain if trusted else replaced).append(exe.path)
        if first is None:  # its own executable changed: it is named, and grants nothing
            first = replaced[0]
        return ProcessIdentity(pid, first, tuple(chain), tuple(replaced))
