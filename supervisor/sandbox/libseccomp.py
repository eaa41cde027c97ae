"""A minimal typed ctypes binding to libseccomp.so.2 (only what the agent filter needs).

Only non-variadic entry points are used (``seccomp_rule_add_array``), so no struct is
passed through C varargs. Every failure raises ``SeccompError`` naming the call; libseccomp
reports errors as negative errno values.
"""

from __future__ import annotations

import ctypes
import os
from enum import IntEnum
from types import TracebackType

from supervisor.record import record

LIBRARY = "libseccomp.so.2"

ACT_ALLOW = 0x7FFF0000
ACT_KILL_PROCESS = 0x80000000
_NR_SCMP_ERROR = -1
_EEXIST = 17


def act_errno(err: int) -> int:
    """SCMP_ACT_ERRNO(err): the call fails with ``err`` and does nothing."""
    return 0x00050000 | (err & 0xFFFF)


class Compare(IntEnum):
    NE = 1
    LT = 2
    LE = 3
    EQ = 4
    GE = 5
    GT = 6
    MASKED_EQ = 7  # (arg & datum_a) == datum_b


class Attr(IntEnum):
    ACT_DEFAULT = 1
    ACT_BADARCH = 2
    CTL_NNP = 3


class SeccompError(Exception):
    pass


@record
class Arg:
    """One argument comparison: argument ``index`` ``op`` ``a`` (``b`` for MASKED_EQ)."""

    index: int
    op: Compare
    a: int
    b: int = 0


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _load_library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError:
        from ctypes import util  # only on this unusual path: it costs ~10 ms of imports

        found = util.find_library("seccomp")
        if found is None:
            raise SeccompError(f"{LIBRARY} not found (install libseccomp2)") from None
        lib = ctypes.CDLL(found, use_errno=True)
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    return lib


def _check(result: int, what: str) -> None:
    if result < 0:
        raise SeccompError(f"{what}: {os.strerror(-result)}")


class Filter:
    """A filter under construction; ``load`` installs it on the calling thread's process."""

    def __init__(self, default_action: int) -> None:
        self._lib = _load_library()
        ctx = self._lib.seccomp_init(default_action)
        if not ctx:
            raise SeccompError("seccomp_init failed")
        self._ctx: int | None = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.release()

    def _handle(self) -> int:
        if self._ctx is None:
            raise SeccompError("filter already released")
        return self._ctx

    def release(self) -> None:
        if self._ctx is not None:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def set_attr(self, attr: Attr, value: int) -> None:
        _check(self._lib.seccomp_attr_set(self._handle(), attr, value), f"attr {attr.name}")

    def add_arch(self, name: str) -> None:
        """Also filter syscalls made through another ABI (e.g. 'x86' = int 0x80)."""
        token = self._lib.seccomp_arch_resolve_name(name.encode())
        if token == 0:
            raise SeccompError(f"unknown architecture {name!r}")
        result = self._lib.seccomp_arch_add(self._handle(), token)
        if result != -_EEXIST:  # already in the filter
            _check(result, f"arch_add {name}")

    def syscall_number(self, name: str) -> int:
        number = int(self._lib.seccomp_syscall_resolve_name(name.encode()))
        if number == _NR_SCMP_ERROR:
            raise SeccompError(f"libseccomp does not know the syscall {name!r}")
        return number

    def add_rule(self, action: int, syscall: str, *args: Arg) -> None:
        array = (_ArgCmp * max(1, len(args)))()
        for slot, arg in zip(array, args, strict=False):
            slot.arg, slot.op, slot.datum_a, slot.datum_b = arg.index, arg.op, arg.a, arg.b
        result = self._lib.seccomp_rule_add_array(
            self._handle(), action, self.syscall_number(syscall), len(args), array
        )
        _check(result, f"rule for {syscall}")

    def load(self) -> None:
        _check(self._lib.seccomp_load(self._handle()), "seccomp_load")
