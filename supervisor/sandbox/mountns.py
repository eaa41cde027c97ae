"""The agent's sanitized mount namespace (ARCHITECTURE.md 3.2).

A private copy of the supervisor's mount namespace in which the Workload API socket's
directory is shadowed by an empty read-only tmpfs. Built on a dedicated thread; the
namespace is kept alive by an fd the spawner later setns()es into. Fails closed: any
step that does not work, or a socket still visible afterwards, is a SetupError.
"""

from __future__ import annotations

import contextlib
import errno
import os

from supervisor.record import field, record
from supervisor.sandbox import linux
from supervisor.sandbox.socket_path import SocketPath
from supervisor.sandbox.threadns import run_on_thread
from supervisor.settings import SetupError

STEP = "mount namespace"
# /proc/thread-self, not /proc/self: only this thread changes namespace (ARCHITECTURE.md S3).
_THREAD_MNT_NS = "/proc/thread-self/ns/mnt"
_TMPFS_FLAGS = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_TMPFS_DATA = "size=4k,nr_inodes=1,mode=000"


@record
class MountNamespace:
    fd: int  # O_CLOEXEC fd of the sanitized namespace
    hidden_directory: str | None
    _closed: list[bool] = field(default_factory=list, compare=False, repr=False)

    def close(self) -> None:
        """Idempotent: ``run`` calls it twice, and a second close(2) of a number another
        thread has since been given closes that thread's file (seen: the proxy thread's)."""
        if self._closed:
            return
        self._closed.append(True)
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


def _make_root_private() -> None:
    """Nothing we mount may propagate back to the host's view, and nothing mounted there
    later may appear here."""
    try:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise SetupError(
                STEP,
                "cannot make / private (EINVAL): / is not a mount point, as under a chroot "
                "into a plain directory; run the supervisor in a container (pivot_root)",
            ) from exc
        raise


def _root_identity() -> tuple[int, int, int]:
    """(device, inode, mount id) of this thread's root directory. The mount id tells a
    chroot into a bind mount of '/' (same device and inode) from the real root."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        with open(f"/proc/thread-self/fdinfo/{fd}", encoding="ascii") as f:
            mnt_id = next((int(ln.split()[1]) for ln in f if ln.startswith("mnt_id:")), -1)
    finally:
        os.close(fd)
    return st.st_dev, st.st_ino, mnt_id


def _require_namespace_root(before: tuple[int, int, int]) -> None:
    """Called on the thread right after setns(): the kernel has just reset its root to the
    namespace's root. If that differs from the root the process had, the supervisor runs
    under chroot, and the sandbox's child (which setns()es too) would hand the agent the
    namespace's real root, outside the chroot."""
    if _root_identity() != before:
        raise SetupError(
            STEP,
            "the supervisor's root directory is not its mount namespace's root (started "
            "under chroot?): entering the agent's namespace would put the agent outside the "
            "chroot; run the supervisor in a container (pivot_root) instead",
        )


def _hidden_directory(path: str) -> str:
    """A directory to shadow (``--credentials-dir``): real path, dedicated, not a shared root."""
    from supervisor.sandbox.socket_path import SHARED_ROOTS

    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise SetupError("--credentials-dir", f"{path} is not a directory")
    if real == "/" or real in SHARED_ROOTS:
        raise SetupError("--credentials-dir", f"{real} is a shared directory; use a dedicated one")
    return real


def _hide(directory: str) -> None:
    linux.mount("tmpfs", directory, "tmpfs", _TMPFS_FLAGS, _TMPFS_DATA)
    if os.listdir(directory):
        raise SetupError(STEP, f"{directory} is not empty after mounting tmpfs")


def _build(socket: SocketPath | None, hidden: tuple[str, ...] = ()) -> MountNamespace:
    original = os.open(_THREAD_MNT_NS, os.O_RDONLY | os.O_CLOEXEC)
    sanitized = -1
    root_before = _root_identity()
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
            _make_root_private()
            if socket is not None:
                linux.mount("tmpfs", socket.directory, "tmpfs", _TMPFS_FLAGS, _TMPFS_DATA)
            if socket is not None:
                _verify_hidden(socket)
            for directory in hidden:
                _hide(directory)
            sanitized = os.open(_THREAD_MNT_NS, os.O_RDONLY | os.O_CLOEXEC)
            if _ns_inode(sanitized) == _ns_inode(original):
                raise SetupError(STEP, "namespace fd still refers to the original namespace")
        finally:
            linux.setns(original, linux.CLONE_NEWNS)
        _require_namespace_root(root_before)
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


def create_sanitized_mount_namespace(
    socket: SocketPath | None, hidden: tuple[str, ...] = ()
) -> MountNamespace:
    """Build the agent's mount namespace; with ``socket``, its directory is hidden, and so
    is each of ``hidden`` (the static credentials' directory)."""
    dirs = tuple(_hidden_directory(d) for d in hidden)
    return run_on_thread("openshell-mountns", lambda: _build(socket, dirs))
