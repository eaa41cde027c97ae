"""Apply a Landlock plan in the sandbox's child (ARCHITECTURE.md 10).

Two steps, because of the order in the child: ``prepare`` runs after the child joined the
agent's namespaces and before it drops its identity (paths are opened as root, in the
agent's mount namespace, with O_PATH); ``enforce`` runs after the drop (``no_new_privs``
is set then) and before seccomp. Filesystem rights are those the kernel's ABI handles;
signal and abstract-socket scoping where the ABI has them (6+); no network rules (the
agent's network namespace does that).

``best_effort``: warn and skip what cannot be applied (a missing path; Landlock absent).
``hard_requirement``: any of these is a ``ConfineError`` naming the path or the feature;
the run exits 125. The sandbox's own rules (the init, the CA bundles) are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable

from supervisor.record import field, record
from supervisor.sandbox import landlock
from supervisor.sandbox.fsrules import LandlockPlan
from supervisor.sandbox.landlock import AccessFs

# Hard requirement: every filesystem right must be handled (truncate: ABI 3, ioctl on
# devices: ABI 5); scoping (ABI 6) is not filesystem isolation and stays a warning.
HARD_MIN_ABI = 5
_FEATURES = ((2, "refer (cross-directory links and renames)"), (3, "truncate"),
             (5, "ioctl on devices"), (6, "signal and abstract-socket scoping"))


class ConfineError(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@record(frozen=False)
class Prepared:
    """A ruleset ready to enforce, with what was skipped."""

    ruleset: landlock.Ruleset | None  # None: run without Landlock (best_effort only)
    abi: int
    hard: bool
    warnings: list[str] = field(default_factory=list)
    applied: int = 0


def _rights(rights: str, handled: AccessFs) -> AccessFs:
    return handled if rights == "read_write" else landlock.READ_RIGHTS & handled


def prepare(
    plan: LandlockPlan,
    abi: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Prepared:
    """Build the ruleset; ``abi`` overrides the kernel's (to simulate an older one)."""
    warnings = list(plan.warnings)
    hard = plan.hard_requirement
    try:
        kernel_abi = landlock.abi_version()
    except landlock.LandlockError as exc:
        if hard:
            raise ConfineError("landlock", f"unavailable: {exc.strerror}") from exc
        kernel_abi = 0
        warnings.append(f"landlock: unavailable ({exc.strerror})")
    abi = kernel_abi if abi is None else min(abi, kernel_abi)
    if abi < 1:
        if hard:
            raise ConfineError("landlock", "not supported by this kernel (hard_requirement)")
        warnings.append("landlock: not supported by this kernel; running WITHOUT filesystem "
                        "restrictions (set landlock.compatibility: hard_requirement to refuse)")
        return _done(Prepared(None, 0, hard, warnings), warn)
    for needed, feature in _FEATURES:
        if abi < needed:
            if hard and needed <= HARD_MIN_ABI:
                raise ConfineError("landlock", f"kernel ABI {abi} cannot restrict {feature} "
                                   f"(hard_requirement needs ABI {HARD_MIN_ABI})")
            warnings.append(f"landlock: kernel ABI {abi} cannot restrict {feature}")
    handled = landlock.fs_rights(abi)
    try:
        ruleset = landlock.Ruleset(handled, landlock.scopes(abi), abi)
    except landlock.LandlockError as exc:
        if hard:
            raise ConfineError("landlock", f"cannot create the ruleset: {exc.strerror}") from exc
        warnings.append(f"landlock: cannot create the ruleset ({exc.strerror}); running "
                        "WITHOUT filesystem restrictions")
        return _done(Prepared(None, abi, hard, warnings), warn)
    prepared = Prepared(ruleset, abi, hard, warnings)
    policy_rules = 0
    try:
        for rule in plan.rules:
            policy_rules += 0 if rule.own else 1
            if _add(ruleset, rule.path, _rights(rule.rights, handled), rule.origin,
                    hard or rule.own, prepared.warnings):
                prepared.applied += 0 if rule.own else 1
    except BaseException:
        ruleset.close()
        raise
    if policy_rules and not prepared.applied:
        # As OpenShell: an allow-list with nothing on it would lock the agent out of all.
        ruleset.close()
        prepared.ruleset = None
        prepared.warnings.append("landlock: no listed path could be opened; running WITHOUT "
                                 "filesystem restrictions")
    return _done(prepared, warn)


def _done(prepared: Prepared, warn: Callable[[str], None] | None) -> Prepared:
    if warn is not None:
        for message in prepared.warnings:
            warn(message)
    return prepared


def _add(ruleset: landlock.Ruleset, path: str, rights: AccessFs, origin: str, fatal: bool,
         warnings: list[str]) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        reason = "path does not exist" if isinstance(exc, FileNotFoundError) else exc.strerror
        if fatal:
            raise ConfineError(origin, f"{path}: {reason}") from exc
        warnings.append(f"landlock: {origin}: skipped {path} ({reason})")
        return False
    try:
        # Directory-only rights are invalid on a file: tailor on the fd we add (no race).
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= landlock.FILE_RIGHTS
        ruleset.add_path(fd, rights)
    except OSError as exc:
        if fatal:
            raise ConfineError(origin, f"{path}: {exc.strerror}") from exc
        warnings.append(f"landlock: {origin}: skipped {path} ({exc.strerror})")
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return True


def enforce(prepared: Prepared) -> None:
    """Restrict this process (after the privilege drop: no_new_privs is set)."""
    ruleset = prepared.ruleset
    if ruleset is None:
        return
    try:
        ruleset.restrict_self()
    except landlock.LandlockError as exc:
        if prepared.hard:
            raise ConfineError("landlock", f"restrict_self: {exc.strerror}") from exc
        with contextlib.suppress(OSError):
            os.write(2, f"openshell-supervisor: warning: landlock: restrict_self failed "
                        f"({exc.strerror}); running WITHOUT filesystem restrictions\n".encode())
    finally:
        ruleset.close()
