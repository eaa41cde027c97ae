"""The agent's own /proc and /sys, mounted by the init in its private mount namespace.

A fresh procfs shows only the agent's PID namespace. A fresh sysfs shows the network
namespace the init is in when it mounts it (so /sys/class/net lists only ``lo`` with the
isolated network) and none of the host's submounts under /sys (cgroup, debugfs, ...).
If sysfs cannot be mounted, /sys is covered by an empty read-only tmpfs instead: the
agent loses /sys (programs fall back to /proc) rather than seeing the host's interfaces.
If neither works the caller fails the run (125).

A fresh mount also shows again what container runtimes mask in the container's /proc and
/sys (kernel memory, keyrings, timer and scheduler internals, firmware tables), so both are
masked again right after mounting, while still root: files under /dev/null, directories
under an empty read-only tmpfs, writable /proc trees (/proc/sys, ...) bound read-only on
themselves. A path that does not exist is skipped. Failing to mask an essential path
(``ESSENTIAL``) fails the run; the others are best-effort and only warn, because an LSM
may forbid e.g. tmpfs mounts where the kernel interfaces behind them matter much less.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Sequence

from supervisor.sandbox import linux

_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_READ_ONLY_AGAIN = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | _FLAGS
_EMPTY_TMPFS = "size=4k,nr_inodes=1,mode=555"
CLASS_NET = "/sys/class/net"
DEV_NULL = "/dev/null"

# Shared with check-isolation (supervisor.sandbox.isolation keeps its own copy so that its
# import stays light; tests/sandbox/test_masked_paths.py asserts the two agree).
MASKED_FILES = (
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/sysrq-trigger",
    "/proc/kallsyms",
)
READ_ONLY_DIRS = ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq")
EMPTY_PROC_DIRS = ("/proc/acpi", "/proc/scsi", "/proc/asound")
EMPTY_SYS_DIRS = ("/sys/firmware", "/sys/devices/virtual/powercap")
ESSENTIAL = frozenset(
    {
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/sysrq-trigger",
        "/proc/sys",
    }
)


class MaskingError(OSError):
    """An essential path exists but could not be masked (the run fails: 125)."""


def _is_dev_null(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def _mask_file(path: str) -> None:
    if not _is_dev_null(DEV_NULL):
        # The image's /dev/null could be anything; binding it over /proc/keys must not
        # turn into showing the agent a file of the image's choosing.
        raise OSError(errno.ENODEV, f"{DEV_NULL} is not the null device")
    linux.mount(DEV_NULL, path, None, linux.MS_BIND, None)
    # Hardening of the bind only: the mask already holds without it. With MS_NODEV the
    # agent's open() of the masked file fails with EACCES rather than reading nothing.
    with contextlib.suppress(OSError):
        linux.mount(None, path, None, _READ_ONLY_AGAIN, None)


def _bind_read_only(path: str) -> None:
    linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC, None)
    linux.mount(None, path, None, _READ_ONLY_AGAIN, None)
    if not os.statvfs(path).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, f"{path} is not read-only after remounting it")


def _cover_with_empty_tmpfs(path: str) -> None:
    linux.mount("tmpfs", path, "tmpfs", _FLAGS | linux.MS_RDONLY, _EMPTY_TMPFS)
    if os.listdir(path):
        raise OSError(errno.ENOTEMPTY, f"{path} is not empty after mounting tmpfs")


def _mask_all(steps: Sequence[tuple[str, Callable[[str], None]]]) -> str | None:
    """Apply each (path, masker) whose path exists. Raise MaskingError when an essential
    one fails; return a warning naming the best-effort ones that failed."""
    failures: list[str] = []
    for path, masker in steps:
        if not os.path.lexists(path):
            continue
        try:
            masker(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if path in ESSENTIAL:
                raise MaskingError(f"{path}: {reason}") from exc
            failures.append(f"{path}: {reason}")
    return "cannot mask " + "; ".join(failures) if failures else None


def mask_proc() -> str | None:
    """Mask the fresh /proc (see the module docstring); a warning for best-effort failures."""
    steps: list[tuple[str, Callable[[str], None]]] = [(p, _mask_file) for p in MASKED_FILES]
    steps += [(p, _cover_with_empty_tmpfs) for p in EMPTY_PROC_DIRS]
    steps += [(p, _bind_read_only) for p in READ_ONLY_DIRS]
    return _mask_all(steps)


def mount_proc() -> str | None:
    """Mount the agent's /proc and mask it; return a warning for best-effort failures.

    Raises OSError when /proc cannot be mounted, MaskingError when an essential path
    shows through."""
    linux.mount("proc", "/proc", "proc", _FLAGS, None)
    return mask_proc()


def _mount_sysfs() -> None:
    try:
        linux.mount("sysfs", "/sys", "sysfs", _FLAGS, None)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        # --network host: this namespace's sysfs is the one already on /sys, and the
        # kernel refuses to stack it on itself. A plain bind drops its submounts.
        linux.mount("/sys", "/sys", None, linux.MS_BIND, None)
    # Read-only per mount, not per superblock (the host's sysfs superblock is shared).
    linux.mount(None, "/sys", None, _READ_ONLY_AGAIN, None)


def mount_sys(isolated_network: bool) -> str | None:
    """Mount the agent's /sys; return a warning when only the fallback worked or a
    best-effort mask failed.

    Raises OSError when /sys stays the host's, or when the fresh view still shows an
    interface other than ``lo`` with an isolated network."""
    if not os.path.isdir("/sys"):
        return None  # no /sys in this image: nothing of the host's to hide
    try:
        _mount_sysfs()
    except OSError as exc:
        linux.mount("tmpfs", "/sys", "tmpfs", _FLAGS | linux.MS_RDONLY, _EMPTY_TMPFS)
        if os.listdir("/sys"):
            raise OSError(0, "/sys is not empty after mounting tmpfs") from exc
        return f"cannot mount sysfs ({exc.strerror}); the agent's /sys is empty"
    if not os.statvfs("/sys").f_flag & os.ST_RDONLY:
        raise OSError(0, "/sys is not read-only after remounting it")
    if isolated_network:
        names = sorted(os.listdir(CLASS_NET))
        if names != ["lo"]:
            raise OSError(0, f"{CLASS_NET} shows {names} in the agent's network namespace")
    return _mask_all([(p, _cover_with_empty_tmpfs) for p in EMPTY_SYS_DIRS])
