"""trusted_files: the decision (pure, property-tested on fake trees) and the real walk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor import trusted_files as tf
from supervisor.trusted_files import FileFacts

DIR, REG, LNK = stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK

facts_st = st.builds(
    FileFacts,
    uid=st.sampled_from([0, 0, 0, 1000, 65534]),
    mode=st.sampled_from([0o755, 0o775, 0o777, 0o1777, 0o700, 0o757]),
    read_only=st.booleans(),
)


def _writable(f: FileFacts) -> bool:
    return not f.read_only and (f.uid != 0 or bool(f.mode & 0o022))


@given(facts_st, facts_st)
def test_an_entry_is_replaceable_exactly_when_its_directory_is_writable_and_not_sticky_root(
    d: FileFacts, e: FileFacts
) -> None:
    directory = FileFacts(d.uid, DIR | d.mode, d.read_only)
    entry = FileFacts(e.uid, REG | e.mode, e.read_only)
    sticky_root = bool(d.mode & stat.S_ISVTX) and d.uid == 0 and e.uid == 0
    assert (tf.judge_entry(directory, entry) is not None) == (
        _writable(directory) and not sticky_root
    )


@given(facts_st)
def test_a_file_is_refused_exactly_when_someone_but_root_could_write_it(f: FileFacts) -> None:
    assert (tf.judge_file(FileFacts(f.uid, REG | f.mode, f.read_only)) is not None) == _writable(f)
    assert tf.judge_file(FileFacts(0, DIR | 0o755, False)) == "not a regular file"


class FakeTree:
    """Paths -> facts, plus symlink targets."""

    def __init__(self) -> None:
        self.nodes: dict[str, FileFacts] = {"/": FileFacts(0, DIR | 0o755, False)}
        self.links: dict[str, str] = {}

    def add(self, path: str, facts: FileFacts, target: str | None = None) -> None:
        self.nodes[path] = facts
        if target is not None:
            self.links[path] = target

    def facts(self, path: str) -> FileFacts:
        if path not in self.nodes:
            raise FileNotFoundError(2, "No such file or directory")
        return self.nodes[path]

    def resolve(self, path: str) -> tuple[str, FileFacts]:
        return tf.resolve_trusted(path, self.facts, self.links.__getitem__)


@given(st.lists(facts_st, min_size=1, max_size=5), facts_st)
def test_walk_refuses_exactly_when_some_directory_on_the_way_is_replaceable(
    dirs: list[FileFacts], final: FileFacts
) -> None:
    tree = FakeTree()
    path = ""
    chain = [tree.nodes["/"]]
    for i, d in enumerate(dirs):
        path += f"/d{i}"
        chain.append(FileFacts(d.uid, DIR | d.mode, d.read_only))
        tree.add(path, chain[-1])
    path += "/f"
    leaf = FileFacts(final.uid, REG | final.mode, final.read_only)
    tree.add(path, leaf)
    expected_ok = all(tf.judge_entry(p, c) is None for p, c in zip(chain, [*chain[1:], leaf]))
    try:
        assert tree.resolve(path) == (path, leaf)
        assert expected_ok
    except tf.UntrustedPathError:
        assert not expected_ok


def test_symlinks_are_followed_and_their_directories_judged() -> None:
    tree = FakeTree()
    root_dir = FileFacts(0, DIR | 0o755, False)
    tree.add("/etc", root_dir)
    tree.add("/work", FileFacts(65534, DIR | 0o755, False))
    tree.add("/work/real", FileFacts(0, REG | 0o644, False))
    tree.add("/etc/p", FileFacts(0, LNK | 0o777, False), "../work/real")
    with pytest.raises(tf.UntrustedPathError, match="the directory /work is owned by uid 65534"):
        tree.resolve("/etc/p")
    tree.add("/etc/q", FileFacts(0, LNK | 0o777, False), "/etc/r")
    tree.add("/etc/r", FileFacts(0, REG | 0o644, False))
    assert tree.resolve("/etc/q")[0] == "/etc/r"
    tree.add("/etc/loop", FileFacts(0, LNK | 0o777, False), "loop")
    with pytest.raises(tf.UntrustedPathError, match="too many levels"):
        tree.resolve("/etc/loop")
    with pytest.raises(tf.UntrustedPathError, match="not an absolute path"):
        tree.resolve("etc/r")
    with pytest.raises(tf.UntrustedPathError, match="No such file"):
        tree.resolve("/etc/missing")
    with pytest.raises(tf.UntrustedPathError, match="/etc/r is not a directory"):
        tree.resolve("/etc/r/x")


def test_absolute_joins_without_resolving() -> None:
    assert tf.absolute("a/../b", "/w") == "/w/a/../b"
    assert tf.absolute("/x", "/w") == "/x"


def test_real_walk_on_this_system(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the tree under tmp_path is root's only when running as root")
    f = tmp_path / "f"
    f.write_text("x")
    assert tf.check_file(str(f)) == str(f)
    assert tf.read_file(str(f)) == b"x"
    assert tf.check_directory(str(tmp_path)) == str(tmp_path)
    with pytest.raises(tf.UntrustedPathError, match="larger than 0 bytes"):
        tf.read_file(str(f), limit=0)
    with pytest.raises(tf.UntrustedPathError, match="not a directory"):
        tf.check_directory(str(f))
    f.chmod(0o666)
    with pytest.raises(tf.UntrustedPathError, match="writable by group and others"):
        tf.check_file(str(f))
