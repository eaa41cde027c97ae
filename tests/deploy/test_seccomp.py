"""The shipped seccomp profile: its structure, its agreement with its generator, and its
effect on real system calls (loaded through libseccomp like runc does)."""

from __future__ import annotations

import errno
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.conftest import ROOT, SECCOMP_PROFILE
from tests.deploy.probe import CLONE_NEWUSER, DENIED_STEPS, STEPS, run_probe
from tests.deploy.test_manifests import SUPERVISOR_CAPS

PROFILE: dict[str, Any] = json.loads(SECCOMP_PROFILE.read_text())
# Allowed without conditions: the supervisor's mounts (tmpfs, /proc, sysfs, the read-only
# bind remount of /sys) and namespace changes, the init's session, and loading the agent's
# filter (seccomp(2), or prctl(PR_SET_SECCOMP) where libseccomp falls back to it).
NEEDED = {"mount", "umount2", "setns", "setsid", "seccomp", "prctl"}
OCI_RULE_KEYS = {"names", "action", "args", "errnoRet", "comment"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "seccomp_generate", ROOT / "deploy/seccomp/generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def allowed_unconditionally() -> set[str]:
    return {
        name
        for rule in PROFILE["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def test_oci_structure() -> None:
    assert PROFILE["defaultAction"] == "SCMP_ACT_ERRNO"
    assert PROFILE["defaultErrnoRet"] == errno.EPERM
    assert PROFILE["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]
    for rule in PROFILE["syscalls"]:
        assert set(rule) <= OCI_RULE_KEYS
        assert rule["names"] and all(isinstance(n, str) for n in rule["names"])
        for arg in rule.get("args", []):
            assert set(arg) == {"index", "value", "valueTwo", "op"}


def test_supervisor_syscalls_allowed_and_user_namespaces_refused() -> None:
    plain = allowed_unconditionally()
    assert NEEDED <= plain
    assert not {"unshare", "clone", "clone3"} & plain
    (ns_rule,) = [r for r in PROFILE["syscalls"] if "unshare" in r["names"]]
    assert sorted(ns_rule["names"]) == ["clone", "unshare"]
    assert ns_rule["args"] == [
        {"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    (clone3,) = [r for r in PROFILE["syscalls"] if "clone3" in r["names"]]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", errno.ENOSYS)


def test_profile_matches_its_generator() -> None:
    gen = generator()
    plain = allowed_unconditionally()
    assert not plain & set(gen.DENY), "a denied syscall is allowed"
    # The committed file is the generator's output for the names it lists.
    names = plain | set(gen.DENY) | gen.SPECIAL
    assert gen.build_profile(names) == PROFILE


def test_generator_denies_the_dangerous_ones() -> None:
    deny = set(generator().DENY)
    for name in (
        "bpf",
        "kexec_load",
        "init_module",
        "open_by_handle_at",
        "keyctl",
        "io_uring_setup",
        "perf_event_open",
        "userfaultfd",
        "open_tree",
        "pivot_root",
    ):
        assert name in deny


@pytest.mark.privileged
def test_supervisor_steps_work_under_the_profile(tmp_path: Path) -> None:
    socket_dir = tmp_path / "spiffe-workload-api"
    socket_dir.mkdir()
    results = run_probe(sorted(SUPERVISOR_CAPS), str(socket_dir), PROFILE)
    assert set(results) == {*STEPS, *DENIED_STEPS}
    steps = {k: v for k, v in results.items() if k in STEPS}
    assert all(step.ok for step in steps.values()), {k: v for k, v in steps.items() if not v.ok}
    denied = {k: results[k][:2] for k in DENIED_STEPS}
    assert denied == {
        "denied: unshare user namespace": (False, errno.EPERM),
        "denied: bpf": (False, errno.EPERM),
        "denied: keyctl": (False, errno.EPERM),
        "denied: open_tree": (False, errno.EPERM),
        "denied: clone3": (False, errno.ENOSYS),
    }


def without(profile: dict[str, Any], names: set[str]) -> dict[str, Any]:
    rules = [
        {**rule, "names": [n for n in rule["names"] if n not in names]}
        for rule in profile["syscalls"]
    ]
    return {**profile, "syscalls": [rule for rule in rules if rule["names"]]}


@pytest.mark.privileged
@pytest.mark.parametrize(
    ("removed", "refused"),
    [
        ({"setsid"}, "init: setsid"),
        ({"seccomp"}, "init: load the agent's seccomp filter"),
        ({"mount"}, "make / private"),
        ({"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"},
         "init: open the Landlock paths"),
    ],
)
def test_the_probe_needs_what_the_profile_allows(
    tmp_path: Path, removed: set[str], refused: str
) -> None:
    # Control: the steps above really go through the profile (a profile without these
    # syscalls breaks the setup exactly there).
    socket_dir = tmp_path / "spiffe-workload-api"
    socket_dir.mkdir()
    results = run_probe(sorted(SUPERVISOR_CAPS), str(socket_dir), without(PROFILE, removed))
    assert {k for k, v in results.items() if not v.ok and k in STEPS} == {refused}


@pytest.mark.privileged
def test_user_namespaces_work_without_the_profile() -> None:
    # Control: the refusal above comes from the profile, not from this kernel. In a fresh
    # interpreter: a fork of this process may be multi-threaded (gRPC restarts its threads
    # in every child once the e2e servers ran), and unshare(CLONE_NEWUSER) then fails with
    # EINVAL whatever the kernel allows.
    proc = subprocess.run(
        [sys.executable, "-E", "-s", "-c", USERNS_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    if proc.returncode != 0:
        pytest.skip(f"this kernel refuses user namespaces by itself: {proc.stdout.strip()}")


USERNS_SCRIPT = """
import sys
from tests.deploy.probe import CLONE_NEWUSER, unshare
try:
    unshare(CLONE_NEWUSER)
except OSError as err:
    print(err)
    sys.exit(1)
"""
