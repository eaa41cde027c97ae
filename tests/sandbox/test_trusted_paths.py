"""Files that steer the supervisor cannot be the agent's (issue 12 item 2, root).

The attack: profiles are re-read whenever their content changes, so a profile the agent can
rewrite (an agent-writable directory such as the image's /workspace, or a relative
``--profile`` resolved in one) hands it the policy and a token endpoint of its choosing,
where the JWT-SVID is posted. Likewise a ``--ca-bundle`` read after the agent started.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import FAKE_RUN, PY, REPO, clean_env, run_cli, run_fake, start_fake

pytestmark = pytest.mark.privileged

PEM = (
    b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUB0g=\n-----END CERTIFICATE-----\n"
)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    """A directory only root can write, on the way to which nothing else can write."""
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    return directory


def test_profile_in_an_agent_writable_directory_is_refused(agent_dir: Path) -> None:
    profile = agent_dir / "profile.yaml"
    profile.write_text("one\n")
    marker = agent_dir / "ran"
    result = run_fake("/bin/touch", str(marker), options=("--profile", str(profile)))
    assert result.returncode == 125, result.stderr
    assert f"--profile: {profile}: the directory {agent_dir} is" in result.stderr
    assert not marker.exists()


def test_relative_profile_is_resolved_where_run_started_and_checked(agent_dir: Path) -> None:
    (agent_dir / "profile.yaml").write_text("one\n")
    result = subprocess.run(
        [PY, str(FAKE_RUN), "--profile", "profile.yaml", "--", "/bin/true"],
        capture_output=True, text=True, timeout=30, env=clean_env(PYTHONPATH=str(REPO)),
        cwd=str(agent_dir),
    )
    assert result.returncode == 125
    assert f"--profile: {agent_dir}/profile.yaml: the directory {agent_dir}" in result.stderr


@pytest.mark.parametrize(
    ("owner", "mode", "reason"),
    [(65534, 0o644, "the file is owned by uid 65534"),
     (0, 0o664, "the file is writable by its group (mode 0664)"),
     (0, 0o646, "the file is writable by others (mode 0646)")],
)
def test_profile_file_anyone_but_root_can_write_is_refused(
    root_dir: Path, owner: int, mode: int, reason: str
) -> None:
    profile = root_dir / "profile.yaml"
    profile.write_text("one\n")
    os.chown(profile, owner, owner)
    profile.chmod(mode)
    result = run_fake("/bin/true", options=("--profile", str(profile)))
    assert result.returncode == 125
    assert f"--profile: {profile}: {reason}" in result.stderr


def test_symlink_through_an_agent_directory_is_refused(root_dir: Path, agent_dir: Path) -> None:
    (agent_dir / "real.yaml").write_text("one\n")
    os.symlink(agent_dir / "real.yaml", root_dir / "profile.yaml")
    result = run_fake("/bin/true", options=("--profile", str(root_dir / "profile.yaml")))
    assert result.returncode == 125
    assert f"the directory {agent_dir} is" in result.stderr


def test_sticky_tmp_is_fine_for_root_files(tmp_path: Path) -> None:
    # /tmp is 1777: the profile at /tmp/<root-owned 0700 dir>/... is root's alone.
    profile = tmp_path / "profile.yaml"
    profile.write_text("one\n")
    result = run_fake("/bin/true", options=("--profile", str(profile)))
    assert result.returncode == 0, result.stderr


def test_configmap_style_read_only_mount_with_0777_directories_is_accepted(
    tmp_path: Path,
) -> None:
    """A Kubernetes ConfigMap volume: a read-only mount, 0777 directories, files reached
    through ..data symlinks, owned by someone else with a permissive mode."""
    mnt = tmp_path / "profiles"
    mnt.mkdir()
    tmp_path.chmod(0o755)
    script = f"""
