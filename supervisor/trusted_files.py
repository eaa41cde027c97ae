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

Anything on a read-only mount counts as unwritable whoever owns it and whatever its mode:
Kubernetes mounts ConfigMap and Secret volumes read-only with 0777 directories, and a
``docker run -v file:file:ro`` keeps the host user's ownership. The agent cannot remount
(no capabilities, and its seccomp filter refuses mount).

With every ancestor unreplaceable, the check cannot race the read that follows it. The
API: ``check_file`` and ``check_directory`` raise ``UntrustedPathError`` naming the path
and the reason; ``read_file`` checks then reads; ``absolute`` makes a command-line path
absolute without resolving anything (the walk does that). ``FileFacts``/``judge_*`` are
the pure decision, kept apart from the system calls for testing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

MAX_SYMLINKS = 40  # as the kernel's path walk


class UntrustedPathError(Exception):
    """``path`` cannot be trusted (``reason`` says why); ``str()`` is one line for a 125."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FileFacts:
    """What the decision needs to know about one path (lstat + the mount's read-only flag)."""

    uid: int
    mode: int  # st_mode, type bits included
    read_only: bool  # on a read-only mount


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


def facts_of(path: str) -> FileFacts:
    """lstat ``path`` (a symlink is not followed) and ask whether its mount is read-only."""
    st = os.lstat(path)
    # statvfs follows a symlink; a symlink lives on its directory's mount.
    on = os.path.dirname(path) or "/" if stat.S_ISLNK(st.st_mode) else path
    return FileFacts(uid=st.st_uid, mode=st.st_mode,
                     read_only=bool(os.statvfs(on).f_flag & os.ST_RDONLY))


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
            if name == "..":
                # The parent of a directory reached through unreplaceable entries was
                # itself reached that way (or is '/').
                current = os.path.dirname(current) or "/"
                here = facts(current)
                continue
            if not stat.S_ISDIR(here.mode):
                raise UntrustedPathError(path, f"{current} is not a directory")
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
    """``check_file`` then the content (at most ``limit`` bytes, else refused)."""
    real = check_file(path)
    try:
        with open(real, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UntrustedPathError(path, exc.strerror or str(exc)) from None
    if len(data) > limit:
        raise UntrustedPathError(path, f"larger than {limit} bytes")
    return data
