"""Files the supervisor may trust: nobody but root can change them (ARCHITECTURE.md S11).

The supervisor reads files that steer it while the agent runs: profiles (re-read on every
change), the ``--ca-bundle``, static-credential files. If anyone other than root could
rewrite one of them - or replace it, or any directory on the way to it - the agent could
hand itself the policy, a token endpoint of its choosing (where the JWT-SVID is posted), or
a trust anchor. So before such a file is read, the whole path is walked from ``/``, every
symlink followed by hand, and it is refused when:

* the file is not owned by root, or is writable by its group or by others;
* a directory on the way (or holding a symlink on the way) could have its entries
  replaced by someone other than root: it is not owned by root, or it is group- or
  other-writable, unless it is sticky (``/tmp``) and both it and the entry are root's.

An object on a read-only mount counts as unwritable whoever owns it and whatever its mode
(Kubernetes mounts ConfigMap and Secret volumes read-only with 0777 directories), but only
when no read-write mount of the same filesystem shows it too: a read-only bind of a
directory the agent writes elsewhere (``-v $PWD:/workspace -v $PWD/cfg:/etc/x:ro``) is the
agent's, and so is a file with a second hard link, which could sit under such a mount.
``/proc/self/mountinfo`` tells which mount the object is on (statx's mount id) and which
read-write mounts of its filesystem exist; when it cannot be read, the exemption does not
apply. The agent cannot remount (no capabilities, and its seccomp filter refuses mount).

With every ancestor unreplaceable, the check cannot race the read that follows it. The
API: ``check_file`` and ``check_directory`` raise ``UntrustedPathError`` naming the path
and the reason; ``read_file`` checks then reads; ``absolute`` makes a command-line path
absolute without resolving anything (the walk does that). ``FileFacts``/``judge_*`` are
the pure decision, kept apart from the system calls for testing.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable, Sequence

from supervisor.record import record

MAX_SYMLINKS = 40  # as the kernel's path walk


class UntrustedPathError(Exception):
    """``path`` cannot be trusted (``reason`` says why); ``str()`` is one line for a 125."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@record
class FileFacts:
    """What the decision needs to know about one path (lstat + the mount's read-only flag)."""

    uid: int
    mode: int  # st_mode, type bits included
    read_only: bool  # on a read-only mount
    identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino): what a later open must find


def _who(facts: FileFacts) -> str | None:
    """Why someone other than root could write ``facts``'s object, or None."""
    if facts.read_only:
        return None
    if facts.uid != 0:
        return f"owned by uid {facts.uid}"
    if facts.mode & 0o022:
        who = "group and others" if facts.mode & 0o022 == 0o022 else (
            "its group" if facts.mode & 0o020 else "others"
        )
        return f"writable by {who} (mode {stat.S_IMODE(facts.mode):04o})"
    return None


def judge_entry(directory: FileFacts, entry: FileFacts) -> str | None:
    """Why an entry of ``directory`` could be replaced by someone other than root, or None.

    A sticky directory owned by root lets only an entry's owner (or root) rename or delete
    it, so a root-owned entry there is safe even though others may create new ones."""
    why = _who(directory)
    if why is None:
        return None
    if directory.mode & stat.S_ISVTX and directory.uid == 0 and entry.uid == 0:
        return None
    return why


def judge_file(facts: FileFacts) -> str | None:
    """Why a (regular) file's content could be changed by someone other than root, or None."""
    if not stat.S_ISREG(facts.mode):
        return "not a regular file"
    why = _who(facts)
    return f"the file is {why}" if why else None


def judge_directory(facts: FileFacts) -> str | None:
    """Why a directory whose entries are all read could gain or lose entries, or None."""
    if not stat.S_ISDIR(facts.mode):
        return "not a directory"
    why = _who(facts)
    return f"the directory is {why}" if why else None


@record
class Mount:
    """One line of /proc/self/mountinfo, as far as the decision needs it."""

    mount_id: int
    device: str  # "major:minor" of the filesystem
    root: str  # the directory of that filesystem mounted here
    mount_point: str
    writable: bool  # neither the mount nor the filesystem is read-only


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(Mount(
                mount_id=int(fields[0]), device=fields[2], root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                writable="rw" in fields[5].split(",") and "rw" in fields[sep + 3].split(","),
            ))
        except (ValueError, IndexError):
            continue
    return mounts


