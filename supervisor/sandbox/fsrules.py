"""Which paths the agent may reach under Landlock, and how (ARCHITECTURE.md 10). No I/O.

Inputs: the policy's ``filesystem_policy`` and ``landlock`` sections, the agent's working
directory, what the sandbox itself needs whatever the policy lists (the init and the
files it loads: read and execute; the CA bundles the agent's variables name: read), and
the directories that must stay unreachable (the Workload API socket's). The output is a
plan the sandbox's child applies (``supervisor.sandbox.confine``) after joining the
agent's namespaces, where the paths are opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

from supervisor.record import record

Rights = Literal["read", "read_write"]


@record
class FsPolicy:
    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    include_workdir: bool = False
    hard_requirement: bool = False  # landlock.compatibility


@record
class PathRule:
    path: str
    rights: Rights
    origin: str  # field path ("filesystem_policy.read_only[2]") or "sandbox: <why>"

    @property
    def own(self) -> bool:
        """The sandbox's own need: never skipped, whatever the compatibility mode."""
        return self.origin.startswith("sandbox:")


@record
class LandlockPlan:
    rules: tuple[PathRule, ...]
    hard_requirement: bool
    warnings: tuple[str, ...] = ()


def _beneath(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def plan_rules(
    policy: FsPolicy,
    workdir: str | None,
    own_exec: Iterable[str] = (),
    own_read: Iterable[str] = (),
    hidden: Iterable[str] = (),
) -> LandlockPlan:
    """The rules to apply. Paths must be absolute (the policy loader checked its own)."""
    hidden_dirs = tuple(os.path.normpath(h) for h in hidden)
    warnings: list[str] = []
    rules: list[PathRule] = []

    def add(path: str, rights: Rights, origin: str) -> None:
        norm = os.path.normpath(path)
        if any(_beneath(norm, h) for h in hidden_dirs):
            # Shadowed by an empty tmpfs in the agent's mount namespace: nothing to allow.
            warnings.append(f"{origin}: {norm} is hidden from the agent (Workload API socket)")
            return
        rules.append(PathRule(norm, rights, origin))

    for i, path in enumerate(policy.read_only):
        add(path, "read", f"filesystem_policy.read_only[{i}]")
    for i, path in enumerate(policy.read_write):
        add(path, "read_write", f"filesystem_policy.read_write[{i}]")
    if policy.include_workdir and workdir is not None:
        if os.path.normpath(workdir) == "/":
            warnings.append("filesystem_policy.include_workdir: the working directory is /; "
                            "not made writable")
        else:
            add(workdir, "read_write", "filesystem_policy.include_workdir")
    for path in own_exec:
        add(path, "read", "sandbox: the init")
    for path in own_read:
        add(path, "read", "sandbox: CA bundle")
    return LandlockPlan(tuple(rules), policy.hard_requirement, tuple(warnings))
