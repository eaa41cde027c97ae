"""Socket path rules (ARCHITECTURE.md 3.2): parsing, shared roots, symlinks, and `run` exiting 125."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.sandbox.socket_path import (
    SHARED_ROOTS,
    parse_socket_address,
    resolve_socket_path,
)
from supervisor.settings import SetupError

from .conftest import run_cli


@pytest.mark.parametrize(
    ("address", "path"),
    [
        ("unix:///run/spire/agent.sock", "/run/spire/agent.sock"),
        ("unix:/run/spire/agent.sock", "/run/spire/agent.sock"),
        ("/run/spire/agent.sock", "/run/spire/agent.sock"),
        ("UNIX:///a/b.sock", "/a/b.sock"),
        ("/run/spire/../spire/./agent.sock", "/run/spire/agent.sock"),
    ],
)
def test_parse_accepts_unix_and_absolute(address: str, path: str) -> None:
    assert parse_socket_address(address) == path


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("tcp://127.0.0.1:1", "only unix sockets"),
        ("tcp:127.0.0.1:8081", "only unix sockets"),
        ("relative/agent.sock", "must be absolute"),
        ("unix://relative.sock", "absolute path"),
        ("unix:relative.sock", "must be absolute"),
        ("", "empty"),
        ("/run/spire/a\0.sock", "NUL"),
    ],
)
def test_parse_rejects(address: str, rule: str) -> None:
    with pytest.raises(SetupError) as info:
        parse_socket_address(address)
    assert info.value.step == "--spiffe-socket"
    assert rule in info.value.reason


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_never_returns_relative(address: str) -> None:
    try:
        path = parse_socket_address(address)
    except SetupError:
        return
    assert path.startswith("/") and "\0" not in path


@pytest.mark.parametrize("root", sorted(SHARED_ROOTS))
def test_shared_roots_refused(root: str) -> None:
    address = root.rstrip("/") + "/agent.sock"
    with pytest.raises(SetupError, match="shared root"):
        resolve_socket_path(address, realpath=lambda p: p, isdir=lambda p: True)


def test_dedicated_directory_accepted(tmp_path: Path) -> None:
    sock = resolve_socket_path(f"unix://{tmp_path}/agent.sock")
    assert sock.directory == str(tmp_path.resolve())
    assert sock.path == f"{tmp_path.resolve()}/agent.sock"


def test_symlink_into_shared_root_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/run")
    with pytest.raises(SetupError, match=r"/run is '/' or a shared root"):
        resolve_socket_path(str(tmp_path / "link" / "agent.sock"))


def test_symlinked_socket_hides_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "dedicated").mkdir()
    (tmp_path / "dedicated" / "agent.sock").symlink_to(real / "api.sock")
    sock = resolve_socket_path(str(tmp_path / "dedicated" / "agent.sock"))
    assert sock.directory == str(real.resolve())


def test_missing_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="does not exist"):
        resolve_socket_path(str(tmp_path / "missing" / "agent.sock"))


@pytest.mark.privileged
@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("/tmp/a.sock", "shared root"),
        ("/run/a.sock", "shared root"),
        ("/var/run/a.sock", "shared root"),
        ("/a.sock", "shared root"),
        ("relative", "must be absolute"),
        ("tcp://127.0.0.1:1", "only unix sockets can be hidden"),
    ],
)
def test_run_refuses_bad_socket_with_125(profile_file: Path, address: str, rule: str) -> None:
    result = run_cli(profile_file, "/bin/true", options=("--spiffe-socket", address))
    assert result.returncode == 125, result.stderr
    assert "--spiffe-socket" in result.stderr and rule in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.privileged
def test_run_accepts_dedicated_run_subdirectory(profile_file: Path) -> None:
    created = not os.path.exists("/run/spire")
    directory = "/run/spire" if created else tempfile.mkdtemp(dir="/run/spire")
    os.makedirs(directory, exist_ok=True)
    try:
        result = run_cli(
            profile_file, "/bin/sh", "-c", f"test ! -e {directory}/a.sock",
            options=("--spiffe-socket", f"{directory}/a.sock"),
        )
        assert result.returncode == 0, result.stderr
    finally:
        shutil.rmtree("/run/spire" if created else directory, ignore_errors=True)
