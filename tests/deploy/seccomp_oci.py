"""Load an OCI seccomp profile (the JSON kubelet and runc read) into the calling process.

Test-only: mirrors how runc turns the JSON into a filter through libseccomp (names unknown
on this architecture are skipped; the conditions of one rule are combined with AND; several
rules for one syscall with OR), so a test can run real code under the profile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_ACT_KILL_PROCESS = 0x80000000
_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
_ARCHES = {
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_ARM": "arm",
}


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def syscall_number(name: str) -> int:
    """Native number of a syscall (negative when this architecture lacks it)."""
    return int(libseccomp().seccomp_syscall_resolve_name(name.encode()))


def _action(rule: dict[str, Any], default_errno: int) -> int:
    name = rule["action"]
    if name == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return _ACT_ERRNO | (int(rule.get("errnoRet", default_errno)) & 0xFFFF)
    if name == "SCMP_ACT_KILL_PROCESS":
        return _ACT_KILL_PROCESS
    raise ValueError(f"action not supported by this loader: {name}")


def load_profile(profile: dict[str, Any]) -> None:
    """Install ``profile`` as a seccomp filter on the calling thread (sets no_new_privs)."""
    lib = libseccomp()
    default_errno = int(profile.get("defaultErrnoRet", 1))
    default = _action({"action": profile["defaultAction"]}, default_errno)
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        for arch in profile.get("architectures", []):
            rc = lib.seccomp_arch_add(ctx, lib.seccomp_arch_resolve_name(_ARCHES[arch].encode()))
            if rc not in (0, -17):  # -EEXIST: the native architecture is already there
                raise OSError(-rc, f"seccomp_arch_add({arch})")
        for rule in profile["syscalls"]:
            action = _action(rule, default_errno)
            if action == default:
                continue
            args = rule.get("args") or []
            conds = (_ArgCmp * max(1, len(args)))()
            for i, arg in enumerate(args):
                conds[i] = _ArgCmp(
                    arg["index"], _OPS[arg["op"]], arg["value"], arg.get("valueTwo", 0)
                )
            for name in rule["names"]:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number == -1:  # unknown on this architecture: runc skips it too
                    continue
                rc = lib.seccomp_rule_add_array(ctx, action, number, len(args), conds)
                if rc != 0:
                    raise OSError(-rc, f"seccomp_rule_add({name})")
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            raise OSError(-rc, os.strerror(-rc))
    finally:
        lib.seccomp_release(ctx)
