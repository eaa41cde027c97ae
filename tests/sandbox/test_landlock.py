"""Landlock on this kernel (root): the binding, the plan, best_effort and hard_requirement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from supervisor.sandbox import landlock
from supervisor.sandbox.fsrules import FsPolicy, plan_rules

from .conftest import PY, REPO

PROBE = str(Path(__file__).with_name("landlock_probe.py"))
SYSTEM = ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/dev"]


def probe(spec: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, PROBE, json.dumps(spec)], capture_output=True, text=True,
                          timeout=60, cwd=str(REPO), stdin=subprocess.DEVNULL)


def results(spec: dict[str, object]) -> dict[str, object]:
    done = probe(spec)
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_rights_per_abi() -> None:
    assert landlock.fs_rights(0) == 0
    assert landlock.AccessFs.REFER not in landlock.fs_rights(1)
    assert landlock.AccessFs.TRUNCATE in landlock.fs_rights(3)
    assert landlock.AccessFs.IOCTL_DEV not in landlock.fs_rights(4)
    assert landlock.AccessFs.IOCTL_DEV in landlock.fs_rights(5)
    assert landlock.scopes(5) == 0
    assert landlock.scopes(6) == landlock.Scope.SIGNAL | landlock.Scope.ABSTRACT_UNIX_SOCKET


def test_plan_skips_hidden_and_root_workdir() -> None:
    plan = plan_rules(
        FsPolicy(("/usr", "/run/spire/sockets/x"), ("/tmp/../tmp",), include_workdir=True),
        "/", own_exec=["/usr/bin/tini"], hidden=["/run/spire/sockets"],
    )
    assert [(r.path, r.rights, r.own) for r in plan.rules] == [
        ("/usr", "read", False), ("/tmp", "read_write", False), ("/usr/bin/tini", "read", True),
    ]
    assert any("hidden" in w for w in plan.warnings)
    assert any("include_workdir" in w for w in plan.warnings)


@pytest.mark.privileged
def test_kernel_has_landlock() -> None:
    assert landlock.abi_version() >= 1


@pytest.mark.privileged
def test_write_outside_read_write_refused_inside_allowed(tmp_path: Path) -> None:
    rw, ro, other = tmp_path / "rw", tmp_path / "ro", tmp_path / "other"
    for d in (rw, ro, other):
        d.mkdir()
        (d / "f").write_text("data")
    report = results({
        "read_only": [*SYSTEM, str(ro)], "read_write": [str(rw)], "hard": True,
        "tries": [["write", f"{rw}/f"], ["write", f"{rw}/new"], ["truncate", f"{rw}/f"],
                  ["write", f"{ro}/f"], ["truncate", f"{ro}/f"], ["read", f"{ro}/f"],
                  ["mkdir", f"{ro}/d"], ["read", f"{other}/f"], ["list", str(other)],
                  ["write", f"{other}/f"], ["exec", "/bin/true"]],
    })
    assert report["enforced"] is True
    assert report["results"] == {
        f"write {rw}/f": "ok", f"write {rw}/new": "ok", f"truncate {rw}/f": "ok",
        f"write {ro}/f": "EACCES", f"truncate {ro}/f": "EACCES", f"read {ro}/f": "ok",
        f"mkdir {ro}/d": "EACCES", f"read {other}/f": "EACCES", f"list {other}": "EACCES",
        f"write {other}/f": "EACCES", "exec /bin/true": "ok",
    }
    # As root with no Landlock the same writes succeed: the refusals above are Landlock's.
    assert (ro / "f").read_text() == "data"


@pytest.mark.privileged
def test_hard_requirement_missing_path_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    done = probe({"read_only": [*SYSTEM, str(missing)], "read_write": [], "hard": True,
                  "tries": []})
    assert done.returncode == 125
    assert "filesystem_policy.read_only[7]" in done.stderr
    assert str(missing) in done.stderr and "does not exist" in done.stderr


@pytest.mark.privileged
def test_best_effort_missing_path_warns_and_applies_the_rest(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    done = probe({"read_only": [*SYSTEM, str(missing)], "read_write": [], "hard": False,
                  "tries": [["read", "/etc/hostname"], ["read", str(tmp_path)]]})
    assert done.returncode == 0, done.stderr
    assert f"skipped {missing} (path does not exist)" in done.stderr
    assert json.loads(done.stdout)["enforced"] is True


@pytest.mark.privileged
@pytest.mark.parametrize("abi", [0, 2])
def test_best_effort_on_an_older_abi_warns_and_runs(tmp_path: Path, abi: int) -> None:
    target = tmp_path / "f"
    target.write_text("data")
    done = probe({"read_only": SYSTEM, "read_write": [], "hard": False, "abi": abi,
                  "tries": [["truncate", str(target)], ["read", str(target)]]})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if abi == 0:  # no Landlock at all: runs unconfined, and says so
        assert "running WITHOUT filesystem restrictions" in done.stderr
        assert report["enforced"] is False
        assert report["results"][f"read {target}"] == "ok"
    else:  # ABI 2: the file is unreadable, but truncate is not a right this ABI handles
        assert "cannot restrict truncate" in done.stderr
        assert report["results"] == {f"truncate {target}": "ok", f"read {target}": "EACCES"}


@pytest.mark.privileged
def test_hard_requirement_refuses_an_abi_without_truncate() -> None:
    done = probe({"read_only": SYSTEM, "read_write": [], "hard": True, "abi": 2, "tries": []})
    assert done.returncode == 125
    assert "truncate" in done.stderr


@pytest.mark.privileged
def test_signal_scoping(tmp_path: Path) -> None:
    if landlock.abi_version() < 6:
        pytest.skip("kernel without Landlock scoping")
    outside = subprocess.Popen(["sleep", "30"])
    try:
        done = subprocess.run(
            [PY, "-c", (
                "import json, os, sys\n"
                "from supervisor.sandbox import confine, linux\n"
                "from supervisor.sandbox.fsrules import FsPolicy, plan_rules\n"
                "p = confine.prepare(plan_rules(FsPolicy(('/usr',)), None))\n"
                "linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)\n"
                "confine.enforce(p)\n"
                "try:\n"
                f"    os.kill({outside.pid}, 0)\n"
                "    print('ok')\n"
                "except PermissionError:\n"
                "    print('EPERM')\n"
            )], capture_output=True, text=True, timeout=30, cwd=str(REPO),
        )
    finally:
        outside.kill()
        outside.wait()
    assert done.stdout.strip() == "EPERM", done.stderr
