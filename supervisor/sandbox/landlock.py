"""A minimal typed ctypes binding to the three Landlock system calls.

Why our own and not the ``landlock`` package from PyPI: that package is a pre-release
(1.0.0.dev5) without the ABI 6 scoping (signals, abstract UNIX sockets) this sandbox uses,
and the kernel interface it would wrap is three syscalls with two small structures whose
numbers are the same on every architecture (444-446, the unified syscall table). Keeping
the binding here, typed and beside the seccomp one, is less to keep than a dependency.

Nothing here decides policy: ``supervisor.sandbox.fsrules`` computes the rules and
``supervisor.sandbox.confine`` applies them in the sandbox's child.
"""

from __future__ import annotations

import ctypes
import errno
import os
from enum import IntFlag

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1


class AccessFs(IntFlag):
    EXECUTE = 1 << 0
    WRITE_FILE = 1 << 1
    READ_FILE = 1 << 2
    READ_DIR = 1 << 3
    REMOVE_DIR = 1 << 4
    REMOVE_FILE = 1 << 5
    MAKE_CHAR = 1 << 6
    MAKE_DIR = 1 << 7
    MAKE_REG = 1 << 8
    MAKE_SOCK = 1 << 9
    MAKE_FIFO = 1 << 10
    MAKE_BLOCK = 1 << 11
    MAKE_SYM = 1 << 12
    REFER = 1 << 13  # ABI 2
    TRUNCATE = 1 << 14  # ABI 3
    IOCTL_DEV = 1 << 15  # ABI 5


class Scope(IntFlag):
    ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
    SIGNAL = 1 << 1  # ABI 6


# Rights that make sense on a file that is not a directory (the kernel refuses the others
# in a rule whose parent is a regular file or a device).
FILE_RIGHTS = (
    AccessFs.EXECUTE | AccessFs.WRITE_FILE | AccessFs.READ_FILE | AccessFs.TRUNCATE
    | AccessFs.IOCTL_DEV
)
READ_RIGHTS = AccessFs.EXECUTE | AccessFs.READ_FILE | AccessFs.READ_DIR


def fs_rights(abi: int) -> AccessFs:
    """Every filesystem right the kernel of this ABI can handle (0 for no Landlock)."""
    if abi < 1:
        return AccessFs(0)
    rights = AccessFs(0)
    for right in AccessFs:
        rights |= right
    if abi < 2:
        rights &= ~AccessFs.REFER
    if abi < 3:
        rights &= ~AccessFs.TRUNCATE
    if abi < 5:
        rights &= ~AccessFs.IOCTL_DEV
    return rights


def scopes(abi: int) -> Scope:
    return Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL if abi >= 6 else Scope(0)


class LandlockError(OSError):
    pass


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4; never set here (netns does that)
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _call(what: str, *args: object) -> int:
    result = int(_syscall(*args))
    if result < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"{what}: {os.strerror(err)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI; 0 when Landlock is missing or disabled at boot.

    Raises LandlockError for anything else (e.g. EPERM: a seccomp profile blocks it)."""
    try:
        return _call(
            "landlock_create_ruleset", ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
            None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION),
        )
    except LandlockError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


def _attr_size(abi: int) -> int:
    # The older kernel refuses a larger struct only if the extra fields are non-zero; pass
    # the size this ABI knows so the call is exactly what that kernel documents.
    if abi >= 6:
        return ctypes.sizeof(_RulesetAttr)
    if abi >= 4:
        return 16
    return 8


class Ruleset:
    """A Landlock ruleset fd: add path rules, then ``restrict_self`` the calling thread."""

    def __init__(self, handled: AccessFs, scoped: Scope, abi: int) -> None:
        attr = _RulesetAttr(int(handled), 0, int(scoped))
        self.fd: int | None = _call(
            "landlock_create_ruleset", ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET),
            ctypes.byref(attr), ctypes.c_size_t(_attr_size(abi)), ctypes.c_uint32(0),
        )
        self.handled = handled

    def _fd(self) -> int:
        if self.fd is None:
            raise LandlockError(errno.EBADF, "ruleset already closed")
        return self.fd

    def add_path(self, parent_fd: int, allowed: AccessFs) -> None:
        """Allow ``allowed`` beneath the file or directory open as ``parent_fd``."""
        attr = _PathBeneathAttr(int(allowed & self.handled), parent_fd)
        _call(
            "landlock_add_rule", ctypes.c_long(SYS_LANDLOCK_ADD_RULE),
            ctypes.c_int(self._fd()), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(attr),
            ctypes.c_uint32(0),
        )

    def restrict_self(self) -> None:
        """Enforce on this thread (and what it forks and execs); needs no_new_privs."""
        _call(
            "landlock_restrict_self", ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF),
            ctypes.c_int(self._fd()), ctypes.c_uint32(0),
        )

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
