"""Where each variable's value comes from: the supervisor's environment, else a file.

``--credentials-dir DIR`` holds one file per variable, as a Kubernetes Secret volume
mounts them (``DIR/VAR`` is a symlink into ``DIR/..data/``, swapped atomically on
rotation). One trailing newline is stripped. A file is trusted only when nobody but root
can change it or swap any entry on the way to it (``supervisor.trusted_files``, ARCHITECTURE.md
S11) and, symlinks resolved, it stays inside DIR. Diagnostics name the variable and the
file, never a value.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping

from supervisor.record import field, record

MAX_VALUE_BYTES = 1 << 20
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# A trust check takes (directory, path) and raises ValueError saying what is wrong.
TrustCheck = Callable[[str, str], None]


def check_trusted_file(directory: str, path: str) -> None:
    """``trusted_files.check_file`` (only root can change the file or swap any entry on the
    way to it; read-only mounts count as unwritable), and the file, symlinks resolved,
    stays inside ``directory``. ``ValueError`` names the path, never the content."""
    from supervisor import trusted_files

    try:
        real = trusted_files.check_file(path)
    except trusted_files.UntrustedPathError as exc:
        raise ValueError(exc.reason) from None
    root = os.path.realpath(directory)
    if os.path.commonpath([root, real]) != root:
        raise ValueError(f"{path} resolves outside {directory}")


@record
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


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
            if not _utf8(value):  # undecodable bytes (surrogate escapes): cannot be sent
                problems.append(f"{var}: the environment's value is not UTF-8 text")
                continue
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
