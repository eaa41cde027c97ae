"""Agent-side probe: call each syscall the agent filter refuses, print {name: errno name}.

Arguments are harmless whether or not a filter is in force (this also runs unfiltered,
as an unprivileged user, as the negative control). Syscall numbers come from libseccomp.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
TIOCSTI = 0x5412
UFFD_USER_MODE_ONLY = 1
PTRACE_ATTACH = 16

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]

# name -> arguments; every other refused syscall gets zeros (NULL pointers, fd 0 or -1).
ARGS: dict[str, tuple[int, ...]] = {
    "unshare": (0,),  # a no-op when allowed
    "setns": (-1, 0),
    "ptrace": (PTRACE_ATTACH, -1),
    "userfaultfd": (UFFD_USER_MODE_ONLY,),  # allowed unprivileged when not filtered
    "io_uring_enter": (-1,),
    "io_uring_register": (-1,),
    "open_tree": (-1,),
    "fsconfig": (-1,),
    "fsmount": (-1,),
    "fspick": (-1,),
    "move_mount": (-1, 0, -1),
    "mount_setattr": (-1,),
    "pidfd_getfd": (-1,),
    "name_to_handle_at": (-1,),
    "open_by_handle_at": (-1,),
    "finit_module": (-1,),
    "io_uring_setup": (1,),
}
# Calls that return a new fd when they succeed.
RETURNS_FD = {"userfaultfd", "io_uring_setup", "fsopen", "open_tree", "perf_event_open",
              "fspick", "fsmount"}


def call(name: str, *args: int) -> str:
    number = seccomp.seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        return "unknown"
    argv = [ctypes.c_long(a) for a in args]
    result = libc.syscall(ctypes.c_long(number), *argv)
    if result == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    if name in RETURNS_FD:
        os.close(result)
    return "ok"


def clone_newuser() -> str:
    number = seccomp.seccomp_syscall_resolve_name(b"clone")
    pid = libc.syscall(ctypes.c_long(number), ctypes.c_long(CLONE_NEWUSER | SIGCHLD),
                       *[ctypes.c_long(0)] * 4)
    if pid == 0:
        os._exit(0)  # the child of an unfiltered clone leaves at once
    if pid < 0:
        return errno.errorcode.get(ctypes.get_errno(), "?")
    os.waitpid(pid, 0)
    return "ok"


def main() -> None:
    names = sys.argv[1].split(",")
    results = {name: call(name, *ARGS.get(name, ())) for name in names}
    results["clone3"] = call("clone3")
    results["clone(CLONE_NEWUSER)"] = clone_newuser()
    # stdin is not a terminal here: unfiltered TIOCSTI fails with ENOTTY, not EPERM.
    ioctl = seccomp.seccomp_syscall_resolve_name(b"ioctl")
    char = ctypes.c_char(b"x")
    for label, request in (("TIOCSTI", TIOCSTI), ("TIOCSTI|1<<32", TIOCSTI | 1 << 32)):
        result = libc.syscall(ctypes.c_long(ioctl), ctypes.c_long(0), ctypes.c_long(request),
                              ctypes.byref(char))
        results[f"ioctl({label})"] = errno.errorcode[ctypes.get_errno()] if result == -1 else "ok"
    results["Seccomp"] = next(
        line.split()[1] for line in open("/proc/self/status") if line.startswith("Seccomp:")
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
