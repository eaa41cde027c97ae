"""The shipped seccomp profile: its structure, its agreement with its generator, and its
effect on real system calls (loaded through libseccomp like runc does)."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.conftest import ROOT, SECCOMP_PROFILE
from tests.deploy.probe import CLONE_NEWUSER, run_probe, unshare
from tests.deploy.test_manifests import SUPERVISOR_CAPS

PROFILE: dict[str, Any] = json.loads(SECCOMP_PROFILE.read_text())
NEEDED = {"mount", "umount2", "setns", "unshare", "clone"}
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
    assert {"mount", "umount2", "setns"} <= plain
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
    steps = {k: v for k, v in results.items() if not k.startswith("denied")}
    assert len(steps) == 16
    assert all(ok for ok, _ in steps.values()), {k: v for k, v in steps.items() if not v[0]}
    assert results["denied: unshare user namespace"] == (False, errno.EPERM)
    assert results["denied: bpf"] == (False, errno.EPERM)
    assert results["denied: keyctl"] == (False, errno.EPERM)
    assert results["denied: open_tree"] == (False, errno.EPERM)
    assert results["denied: clone3"] == (False, errno.ENOSYS)


@pytest.mark.privileged
def test_user_namespaces_work_without_the_profile(tmp_path: Path) -> None:
    # Control: the refusal above comes from the profile, not from this kernel.
    pid = os.fork()
    if pid == 0:
        try:
            unshare(CLONE_NEWUSER)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        pytest.skip("this kernel refuses user namespaces by itself")
