"""Variable values from the environment, else a trusted --credentials-dir file."""

from __future__ import annotations

import os

import pytest

from supervisor.credentials.sources import check_trusted_file, load


def _secret_volume(tmp_path, files: dict[str, bytes]) -> str:
    """Lay out a directory the way Kubernetes mounts a Secret (symlinks into ..data)."""
    d = tmp_path / "secret"
    data = d / "..2026_01_01_00_00_00.000"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
        (data / name).chmod(0o644)
    (d / "..data").symlink_to(data.name)
    for name in files:
        (d / name).symlink_to(f"..data/{name}")
    d.chmod(0o1777)  # sticky and world-writable, owned by root: as kubelet mounts it
    tmp_path.chmod(0o755)
    return str(d)


def test_environment_first_then_file_one_newline_stripped(tmp_path):
    d = _secret_volume(tmp_path, {"A": b"from-file\n", "B": b"two\n\n", "C": b""})
    got = load(["A", "B", "C", "D"], {"A": "from-env"}, d)
    assert got.values == {"A": "from-env", "B": "two\n"}
    assert got.origin["A"] == "environment" and got.origin["B"].endswith("/B")
    assert got.problems == ()


def test_empty_environment_value_falls_back_to_the_file(tmp_path):
    d = _secret_volume(tmp_path, {"A": b"file"})
    assert load(["A"], {"A": ""}, d).values == {"A": "file"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_untrusted_files_are_refused_and_named(tmp_path):
    d = _secret_volume(tmp_path, {"A": b"a", "B": b"b", "C": b"c"})
    real = os.path.realpath(os.path.join(d, "A"))
    os.chown(real, 12345, 12345)
    os.chmod(os.path.realpath(os.path.join(d, "B")), 0o666)
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    os.unlink(os.path.join(d, "C"))
    os.symlink(str(outside), os.path.join(d, "C"))
    got = load(["A", "B", "C"], {}, d)
    assert got.values == {}
    text = " ".join(got.problems)
    assert "A:" in text and "owned by uid 12345" in text
    assert "B:" in text and "writable by group and others" in text
    assert "C:" in text and "outside" in text
    assert "a" not in got.values and "b\n" not in text


def test_group_writable_directory_is_refused(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "A").write_bytes(b"v")
    (d / "A").chmod(0o600)
    d.chmod(0o775)
    with pytest.raises(ValueError, match="writable by its group"):
        check_trusted_file(str(d), str(d / "A"))


def test_bad_variable_names_never_become_paths(tmp_path):
    d = _secret_volume(tmp_path, {"A": b"a"})
    assert load(["../A", "A/B", ""], {}, d).values == {}


def test_an_environment_value_that_is_not_utf8_is_not_exposed(tmp_path):
    """os.environ holds undecodable bytes as surrogate escapes: no request could carry
    them (the header, body and Basic encoders would fail mid-request)."""
    got = load(["A", "B"], {"A": "bad\udcff", "B": "good"}, None)
    assert got.values == {"B": "good"}
    assert got.problems == ("A: the environment's value is not UTF-8 text",)
