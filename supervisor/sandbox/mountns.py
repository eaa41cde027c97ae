"""The agent's sanitized mount namespace (ARCHITECTURE.md 3.2).

A private copy of the supervisor's mount namespace in which the Workload API socket's
directory is shadowed by an empty read-only tmpfs. Built on a dedicated thread; the
namespace is kept alive by an fd the spawner later setns()es into. Fails closed: any
step that does not work, or a socket still visible afterwards, is a SetupError.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from supervisor.sandbox import linux
from supervisor.sandbox.socket_path import SocketPath
from supervisor.sandbox.threadns import run_on_thread
from supervisor.settings import SetupError

STEP = "mount namespace"
# /proc/thread-self, not /proc/self: only this thread changes namespace (ARCHITECTURE.md S3).
_THREAD_MNT_NS = "/proc/thread-self/ns/mnt"
_TMPFS_FLAGS = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_TMPFS_DATA = "size=4k,nr_inodes=1,mode=000"


@dataclass(frozen=True)
class MountNamespace:
    fd: int  # O_CLOEXEC fd of the sanitized namespace
    hidden_directory: str | None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _ns_inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def _verify_hidden(socket: SocketPath) -> None:
    """From inside the new namespace: the socket and anything beside it are gone."""
    if os.path.lexists(socket.path):
        raise SetupError(STEP, f"{socket.path} is still visible after mounting tmpfs")
    if os.listdir(socket.directory):
        raise SetupError(STEP, f"{socket.directory} is not empty after mounting tmpfs")
    if not os.statvfs(socket.directory).f_flag & os.ST_RDONLY:
        raise SetupError(STEP, f"tmpfs on {socket.directory} is not read-only")


def _build(socket: SocketPath | None) -> MountNamespace:
    original = os.open(_THREAD_MNT_NS, os.O_RDONLY | os.O_CLOEXEC)
    sanitized = -1
    host_dev = os.stat(socket.directory).st_dev if socket else None
    try:
        try:
            linux.unshare(linux.CLONE_NEWNS)
        except OSError as exc:
            raise SetupError(
                STEP,
                f"unshare(CLONE_NEWNS) failed ({exc.strerror}); run as root with CAP_SYS_ADMIN",
            ) from exc
        try:
            # Nothing we mount may propagate back to the host's view, and nothing mounted
            # there later may appear here.
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
            if socket is not None:
                linux.mount("tmpfs", socket.directory, "tmpfs", _TMPFS_FLAGS, _TMPFS_DATA)
            if socket is not None:
                _verify_hidden(socket)
            sanitized = os.open(_THREAD_MNT_NS, os.O_RDONLY | os.O_CLOEXEC)
            if _ns_inode(sanitized) == _ns_inode(original):
                raise SetupError(STEP, "namespace fd still refers to the original namespace")
        finally:
            linux.setns(original, linux.CLONE_NEWNS)
        # Back in the original namespace the host's view must be untouched.
        if socket is not None and os.stat(socket.directory).st_dev != host_dev:
            raise SetupError(STEP, f"tmpfs on {socket.directory} leaked into the host namespace")
    except SetupError:
        if sanitized >= 0:
            os.close(sanitized)
        raise
    except OSError as exc:
        if sanitized >= 0:
            os.close(sanitized)
        raise SetupError(STEP, str(exc)) from exc
    finally:
        os.close(original)
    return MountNamespace(fd=sanitized, hidden_directory=socket.directory if socket else None)


def create_sanitized_mount_namespace(socket: SocketPath | None) -> MountNamespace:
    """Build the agent's mount namespace; with ``socket``, its directory is hidden."""
    return run_on_thread("openshell-mountns", lambda: _build(socket))