set -e
mount -t tmpfs -o mode=0777 tmpfs {mnt}
mkdir -m 0777 {mnt}/..2026_12_06
printf 'one\\n' > {mnt}/..2026_12_06/profile.yaml
chown 1000:1000 {mnt}/..2026_12_06/profile.yaml
chmod 0666 {mnt}/..2026_12_06/profile.yaml
ln -s ..2026_12_06 {mnt}/..data
ln -s ..data/profile.yaml {mnt}/profile.yaml
mount -o remount,ro {mnt}
exec {PY} {FAKE_RUN} --profile {mnt}/profile.yaml -- /bin/true
"""
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO),
    )
    assert result.returncode == 0, result.stderr
    # Control: the same tree left writable is refused.
    writable = script.replace(f"mount -o remount,ro {mnt}\n", "")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", writable],
        capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO),
    )
    assert result.returncode == 125
    assert f"the directory {mnt} is writable by group and others" in result.stderr


def test_reload_applies_the_same_check(root_dir: Path, agent_dir: Path, tmp_path: Path) -> None:
    profile = root_dir / "profile.yaml"
    profile.write_text("one\n")
    log = tmp_path / "services.log"
    ready = agent_dir / "ready"
    proc = start_fake("/bin/sh", "-c", f"touch {ready}; sleep 30 & wait",
                      options=("--profile", str(profile), "--log", str(log)))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        _wait_for(ready, proc)
        assert os.readlink(f"/proc/{proc.pid}/cwd") == "/"  # nothing resolves elsewhere
        profile.chmod(0o666)  # now anyone could have written this:
        profile.write_text("two\n")
        proc.send_signal(signal.SIGHUP)  # (or the 2 s poll sees the change first)
        deadline = time.monotonic() + 15
        while not any("refused" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert "reload" not in log.read_text()
    refusal = f"refused, keeping the current set: {profile}: the file is writable by group and"
    assert any(refusal in line for line in lines), lines


def test_ca_bundle_in_an_agent_writable_directory_is_refused(
    root_dir: Path, agent_dir: Path
) -> None:
    profile = root_dir / "profile.yaml"
    profile.write_text("one\n")
    bundle = agent_dir / "ca.pem"
    bundle.write_bytes(PEM)
    result = run_fake("/bin/true", options=("--profile", str(profile), "--ca-bundle", str(bundle)))
    assert result.returncode == 125
    assert f"--ca-bundle: {bundle}: the directory {agent_dir} is" in result.stderr


def test_ca_bundle_is_read_before_the_agent_starts(
    root_dir: Path, agent_dir: Path, tmp_path: Path
) -> None:
    profile = root_dir / "profile.yaml"
    profile.write_text("one\n")
    bundle = root_dir / "ca.pem"
    bundle.write_bytes(PEM)
    log = tmp_path / "services.log"
    ready, go = agent_dir / "ready", agent_dir / "go"
    proc = start_fake(
        "/bin/sh", "-c", f"touch {ready}; while [ ! -e {go} ]; do sleep 0.02; done",
        options=("--profile", str(profile), "--ca-bundle", str(bundle), "--log", str(log)),
    )
    try:
        _wait_for(ready, proc)
        bundle.write_bytes(PEM.replace(b"B0g=", b"XXX="))  # changed while the agent runs
        go.touch()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"ca-bundle {hashlib.sha256(PEM).hexdigest()}" in log.read_text().splitlines()


def test_ca_bundle_without_a_certificate_is_125(root_dir: Path) -> None:
    profile = root_dir / "profile.yaml"
    profile.write_text("one\n")
    bundle = root_dir / "ca.pem"
    bundle.write_text("not a certificate\n")
    result = run_fake("/bin/true", options=("--profile", str(profile), "--ca-bundle", str(bundle)))
    assert result.returncode == 125
    assert f"--ca-bundle: {bundle} holds no PEM certificate" in result.stderr


SYSTEM = "[/usr, /lib, /lib64, /bin, /etc, /proc, /dev/urandom, /dev/null]"


def _cli(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "supervisor", "run", *args], capture_output=True,
                          text=True, timeout=60, env=clean_env(), cwd=cwd)


def test_policy_in_an_agent_writable_directory_is_refused(agent_dir: Path) -> None:
    """The sandbox policy is re-read like the profiles: its network_policies are endpoints."""
    policy = agent_dir / "policy.yaml"
    policy.write_text("version: 1\nnetwork_policies: {}\n")
    marker = agent_dir / "ran"
    done = _cli("--policy", str(policy), "--", "/bin/touch", str(marker), cwd="/")
    assert done.returncode == 125, done.stderr
    assert f"--policy: {policy}: the directory {agent_dir} is" in done.stderr
    assert not marker.exists()


def test_relative_policy_is_read_where_run_started(root_dir: Path) -> None:
    (root_dir / "policy.yaml").write_text("version: 1\nnetwork_policies: {}\n")
    done = _cli("--policy", "policy.yaml", "--", "/bin/true", cwd=str(root_dir))
    assert done.returncode == 0, done.stderr


def test_include_workdir_is_the_directory_run_started_in(
    root_dir: Path, agent_dir: Path
) -> None:
    """run works from '/' itself; the agent's default working directory (and Landlock's
    include_workdir) stays the directory run was started in."""
    policy = root_dir / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"filesystem_policy:\n  include_workdir: true\n  read_only: {SYSTEM}\n"
        "landlock: {compatibility: hard_requirement}\n"
    )
    done = _cli("--policy", str(policy), "--", "/bin/sh", "-c", "pwd; echo x > f && echo wrote",
                cwd=str(agent_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(agent_dir), "wrote"], done.stderr
    assert (agent_dir / "f").read_text() == "x\n"


def test_credentials_dir_the_agent_could_fill_is_refused(root_dir: Path, agent_dir: Path) -> None:
    profile = root_dir / "profile.yaml"
    profile.write_text("one\n")
    result = run_fake("/bin/true", options=("--profile", str(profile), "--credentials-dir",
                                            str(agent_dir)))
    assert result.returncode == 125
    assert f"--credentials-dir: {agent_dir}: the directory is writable" in result.stderr


def _in_mount_namespace(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO),
    )


def test_read_only_view_of_an_agent_writable_directory_is_refused(tmp_path: Path) -> None:
    """`docker run -v $PWD:/workspace -v $PWD/profiles:/etc/openshell:ro`: the read-only view
    is the same directory the agent writes through /workspace (issue 12 review; the
    read-only-mount exemption accepted it before the fix: the agent then rewrote the
    profile and the next poll loaded it)."""
    tmp_path.chmod(0o755)
    work, view = tmp_path / "workspace", tmp_path / "view"
    work.mkdir()
    view.mkdir()
    script = f"""
