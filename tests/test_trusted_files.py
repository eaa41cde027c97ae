"""trusted_files: the decision (pure, property-tested on fake trees) and the real walk."""

from __future__ import annotations

import os
import posixpath
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
    # '..' after a file fails as in the kernel (ENOTDIR), even through a symlink: the walk
    # must not accept a path whose open would find something else (FAILED before).
    with pytest.raises(tf.UntrustedPathError, match="/etc/r is not a directory"):
        tree.resolve("/etc/r/../r")
    with pytest.raises(tf.UntrustedPathError, match="/etc/r is not a directory"):
        tree.resolve("/etc/q/../r")


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


MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l
30 22 8:1 /kubelet/pods/x/configmap/cfg /etc/openshell ro,relatime - ext4 /dev/sda1 rw
31 22 8:1 /kubelet/pods/x/empty-dir/work /workspace rw,relatime - ext4 /dev/sda1 rw
32 22 8:1 /home/dev/project /work\\040space rw - ext4 /dev/sda1 rw
33 22 8:1 /home/dev/project/profiles /etc/profiles ro - ext4 /dev/sda1 rw
34 22 0:40 / /etc/secret ro - tmpfs tmpfs ro
35 22 0:41 / /etc/frozen rw - ext4 /dev/sdb1 ro
garbage line
"""


def test_mountinfo_is_parsed_with_escapes_and_both_read_only_flags() -> None:
    mounts = {m.mount_id: m for m in tf.parse_mountinfo(MOUNTINFO)}
    assert sorted(mounts) == [22, 30, 31, 32, 33, 34, 35]
    assert mounts[32].mount_point == "/work space"
    assert (mounts[30].writable, mounts[31].writable, mounts[35].writable) == (False, True, False)


def test_read_only_only_when_no_writable_mount_of_the_filesystem_shows_the_object() -> None:
    mounts = tf.parse_mountinfo(MOUNTINFO)
    # A ConfigMap: the node's disk is mounted elsewhere, but not over the ConfigMap's tree.
    assert tf.read_only_everywhere(mounts, 30, "/etc/openshell/p.yaml")
    assert tf.read_only_everywhere(mounts, 34, "/etc/secret/token")
    # A read-only view of a project directory the agent writes through /work space.
    assert not tf.read_only_everywhere(mounts, 33, "/etc/profiles/p.yaml")
    assert not tf.read_only_everywhere(mounts, 33, "/etc/profiles")
    # Writable mounts, unknown mounts, paths outside the mount: never read-only.
    assert not tf.read_only_everywhere(mounts, 31, "/workspace/p.yaml")
    assert not tf.read_only_everywhere(mounts, 99, "/etc/openshell/p.yaml")
    assert not tf.read_only_everywhere(mounts, 30, "/elsewhere/p.yaml")
    deleted = [*mounts, tf.Mount(40, "8:1", "/gone (deleted)", "/tmp/x", True)]
    assert not tf.read_only_everywhere(deleted, 30, "/etc/openshell/p.yaml")


@given(st.text(max_size=400))
def test_mountinfo_parser_takes_anything(text: str) -> None:
    for mount in tf.parse_mountinfo(text):
        assert isinstance(mount.mount_id, int)


path_st = st.lists(st.sampled_from(["a", "b", ".."]), max_size=4).map(lambda p: "/" + "/".join(p))


@given(ro_root=path_st, rw_root=path_st, rel=path_st, same_device=st.booleans())
def test_a_writable_mount_whose_root_holds_the_object_always_wins(
    ro_root: str, rw_root: str, rel: str, same_device: bool
) -> None:
    mounts = [tf.Mount(1, "8:1", ro_root, "/cfg", False),
              tf.Mount(2, "8:1" if same_device else "8:2", rw_root, "/w", True)]
    path = "/cfg" + rel if rel != "/" else "/cfg"
    if posixpath.normpath(path) != path:
        return  # the walk hands over normalized paths only
    inside = posixpath.normpath(posixpath.join(ro_root, posixpath.relpath(path, "/cfg")))
    top = posixpath.normpath(rw_root)
    shown = same_device and (top == "/" or inside == top or inside.startswith(top + "/"))
    assert tf.read_only_everywhere(mounts, 1, path) == (not shown)


def test_read_file_reads_the_object_it_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is read through one fd whose (device, inode) must be what the walk judged:
    a swap between the check and the open (only root can make one once the check passed,
    so this is defence in depth) is refused, not read. FAILED before: the swapped-in
    content was returned; and a FIFO swapped in would have blocked the open."""
    if os.geteuid() != 0:
        pytest.skip("the tree under tmp_path is root's only when running as root")
    checked, other = tmp_path / "ca.pem", tmp_path / "other"
    checked.write_text("checked")
    other.write_text("swapped in")
    real_resolve = tf.resolve_trusted

    def resolve_then_swap(path: str, *args: object) -> tuple[str, FileFacts]:
        result = real_resolve(path)
        os.replace(other, checked)
        return result

    monkeypatch.setattr(tf, "resolve_trusted", resolve_then_swap)
    with pytest.raises(tf.UntrustedPathError, match="changed while it was checked"):
        tf.read_file(str(checked))
    os.unlink(checked)
    os.mkfifo(other)
    checked.write_text("checked")
    with pytest.raises(tf.UntrustedPathError, match="changed while it was checked"):
        tf.read_file(str(checked))  # opened without blocking, then refused
