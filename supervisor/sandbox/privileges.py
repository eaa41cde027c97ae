"""Irreversible privilege drop of the sandbox init (and so of the agent it forks).

Order matters: the bounding set can only be dropped while CAP_SETPCAP is effective, i.e.
before setuid; setuid to a non-zero uid then clears the permitted, effective and ambient
sets; the inheritable set survives setuid and is cleared explicitly. PR_SET_PDEATHSIG is
reset by a credential change, so it comes last. The result is verified from
/proc/self/status and anything short of all-zero is an error (fail closed).
"""

from __future__ import annotations

import os
import resource
import signal

from supervisor.sandbox import linux

CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


class PrivilegeError(Exception):
    pass


def read_status(path: str = "/proc/self/status") -> dict[str, str]:
    fields: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
    return fields


def drop_privileges(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    if uid == 0:
        raise PrivilegeError("refusing to run the agent as uid 0")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for cap in range(linux.cap_last_cap() + 1):
        linux.prctl(linux.PR_CAPBSET_DROP, cap)
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    linux.clear_capabilities()
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    linux.set_dumpable(False)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    verify_dropped(uid)


def verify_dropped(uid: int, status: dict[str, str] | None = None) -> None:
    fields = read_status() if status is None else status
    nonzero = [name for name in CAP_FIELDS if int(fields.get(name, "1"), 16) != 0]
    if nonzero:
        raise PrivilegeError(f"capability sets not empty after drop: {', '.join(nonzero)}")
    if fields.get("NoNewPrivs") != "1":
        raise PrivilegeError("no_new_privs is not set")
    uids = {int(u) for u in fields.get("Uid", "0").split()}
    if uids != {uid}:
        raise PrivilegeError(f"uids are {sorted(uids)}, expected {uid}")
