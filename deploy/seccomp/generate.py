"""Generate the seccomp profile of the sandbox container (``openshell-supervisor.json``).

The profile is an allow-list in the OCI runtime format (what kubelet's ``Localhost``
profiles and ``docker run --security-opt seccomp=FILE`` read). Its shape follows the
container runtimes' default profile for a container *without* CAP_SYS_ADMIN, plus
exactly what the supervisor needs for its namespaces:

* ``mount``, ``umount2``, ``setns``: allowed (tmpfs over the socket directory, a
  private ``/``, ``/proc`` of the agent's PID namespace, a fresh ``/sys`` for its network
  namespace and its read-only bind remount, entering namespaces);
* ``setsid``, ``prctl``, ``seccomp``: allowed like in the default profile (the sandbox's
  init starts a session, sets ``no_new_privs`` and loads the agent's own filter);
* ``unshare`` and ``clone``: allowed unless the flags contain ``CLONE_NEWUSER``: the
  supervisor never creates a user namespace, and refusing it keeps the agent away from
  the kernel surface that unprivileged user namespaces expose;
* ``clone3``: ``ENOSYS`` (its flags sit in memory seccomp cannot inspect; the C library
  then falls back to ``clone``, which is filtered);
* everything in ``DENY`` below: ``EPERM``, like any syscall this file does not list
  (a syscall newer than the profile is refused).

Run ``python deploy/seccomp/generate.py > deploy/seccomp/openshell-supervisor.json``; the
syscall names come from the machine's libseccomp (x86_64 and aarch64 tables), so review
the diff when it changes.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

ARCHES = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_AARCH64": "aarch64"}
EPERM = 1
ENOSYS = 38
CLONE_NEWUSER = 0x10000000

# Refused syscalls, with the reason. The supervisor needs none of them; neither does an agent.
DENY: dict[str, str] = {
    # Whole-machine administration: modules, kexec, reboot, swap, clock, accounting, hostname.
    "acct": "process accounting is host-wide",
    "reboot": "host-wide",
    "kexec_load": "loads a new kernel",
    "kexec_file_load": "loads a new kernel",
    "init_module": "kernel modules",
    "finit_module": "kernel modules",
    "delete_module": "kernel modules",
    "create_module": "kernel modules (obsolete)",
    "get_kernel_syms": "kernel modules (obsolete)",
    "query_module": "kernel modules (obsolete)",
    "swapon": "host-wide",
    "swapoff": "host-wide",
    "syslog": "kernel log may leak addresses",
    "sethostname": "no UTS namespace is made; would rename the pod",
    "setdomainname": "as sethostname",
    "settimeofday": "the clock is not namespaced",
    "clock_settime": "the clock is not namespaced",
    "clock_adjtime": "the clock is not namespaced",
    "quotactl": "filesystem administration",
    "quotactl_fd": "filesystem administration",
    "lookup_dcookie": "profiling interface, CAP_SYS_ADMIN only",
    "vhangup": "terminal administration",
    # Raw hardware and legacy interfaces.
    "iopl": "raw I/O ports",
    "ioperm": "raw I/O ports",
    "modify_ldt": "legacy segment tables, a history of kernel bugs",
    "_sysctl": "obsolete",
    "sysfs": "obsolete",
    "ustat": "obsolete",
    "uselib": "obsolete",
    "nfsservctl": "removed from the kernel",
    "afs_syscall": "not implemented",
    "getpmsg": "not implemented",
    "putpmsg": "not implemented",
    "security": "not implemented",
    "tuxcall": "not implemented",
    "vserver": "not implemented",
    "epoll_ctl_old": "not implemented",
    "epoll_wait_old": "not implemented",
    # Large kernel attack surface that neither side needs.
    "bpf": "eBPF programs",
    "perf_event_open": "performance counters leak and have a history of bugs",
    "userfaultfd": "used to widen kernel race windows",
    "io_uring_setup": "io_uring bypasses seccomp for the operations it submits",
    "io_uring_enter": "io_uring",
    "io_uring_register": "io_uring",
    "keyctl": "the kernel keyring is not namespaced",
    "add_key": "the kernel keyring is not namespaced",
    "request_key": "the kernel keyring is not namespaced",
    "fanotify_init": "filesystem-wide monitoring",
    # File handles bypass path checks (the 'shocker' escape).
    "name_to_handle_at": "file handles",
    "open_by_handle_at": "file handles open any inode of the filesystem",
    # The new mount API and root changes: the supervisor uses mount(2) only.
    "open_tree": "new mount API",
    "move_mount": "new mount API",
    "fsopen": "new mount API",
    "fsconfig": "new mount API",
    "fsmount": "new mount API",
    "fspick": "new mount API",
    "mount_setattr": "new mount API",
    "pivot_root": "not used",
    "chroot": "not used",
    # NUMA placement and other processes' memory (CAP_SYS_NICE / CAP_SYS_PTRACE territory).
    "mbind": "NUMA policy",
    "set_mempolicy": "NUMA policy",
    "set_mempolicy_home_node": "NUMA policy",
    "migrate_pages": "moves other processes' memory",
    "move_pages": "moves other processes' memory",
    "kcmp": "compares kernel objects of other processes",
    "pidfd_getfd": "steals file descriptors of other processes",
    "process_madvise": "acts on other processes' memory",
}

# personality(2) values the runtimes' default profiles allow: PER_LINUX, PER_LINUX32,
# UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
PERSONALITY_VALUES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

SPECIAL = {"unshare", "clone", "clone3", "personality"}


def known_syscalls() -> set[str]:
    """Every syscall name libseccomp knows on the profile's architectures."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    names: set[str] = set()
    for arch in ARCHES.values():
        token = lib.seccomp_arch_resolve_name(arch.encode())
        for number in range(1024):
            ptr = lib.seccomp_syscall_resolve_num_arch(token, number)
            if ptr:
                names.add(ctypes.string_at(ptr).decode())
                libc.free(ptr)
    return names


def special_rules() -> list[dict[str, Any]]:
    no_userns = [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    rules: list[dict[str, Any]] = [
        {
            "names": ["unshare", "clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": no_userns,
            "comment": "namespaces for the sandbox, never a user namespace",
        },
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
            "comment": "flags not inspectable: ENOSYS makes the C library fall back to clone",
        },
    ]
    for value in PERSONALITY_VALUES:
        rules.append(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            }
        )
    return rules


def build_profile(names: set[str]) -> dict[str, Any]:
    allowed = sorted(names - set(DENY) - SPECIAL)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHES),
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            *special_rules(),
        ],
    }


def main() -> None:
    json.dump(build_profile(known_syscalls()), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