def _norm(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


def _within(path: str, top: str) -> bool:
    path, top = _norm(path), _norm(top)
    return top == "/" or path == top or path.startswith(top + "/")


def read_only_everywhere(mounts: Sequence[Mount], mount_id: int, path: str) -> bool:
    """Whether the object at ``path`` (on mount ``mount_id``) is on a read-only mount that
    no read-write mount of the same filesystem overlaps: a writable mount whose root holds
    the object (the same object, writable by whoever its mode lets). False when unsure."""
    here = next((m for m in mounts if m.mount_id == mount_id), None)
    if here is None or here.writable or not _within(path, here.mount_point):
        return False
    inside = _norm(posixpath.join(here.root, posixpath.relpath(path, here.mount_point)))
    # A root of a deleted directory is shown as "<path> (deleted)": assume the worst.
    return not any(
        other.device == here.device and other.writable
        and (other.root.endswith(" (deleted)") or _within(inside, other.root))
        for other in mounts
    )


_STATX_MNT_ID = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100


def _mount_id(path: str) -> int | None:
    """statx's mount id of ``path`` (Linux 5.8+), or None."""
    import ctypes  # only when a read-only mount is met

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statx
    if libc.statx(-100, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_MNT_ID, buf) != 0:
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    return int.from_bytes(buf.raw[144:152], "little") if mask & _STATX_MNT_ID else None


def _read_only_everywhere(path: str) -> bool:
    mount_id = _mount_id(path)
    if mount_id is None:
        return False
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mounts = parse_mountinfo(f.read())
    except OSError:
        return False
    return read_only_everywhere(mounts, mount_id, path)


def facts_of(path: str) -> FileFacts:
    """lstat ``path`` (a symlink is not followed) and ask whether it is on a read-only mount
    that no writable mount shows too (``path`` must be free of symlinks but its last part:
    the walk's paths are)."""
    st = os.lstat(path)
    # statvfs follows a symlink; a symlink lives on its directory's mount.
    on = os.path.dirname(path) or "/" if stat.S_ISLNK(st.st_mode) else path
    read_only = bool(os.statvfs(on).f_flag & os.ST_RDONLY)
    if read_only and stat.S_ISREG(st.st_mode) and st.st_nlink != 1:
        read_only = False  # another link may be under a writable mount
    if read_only:
        read_only = _read_only_everywhere(on)
    return FileFacts(uid=st.st_uid, mode=st.st_mode, read_only=read_only,
                     identity=(st.st_dev, st.st_ino))


def absolute(path: str, cwd: str | None = None) -> str:
    """``path`` made absolute against ``cwd`` (default: the current directory), lexically
    untouched otherwise: '..' and symlinks are left to the walk, which follows them as the
    kernel would."""
    if os.path.isabs(path):
        return path
    return os.path.join(cwd if cwd is not None else os.getcwd(), path)


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def resolve_trusted(
    path: str,
    facts: Callable[[str], FileFacts] = facts_of,
    readlink: Callable[[str], str] = os.readlink,
) -> tuple[str, FileFacts]:
    """Walk ``path`` from '/', following symlinks by hand; raise UntrustedPathError when an
    entry on the way could be replaced by someone other than root. Returns the resolved
    path and its facts (the final object itself is the caller's to judge)."""
    if not os.path.isabs(path):
        raise UntrustedPathError(path, "not an absolute path")
    current = "/"
    try:
        here = facts("/")
        pending = _components(path)
        hops = 0
        while pending:
            name = pending.pop(0)
            if not stat.S_ISDIR(here.mode):  # as the kernel: no '..' or entry after a file
                raise UntrustedPathError(path, f"{current} is not a directory")
            if name == "..":
                # The parent of a directory reached through unreplaceable entries was
                # itself reached that way (or is '/').
                current = os.path.dirname(current) or "/"
                here = facts(current)
                continue
            child = os.path.join(current, name)
            entry = facts(child)
            why = judge_entry(here, entry)
            if why is not None:
                raise UntrustedPathError(
                    path, f"the directory {current} is {why}: {name!r} in it could be replaced"
                )
            if stat.S_ISLNK(entry.mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise UntrustedPathError(path, "too many levels of symbolic links")
                target = readlink(child)
                pending = _components(target) + pending
                if target.startswith("/"):
                    current, here = "/", facts("/")
                continue
            current, here = child, entry
    except OSError as exc:
        raise UntrustedPathError(path, exc.strerror or str(exc)) from None
    return current, here


def check_file(path: str) -> str:
    """Refuse ``path`` unless it is a regular file only root can change, reached only
    through entries only root can replace. Returns the resolved path."""
    real, facts = resolve_trusted(path)
    why = judge_file(facts)
    if why is not None:
        raise UntrustedPathError(path, why)
    return real


def check_directory(path: str) -> str:
    """Refuse ``path`` unless it is a directory only root can add entries to or remove them
    from, reached only through entries only root can replace. Each file read from it still
    needs ``check_file`` (its own owner and mode). Returns the resolved path."""
    real, facts = resolve_trusted(path)
    why = judge_directory(facts)
    if why is not None:
        raise UntrustedPathError(path, why)
    return real


def read_file(path: str, limit: int = 16 << 20) -> bytes:
    """``check_file`` then the content (at most ``limit`` bytes, else refused), read through
    one fd that must hold the very object the walk judged."""
    real, facts = resolve_trusted(path)
    why = judge_file(facts)
    if why is not None:
        raise UntrustedPathError(path, why)
    try:
        # O_NONBLOCK: a FIFO swapped in must not hang the open; O_NOFOLLOW: nor a symlink.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC)
    except OSError as exc:
        raise UntrustedPathError(path, exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != facts.identity:
            raise UntrustedPathError(path, "changed while it was checked")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise UntrustedPathError(path, exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise UntrustedPathError(path, f"larger than {limit} bytes")
    return data