set -e
mount -t tmpfs -o mode=0777 tmpfs {work}
mkdir -m 0777 {work}/profiles
printf 'one\\n' > {work}/profiles/profile.yaml
chown 65534:65534 {work}/profiles/profile.yaml
mount --bind {work}/profiles {view}
mount -o remount,bind,ro {view}
exec {PY} {FAKE_RUN} --profile {view}/profile.yaml -- /bin/true
"""
    result = _in_mount_namespace(script)
    assert result.returncode == 125, result.stderr
    assert f"--profile: {view}/profile.yaml: the directory {view} is" in result.stderr


def test_read_only_bind_of_one_agent_writable_file_is_refused(root_dir: Path) -> None:
    """A root-owned path with an agent-owned file bind-mounted read-only over it."""
    target = root_dir / "profile.yaml"
    target.write_text("placeholder\n")
    script = f"""
set -e
mkdir -m 0777 {root_dir}/w
mount -t tmpfs -o mode=0777 tmpfs {root_dir}/w
printf 'one\\n' > {root_dir}/w/p.yaml
chown 65534:65534 {root_dir}/w/p.yaml
mount --bind {root_dir}/w/p.yaml {target}
mount -o remount,bind,ro {target}
exec {PY} {FAKE_RUN} --profile {target} -- /bin/true
"""
    result = _in_mount_namespace(script)
    assert result.returncode == 125, result.stderr
    assert f"--profile: {target}: the file is owned by uid 65534" in result.stderr


def test_hard_link_between_a_read_only_and_a_writable_view_is_refused(tmp_path: Path) -> None:
    """One filesystem, two sub-trees mounted: the agent's (read-write) and the config's
    (read-only); an agent-owned file linked into both is writable through the first."""
    tmp_path.chmod(0o755)
    fs, work, view = tmp_path / "fs", tmp_path / "workspace", tmp_path / "view"
    for d in (fs, work, view):
        d.mkdir()
    script = f"""
