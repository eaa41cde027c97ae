"""Run check-isolation as an unprivileged process under a seccomp filter that is NOT the
agent filter: one that refuses unshare and a few others with EPERM, as a container
runtime's default profile does (test driver for the fingerprint check)."""

from __future__ import annotations

import errno
import os
import sys

from supervisor.sandbox import linux
from supervisor.sandbox.libseccomp import ACT_ALLOW, Filter, act_errno

os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
with Filter(ACT_ALLOW) as flt:
    for name in ("unshare", "setns", "mount", "ptrace", "keyctl", "bpf"):
        flt.add_rule(act_errno(errno.EPERM), name)
    flt.load()
os.execv(sys.executable, [sys.executable, "-m", "supervisor", "check-isolation", "--json"])
