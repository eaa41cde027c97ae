"""``check-isolation``'s ``landlock`` check (ARCHITECTURE.md 10): the kernel's ABI, and
whether this process is confined - a file is created where permissions allow it; Landlock
refusing it (EACCES although ``access()``, which Landlock does not consult, says yes) is
a write outside ``read_write`` refused."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Sequence

# Directories an unprivileged agent may usually write to, permission-wise.
CANDIDATES = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - probed, not used for data


def probe_write(directories: Sequence[str]) -> tuple[list[str], list[str]]:
    """(refused by something other than permissions, allowed) among writable directories."""
    refused: list[str] = []
    allowed: list[str] = []
    for directory in directories:
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            continue
        path = os.path.join(directory, f".openshell-landlock-probe-{os.getpid()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.EACCES:
                refused.append(directory)
            continue
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        allowed.append(directory)
    return refused, allowed


def landlock_status(expect: bool, directories: Sequence[str] = CANDIDATES) -> tuple[bool, str]:
    """(ok, detail). Not confined is fine unless ``expect`` (a policy was given)."""
    from supervisor.sandbox.landlock import LandlockError, abi_version

    try:
        abi = abi_version()
    except LandlockError as exc:
        return not expect, f"unavailable ({exc.strerror})"
    if abi == 0:
        return not expect, "not supported by this kernel"
    refused, allowed = probe_write([*directories, os.getcwd()])
    if refused:
        return True, (f"ABI {abi}, enforced: a write outside read_write refused "
                      f"({', '.join(refused)})"
                      + (f"; writable: {', '.join(allowed)}" if allowed else ""))
    where = ", ".join(allowed) or "no probe directory"
    return not expect, f"ABI {abi}, not enforced (writes allowed in {where})"
