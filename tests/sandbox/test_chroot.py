"""``run`` under chroot (issue 12 item 13, root).

The attack: started under ``chroot`` (not ``pivot_root``), the supervisor's setns() into
the sanitized mount namespace resets the agent's root to the namespace's real root, so the
agent leaves the chroot. ``run`` must refuse (125). And a chroot into a plain directory
(``/`` not a mount point) made ``mount --make-rprivate /`` fail with a bare EINVAL: the 125
message must say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PY, REPO, clean_env, needs_real_cli

pytestmark = pytest.mark.privileged


def _in_private_mount_namespace(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, env=clean_env(), cwd=str(REPO),
    )


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the agent can traverse (pytest's tmp_path is under a 0700 directory)."""
    directory = Path(tempfile.mkdtemp(prefix="openshell-chroot-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_agent_cannot_leave_a_chroot_through_the_namespace_switch(
    base: Path, profile_file: Path
) -> None:
    needs_real_cli()
    root, outside = base / "root", base / "outside"
    agent = f"if [ -e {outside}/marker ]; then echo ESCAPED; else echo confined; fi"
    script = f"""
set -e
mkdir -p {root} {outside}
mount --rbind / {root}
mount -t tmpfs tmpfs {outside}   # after the bind: visible outside the chroot only
touch {outside}/marker
exec chroot {root} {PY} -m supervisor run --profile {profile_file} -- /bin/sh -c '{agent}'
"""
    result = _in_private_mount_namespace(script)
    assert "ESCAPED" not in result.stdout
    assert result.returncode == 125, result.stdout + result.stderr
    assert "mount namespace: the supervisor's root directory is not" in result.stderr
    assert "chroot" in result.stderr


def test_plain_directory_chroot_says_root_is_not_a_mount_point(
    base: Path, profile_file: Path
) -> None:
    needs_real_cli()
    jail = base / "jail"
    lines = ["set -e", f"mkdir -p {jail}"]
    for name in sorted(os.listdir("/")):
        path = f"/{name}"
        if os.path.islink(path):
            lines.append(f"ln -s {os.readlink(path)} {jail}/{name}")
        elif os.path.isdir(path):
            lines.append(f"mkdir -p {jail}/{name} && mount --rbind {path} {jail}/{name}")
    lines.append(f"exec chroot {jail} {PY} -m supervisor run --profile {profile_file} -- /bin/true")
    result = _in_private_mount_namespace("\n".join(lines))
    assert result.returncode == 125, result.stdout + result.stderr
    assert "/ is not a mount point" in result.stderr and "chroot" in result.stderr
