"""``run --policy`` end to end (root): Landlock on the agent, identity from the policy."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PY, REPO, SocketServer, clean_env

pytestmark = pytest.mark.privileged

SYSTEM = "[/usr, /lib, /lib64, /bin, /etc, /proc, /dev/urandom]"
AGENT = """\
echo data > {rw}/f && echo write-rw-ok
(echo data > {ro}/f) 2>/dev/null || echo write-ro-denied
(echo data > {other}/f) 2>/dev/null || echo write-other-denied
cat {ro}/seed >/dev/null && echo read-ro-ok
(cat {other}/seed) >/dev/null 2>&1 || echo read-other-denied
id -u
"""


def run(policy: Path, *command: str, options: tuple[str, ...] = (), cwd: Path = REPO
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "supervisor", "run", "--policy", str(policy), *options, "--", *command],
        capture_output=True, text=True, timeout=60, env=clean_env(), cwd=str(cwd),
    )


@pytest.fixture
def dirs() -> Iterator[dict[str, Path]]:
    base = Path(tempfile.mkdtemp(prefix="openshell-landlock-", dir="/tmp"))
    os.chmod(base, 0o755)  # pytest's tmp_path sits under a 0700 directory
    out = {}
    for name in ("rw", "ro", "other"):
        d = base / name
        d.mkdir()
        os.chmod(d, 0o777)  # the agent may write anywhere here as far as permissions go
        (d / "seed").write_text("seed")
        out[name] = d
    try:
        yield out
    finally:
        shutil.rmtree(base)


def test_landlock_refuses_writes_and_reads_outside_the_lists(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"filesystem_policy:\n  read_only: {SYSTEM[:-1]}, {dirs['ro']}]\n"
        f"  read_write: [{dirs['rw']}, /dev/null]\n"
        "landlock: {compatibility: hard_requirement}\n"
        "process: {run_as_user: '1500', run_as_group: '1500'}\n"
    )
    done = run(policy, "/bin/sh", "-c", AGENT.format(**dirs))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "write-rw-ok", "write-ro-denied", "write-other-denied", "read-ro-ok",
        "read-other-denied", "1500",
    ]
    assert (dirs["rw"] / "f").read_text() == "data\n"
    assert not (dirs["other"] / "f").exists()


def test_control_without_a_filesystem_policy_the_same_agent_writes_everywhere(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nnetwork_policies: {}\n")
    done = run(policy, "/bin/sh", "-c", AGENT.format(**dirs))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["write-rw-ok", "read-ro-ok", "65534"]


def test_hard_requirement_with_a_missing_path_exits_125_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"filesystem_policy:\n  read_only: {SYSTEM}\n  read_write: [{missing}]\n"
        "landlock: {compatibility: hard_requirement}\n"
    )
    done = run(policy, "/bin/true")
    assert done.returncode == 125
    assert f"filesystem_policy.read_write[0]: {missing}: path does not exist" in done.stderr
    policy.write_text(policy.read_text().replace(": hard_requirement", ": best_effort"))
    done = run(policy, "/bin/true")
    assert done.returncode == 0, done.stderr
    assert f"skipped {missing} (path does not exist)" in done.stderr


def test_explicit_user_wins_over_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nprocess: {run_as_user: '1500'}\n")
    done = run(policy, "id", "-u", options=("--user", "1600:1600"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1600"
    policy.write_text("version: 1\nprocess: {run_as_user: '0'}\n")
    done = run(policy, "id", "-u")
    assert done.returncode == 125
    assert "process.run_as_user: 0 (root) is not allowed" in done.stderr


def test_check_isolation_reports_landlock(tmp_path: Path) -> None:
    import json
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"filesystem_policy:\n  read_only: {SYSTEM[:-1]}, /sys, {REPO}, {sys.prefix}]\n"
        "  read_write: [/dev/null]\n"
    )
    argv = (f"{sys.prefix}/bin/openshell-supervisor", "check-isolation", "--json",
            "--expect-landlock")
    done = run(policy, *argv)
    report = json.loads(done.stdout)
    (landlock,) = [c for c in report["checks"] if c["name"] == "landlock"]
    assert landlock["ok"], landlock
    assert landlock["detail"].startswith("ABI ") and "enforced: a write outside read_write " \
        "refused (/tmp" in landlock["detail"]
    assert done.returncode == 0, report
    # Without a filesystem_policy: reported as not enforced, and refused when expected.
    policy.write_text("version: 1\n")
    done = run(policy, *argv)
    (landlock,) = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "landlock"]
    assert not landlock["ok"] and "not enforced" in landlock["detail"]
    assert done.returncode == 1


def test_ca_bundles_stay_readable_whatever_the_policy_lists(tmp_path: Path) -> None:
    # An inspected HTTPS endpoint: the per-run CA exists and the agent's variables name it.
    profile = tmp_path / "profile.yaml"
    profile.write_text("id: inspected\ncredentials: []\nendpoints:\n"
                       "  - {host: api.example.com, port: 443, protocol: rest, access: read-only}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\nfilesystem_policy:\n  read_only: {SYSTEM}\n"
                      "landlock: {compatibility: hard_requirement}\n")
    done = run(policy, "/bin/sh", "-c",
               'for v in "$SSL_CERT_FILE" "$NODE_EXTRA_CA_CERTS"; do '
               'case "$v" in /etc/*|/usr/*|"") echo "unexpected $v"; exit 3;; esac; '
               'grep -q "BEGIN CERTIFICATE" "$v" && echo readable; done; '
               'ls "$(dirname "$SSL_CERT_FILE")/.." 2>&1 | grep -q "Permission denied" && echo parent-denied',
               options=("--profile", str(profile)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["readable", "readable", "parent-denied"]


def test_socket_directory_and_supervisor_files_stay_unreachable(
    tmp_path: Path, dirs: dict[str, Path], workload_socket: SocketServer
) -> None:
    """The sandbox adds only the init executable and the CA directory: listing the
    socket's parent (or the whole tree) reads nothing of the socket, and nothing of the
    supervisor's package or files is reachable unless the policy lists it."""
    import supervisor

    package = Path(supervisor.__file__).parent
    parent = Path(workload_socket.directory).parent
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"filesystem_policy:\n  read_only: {SYSTEM[:-1]}, {parent}]\n"
        f"  read_write: [/dev/null]\n  include_workdir: true\n"
    )
    agent = (
        f"ls -A {workload_socket.directory} | wc -l; "
        f"(cat {package}/sandbox/child.py) 2>/dev/null || echo package-denied; "
        f"(ls {package}/sandbox) 2>/dev/null || echo package-dir-denied; "
        f"(cat {policy}) 2>/dev/null || echo policy-denied; "
        f"echo data > {dirs['rw']}/w && echo workdir-writable"
    )
    done = run(policy, "/bin/sh", "-c", agent,
               options=("--spiffe-socket", workload_socket.path, "--workdir", str(dirs["rw"])))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "package-denied", "package-dir-denied", "policy-denied",
                                   "workdir-writable"]
    assert workload_socket.connections == []


def test_include_workdir_without_workdir_is_where_run_started(
    tmp_path: Path, dirs: dict[str, Path]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\n"
                      f"filesystem_policy:\n  read_only: {SYSTEM}\n  include_workdir: true\n")
    done = run(policy, "/bin/sh", "-c", "pwd; echo data > here && echo written",
               cwd=dirs["rw"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(dirs["rw"]), "written"]
