"""The agent's own /proc and /sys, mounted by the init in its private mount namespace.

A fresh procfs shows only the agent's PID namespace. A fresh sysfs shows the network
namespace the init is in when it mounts it (so /sys/class/net lists only ``lo`` with the
isolated network) and none of the host's submounts under /sys (cgroup, debugfs, ...).
If sysfs cannot be mounted, /sys is covered by an empty read-only tmpfs instead: the
agent loses /sys (programs fall back to /proc) rather than seeing the host's interfaces.
If neither works the caller fails the run (125).
"""

from __future__ import annotations

import errno
import os

from supervisor.sandbox import linux

_FLAGS = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_READ_ONLY_AGAIN = linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | _FLAGS
_EMPTY_TMPFS = "size=4k,nr_inodes=1,mode=555"
CLASS_NET = "/sys/class/net"


def mount_proc() -> None:
    linux.mount("proc", "/proc", "proc", _FLAGS, None)


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
    """Mount the agent's /sys; return a warning when only the fallback worked.

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
    return None