set -e
mount -t tmpfs -o mode=0755 tmpfs {fs}
mkdir -m 0777 {fs}/w
mkdir -m 0755 {fs}/cfg
printf 'one\\n' > {fs}/w/p.yaml
chown 65534:65534 {fs}/w/p.yaml
ln {fs}/w/p.yaml {fs}/cfg/p.yaml
mount --bind {fs}/w {work}
mount --bind {fs}/cfg {view}
mount -o remount,bind,ro {view}
umount {fs}
exec {PY} {FAKE_RUN} --profile {view}/p.yaml -- /bin/true
"""
    result = _in_mount_namespace(script)
    assert result.returncode == 125, result.stderr
    assert f"--profile: {view}/p.yaml: the file is owned by uid 65534" in result.stderr
    # Control: the same file with one link (only in the read-only view) is accepted.
    single = script.replace(f"ln {fs}/w/p.yaml {fs}/cfg/p.yaml",
                            f"mv {fs}/w/p.yaml {fs}/cfg/p.yaml")
    result = _in_mount_namespace(single)
    assert result.returncode == 0, result.stderr


def test_audit_log_through_an_agent_directory_is_refused(
    root_dir: Path, agent_dir: Path, profile_file: Path
) -> None:
    """A previous run's agent leaves ``/workspace/logs -> /etc`` behind; root then opens
    ``--audit-log /workspace/logs/nologin`` with O_CREAT: O_NOFOLLOW guards only the last
    part, so root created (and would append to) a file of the agent's choosing anywhere
    (/etc/nologin locks out every other user). The audit log's directory must be root's
    alone like any file run trusts, and an existing log root's. FAILED before (the run
    went ahead and created the file)."""
    os.symlink(root_dir, agent_dir / "logs")
    victim = root_dir / "nologin"
    result = run_cli(profile_file, "/bin/true",
                     options=("--audit-log", str(agent_dir / "logs" / "nologin")))
    assert result.returncode == 125, result.stderr
    assert f"--audit-log: {agent_dir}/logs/nologin: the directory {agent_dir} is" in result.stderr
    assert not victim.exists()
    # An existing log someone else owns is refused too; one in a root-only directory is fine.
    theirs = root_dir / "theirs.jsonl"
    theirs.write_text("")
    os.chown(theirs, 65534, 65534)
    result = run_cli(profile_file, "/bin/true", options=("--audit-log", str(theirs)))
    assert result.returncode == 125
    assert f"--audit-log: {theirs}: the file is owned by uid 65534" in result.stderr
    result = run_cli(profile_file, "/bin/true", options=("--audit-log", str(root_dir / "a.log")))
    assert result.returncode == 0, result.stderr
    assert (root_dir / "a.log").exists()


def test_proc_fd_path_is_judged_by_the_file_it_names(agent_dir: Path, root_dir: Path) -> None:
    """``--profile /dev/stdin`` (or /proc/self/fd/N) with stdin an agent-writable file: the
    walk follows /dev/stdin -> /proc/self/fd/0 -> the file's path and judges that file's
    directory; a pipe (no path) is refused. Held before this review (a regression test)."""
    profile = agent_dir / "profile.yaml"
    profile.write_text("one\n")
    with profile.open() as stdin:
        result = subprocess.run(
            [PY, str(FAKE_RUN), "--profile", "/dev/stdin", "--", "/bin/true"], stdin=stdin,
            capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO),
        )
    assert result.returncode == 125
    assert f"--profile: /dev/stdin: the directory {agent_dir} is" in result.stderr
    result = subprocess.run(
        [PY, str(FAKE_RUN), "--profile", "/dev/stdin", "--", "/bin/true"], input="one\n",
        capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO),
    )
    assert result.returncode == 125 and "--profile: /dev/stdin:" in result.stderr
    # Control: the same through a root-only file is accepted.
    (root_dir / "profile.yaml").write_text("one\n")
    with (root_dir / "profile.yaml").open() as stdin:
        result = subprocess.run(
            [PY, str(FAKE_RUN), "--profile", "/dev/stdin", "--", "/bin/true"], stdin=stdin,
            capture_output=True, text=True, timeout=30, env=clean_env(), cwd=str(REPO),
        )
    assert result.returncode == 0, result.stderr


def test_reload_judges_the_mounts_again(tmp_path: Path, agent_dir: Path) -> None:
    """A profile accepted at start on a read-only mount (ConfigMap-style: 0777 directory,
    a file root does not own) is refused at the next reload once a read-write mount shows
    the same directory: the read-only exemption is decided on every check, not once."""
    tmp_path.chmod(0o755)
    fs, view, rw = tmp_path / "fs", tmp_path / "view", tmp_path / "rw"
    for d in (fs, view, rw):
        d.mkdir()
    log, err, ready = tmp_path / "services.log", tmp_path / "stderr", agent_dir / "ready"
    script = f"""
set -e
mount -t tmpfs -o mode=0755 tmpfs {fs}
mkdir -m 0777 {fs}/cfg
printf 'one\\n' > {fs}/cfg/p.yaml
chown 65534:65534 {fs}/cfg/p.yaml
mount --bind {fs}/cfg {view}
mount -o remount,bind,ro {view}
umount {fs}
{PY} {FAKE_RUN} --profile {view}/p.yaml --log {log} -- /bin/sh -c "touch {ready}; sleep 30 & wait" 2> {err} &
pid=$!
i=0; while [ ! -e {ready} ]; do i=$((i+1)); [ $i -lt 400 ]; sleep 0.05; done
mount --bind {view} {rw}
mount -o remount,bind,rw {rw}
printf 'two\\n' > {rw}/p.yaml
kill -HUP $pid
i=0; while ! grep -q refused {err}; do i=$((i+1)); [ $i -lt 300 ]; sleep 0.05; done
kill -TERM $pid
wait $pid || true
"""
    result = _in_mount_namespace(script)
    stderr = err.read_text() if err.exists() else ""
    assert result.returncode == 0, (result.stderr, stderr)
    assert f"refused, keeping the current set: {view}/p.yaml: the directory {view} is" in stderr
    assert "reload" not in log.read_text()
