"""supervisor.tempdirs.mkdtemp: tempfile.mkdtemp's directory without importing tempfile.

The fast path only runs while tempfile is not imported, so those cases run in a fresh
interpreter; they compare with what tempfile itself chooses in the same environment.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from supervisor.tempdirs import mkdtemp

PROBE = textwrap.dedent("""
    import json, os, sys
    from supervisor.tempdirs import mkdtemp
    made = [mkdtemp(prefix="openshell-ca-") for _ in range(3)]
    assert "tempfile" not in sys.modules, "tempfile was imported"
    import tempfile
    print(json.dumps({"made": made, "tempfile_dir": tempfile.gettempdir()}))
""")


def _fresh(env: dict[str, str], cwd: Path) -> dict[str, object]:
    import json

    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _env(**tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    env.update(tmp)
    return env


@pytest.mark.parametrize(
    "setting",
    [
        {},  # /tmp
        {"TMPDIR": "{base}"},
        {"TMPDIR": "{base}/missing", "TEMP": "{base}"},  # first candidate unusable
        {"TMPDIR": "", "TMP": "{base}"},  # empty variables are skipped
        {"TMPDIR": "{base}/file"},  # a file is no directory: the next candidate
    ],
    ids=["default", "tmpdir", "fallthrough", "empty", "not-a-dir"],
)
def test_made_where_tempfile_would_make_it(tmp_path: Path, setting: dict[str, str]) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "file").write_text("")
    env = _env(**{k: v.format(base=base) for k, v in setting.items()})
    result = _fresh(env, tmp_path)
    made = [Path(p) for p in result["made"]]  # type: ignore[union-attr]
    try:
        assert len(set(made)) == 3
        for path in made:
            assert path.is_absolute()
            assert str(path.parent) == result["tempfile_dir"]
            assert path.name.startswith("openshell-ca-")
            st = path.lstat()
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            assert stat.S_IMODE(st.st_mode) == 0o700 & ~_umask()
            assert not any(path.iterdir())
    finally:
        for path in made:
            path.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_existing_name_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Names come from os.urandom: make the first draw collide with a planted entry.
    import supervisor.tempdirs as tempdirs

    monkeypatch.delitem(sys.modules, "tempfile")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    draws = iter([b"\x00" * 8, b"\x00" * 8, b"\x01" * 8])
    monkeypatch.setattr(tempdirs.os, "urandom", lambda n: next(draws))
    planted = tmp_path / ("p-" + "00" * 8)
    planted.symlink_to("/etc")
    first = Path(tempdirs.mkdtemp(prefix="p-"))
    assert first == tmp_path / ("p-" + "01" * 8)
    assert planted.is_symlink() and first.is_dir() and not first.is_symlink()


def test_with_tempfile_loaded_it_is_tempfiles_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile's own state is honoured
    path = Path(mkdtemp(prefix="openshell-ca-"))
    assert path.parent == tmp_path and path.is_dir()


def test_remove_takes_files_links_and_subdirectories_but_nothing_outside(tmp_path: Path) -> None:
    from supervisor.tempdirs import remove

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "ca-bundle.pem").write_text("a")
    (flat / "sandbox-ca.pem").write_text("b")
    (flat / "link").symlink_to(outside)  # unlinked, never followed
    remove(str(flat))
    assert not flat.exists()
    nested = tmp_path / "nested"
    (nested / "sub").mkdir(parents=True)
    (nested / "sub" / "f").write_text("c")
    (nested / "g").write_text("d")
    remove(str(nested))  # shutil.rmtree's case
    assert not nested.exists()
    remove(str(tmp_path / "missing"))  # gone already: nothing to do, no error
    assert (outside / "keep").read_text() == "x"
