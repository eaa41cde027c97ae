"""The agent's seccomp filter: allow by default, refuse what an agent never needs.

Installed by the sandbox's child after no_new_privs and before it execs the init, so the
agent (and everything it runs) inherits it from its first instruction, and the init runs
under it too. The refused calls are kernel attack surface or ways out of the sandbox's
namespaces: mounting, namespaces (user namespaces in particular, which would hand the
agent capabilities over new ones), tracing and cross-process memory access, keyrings,
BPF and perf, modules and kexec, handle-based opens, userfaultfd, io_uring, clock and
swap and reboot controls, and terminal input injection (TIOCSTI, TIOCLINUX). They fail
with EPERM. ``clone3`` fails with ENOSYS instead: its flags live in memory a filter cannot
read, and libc then falls back to ``clone``, whose flags are checked here. Sockets: only
unix, inet, inet6 and netlink's route protocol (vsock, packet, bluetooth, other netlink
protocols... fail with EAFNOSUPPORT / EPROTONOSUPPORT; see filter_marks). One marker rule
(filter_marks) lets check-isolation tell this filter from any other.

Syscalls made through the compat ABIs (i386 ``int 0x80`` on x86_64, AArch32 on arm64)
are filtered by the same rules. Any failure to build or load the filter is an error: the
caller fails the run (125) rather than start the agent without it.
"""

from __future__ import annotations

import errno
import os

from supervisor.sandbox import filter_marks
from supervisor.sandbox.libseccomp import ACT_ALLOW, Arg, Attr, Compare, Filter, act_errno

DENIED = (
    "mount", "umount2", "mount_setattr", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "pivot_root", "setns", "unshare",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "open_by_handle_at", "name_to_handle_at", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "acct", "quotactl",
    "lookup_dcookie", "iopl", "ioperm", "syslog", "vhangup",
)  # fmt: skip

# clone() flags that create namespaces: refused even though the agent has no capabilities,
# because CLONE_NEWUSER alone grants a full set inside the new user namespace.
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
# ioctl requests that push input into a terminal.
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
_IOCTL_CMD_MASK = 0xFFFFFFFF  # the kernel truncates the request to 32 bits; so must we
_INT_MASK = 0xFFFFFFFF  # an int argument: only the register's lower half counts
# socketcall(2) call numbers.
_SYS_SOCKET = 1
_SYS_SOCKETPAIR = 8

# Other ABIs the kernel may accept from a process of this architecture.
_COMPAT_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",)}


class SeccompSetupError(Exception):
    pass


def _compat_arches() -> tuple[str, ...]:
    return _COMPAT_ARCHES.get(os.uname().machine, ())


def build_agent_filter() -> Filter:
    """The filter, not loaded yet; the caller releases it."""
    deny = act_errno(errno.EPERM)
    flt = Filter(ACT_ALLOW)
    try:
        for arch in _compat_arches():
            flt.add_arch(arch)
        for name in DENIED:
            flt.add_rule(deny, name)
        flt.add_rule(act_errno(errno.ENOSYS), "clone3")
        for flag in CLONE_NAMESPACE_FLAGS.values():
            flt.add_rule(deny, "clone", Arg(0, Compare.MASKED_EQ, flag, flag))
        for request in (TIOCSTI, TIOCLINUX):
            flt.add_rule(deny, "ioctl", Arg(1, Compare.MASKED_EQ, _IOCTL_CMD_MASK, request))
        _add_socket_rules(flt)
        flt.add_rule(
            act_errno(filter_marks.MARK_ERRNO),
            "prctl",
            Arg(0, Compare.MASKED_EQ, _INT_MASK, filter_marks.MARK_PRCTL_OPTION),
        )
    except BaseException:
        flt.release()
        raise
    return flt


def _add_socket_rules(flt: Filter) -> None:
    """Only the address families the agent needs (filter_marks.ALLOWED_FAMILIES).

    Families are ints: the kernel ignores a register's upper half, so the comparison does
    too (MASKED_EQ on the low 32 bits), else AF_VSOCK | 1 << 32 would pass. The compat
    ``socketcall`` multiplexer (32-bit x86) passes its arguments in memory, where a filter
    cannot read the family: creating sockets through it is refused outright (32-bit
    programs using socket(2) directly are filtered like 64-bit ones)."""
    no_family = act_errno(errno.EAFNOSUPPORT)
    for family in range(filter_marks.FAMILY_LIMIT):
        if family not in filter_marks.ALLOWED_FAMILIES:
            for call in ("socket", "socketpair"):
                flt.add_rule(no_family, call, Arg(0, Compare.MASKED_EQ, _INT_MASK, family))
    # Netlink beyond routing (sock_diag, uevents, audit, netfilter, ...): kernel surface the
    # agent has no use for. Any bit set in the protocol counts, upper half included.
    flt.add_rule(
        act_errno(errno.EPROTONOSUPPORT),
        "socket",
        Arg(0, Compare.MASKED_EQ, _INT_MASK, filter_marks.AF_NETLINK),
        Arg(2, Compare.NE, filter_marks.NETLINK_ROUTE),
    )
    for number in (_SYS_SOCKET, _SYS_SOCKETPAIR):
        flt.add_rule(no_family, "socketcall", Arg(0, Compare.MASKED_EQ, _INT_MASK, number))


def install_agent_filter() -> None:
    """Load the filter into this process (no_new_privs must already be set)."""
    try:
        with build_agent_filter() as flt:
            flt.set_attr(Attr.CTL_NNP, 0)  # no_new_privs is ours to set, and it is set
            flt.load()
    except Exception as exc:
        raise SeccompSetupError(str(exc)) from exc
    if _seccomp_mode() != 2:
        raise SeccompSetupError("the filter is not in force after loading it")


def _seccomp_mode() -> int:
    with open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return -1
