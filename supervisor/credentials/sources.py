"""Where each variable's value comes from: the supervisor's environment, else a file.

``--credentials-dir DIR`` holds one file per variable, as a Kubernetes Secret volume
mounts them (``DIR/VAR`` is a symlink into ``DIR/..data/``, swapped atomically on
rotation). One trailing newline is stripped. A file is trusted only when, with symlinks
resolved, it stays inside DIR, is a regular file owned by root (or by us), and neither it
nor any directory from DIR down to it is writable by group or others (a sticky directory
owned by root, as Kubernetes mounts it, is fine). Diagnostics name the variable and the
file, never a value.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

MAX_VALUE_BYTES = 1 << 20
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A trust check takes (directory, path) and raises ValueError saying what is wrong.
TrustCheck = Callable[[str, str], None]


def check_trusted_file(directory: str, path: str) -> None:
    """The ownership and mode rules above; ``ValueError`` names the offending path."""
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        raise ValueError(f"{path} resolves outside {directory}")
    uid_ok = (0, os.geteuid())
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if st.st_uid not in uid_ok:
        raise ValueError(f"{path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(f"{path} is writable by group or others")
    here = os.path.dirname(real)
    while True:
        d = os.stat(here)
        if d.st_uid not in uid_ok:
            raise ValueError(f"{here} is owned by uid {d.st_uid}, not root")
        writable = d.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not (d.st_mode & stat.S_ISVTX and d.st_uid == 0):
            raise ValueError(f"{here} is writable by group or others")
        if here == root:
            break
        here = os.path.dirname(here)


@dataclass(frozen=True, slots=True)
class Loaded:
    values: Mapping[str, str]  # variable → value (only variables that have one)
    origin: Mapping[str, str]  # variable → "environment" or the file path
    problems: tuple[str, ...] = field(default=())  # unreadable/untrusted files


def _read_file(directory: str, var: str, check: TrustCheck) -> str | None:
    path = os.path.join(directory, var)
    if not os.path.lexists(path):
        return None
    check(directory, path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = os.read(fd, MAX_VALUE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_VALUE_BYTES} bytes")
    if data.endswith(b"\n"):
        data = data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def load(
    variables: Iterable[str],
    environ: Mapping[str, str],
    directory: str | None,
    check: TrustCheck = check_trusted_file,
) -> Loaded:
    """Each variable's value: the environment's when set and non-empty, else its file's."""
    values: dict[str, str] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for var in sorted(set(variables)):
        if not VARIABLE.fullmatch(var):
            continue  # validation reports it; never a path component
        value = environ.get(var)
        if value:
            values[var], origin[var] = value, "environment"
            continue
        if directory is None:
            continue
        try:
            got = _read_file(directory, var, check)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(f"{var}: {reason}")
            continue
        if got:
            values[var], origin[var] = got, os.path.join(directory, var)
    return Loaded(values, origin, tuple(problems))
