"""Workload API address rules: which directory the agent's mount namespace hides
(ARCHITECTURE.md 3.2).

``parse_socket_address`` is pure; ``resolve_socket_path`` adds the filesystem facts (symlinks
resolved, the directory exists). Both raise SetupError(step="--spiffe-socket").
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable

from supervisor.record import record
from supervisor.settings import SetupError

STEP = "--spiffe-socket"

# Hiding one of these would blank a directory every program relies on (ARCHITECTURE.md S4),
# so the socket must live in a dedicated subdirectory instead.
SHARED_ROOTS = frozenset(
    {
        "/",
        "/run",
        "/var",
        "/var/run",
        "/tmp",  # noqa: S108 - a name in a deny-list, not a temp file
        "/etc",
        "/home",
        "/usr",
        "/opt",
        "/srv",
        "/dev",
        "/proc",
        "/sys",
        "/root",
        "/mnt",
        "/media",
        "/boot",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
    }
)


@record
class SocketPath:
    path: str  # absolute, symlinks resolved
    directory: str  # the dedicated directory the agent's namespace hides


def parse_socket_address(address: str) -> str:
    """Return the absolute filesystem path named by ``unix:///abs``, ``unix:/abs`` or ``/abs``."""
    if not address:
        raise SetupError(STEP, "empty Workload API address")
    if "\0" in address:
        raise SetupError(STEP, "NUL byte in Workload API address")
    scheme, sep, rest = address.partition(":")
    if sep and not address.startswith("/"):
        if scheme.lower() != "unix":
            raise SetupError(
                STEP,
                f"scheme {scheme!r} not supported: only unix sockets can be hidden from the agent",
            )
        if rest.startswith("//"):
            rest = rest[2:]
            if not rest.startswith("/"):
                raise SetupError(STEP, "unix:// address must be followed by an absolute path")
        path = rest
    else:
        path = address
    if not path.startswith("/"):
        raise SetupError(STEP, f"path must be absolute, got {path!r}")
    return posixpath.normpath(path)


def check_directory(directory: str) -> None:
    """The hidden directory must be dedicated to the socket, never ``/`` or a shared root."""
    if directory in SHARED_ROOTS:
        raise SetupError(
            STEP,
            f"socket directory {directory} is '/' or a shared root; hiding it would blank it "
            "for the agent: put the socket in a dedicated subdirectory (e.g. /run/spire/)",
        )


def resolve_socket_path(
    address: str,
    realpath: Callable[[str], str] = os.path.realpath,
    isdir: Callable[[str], bool] = os.path.isdir,
) -> SocketPath:
    """Parse ``address`` and apply the rules to the real path (symlinks of every component)."""
    given = parse_socket_address(address)
    # Both the directory as written and the real one must be dedicated: a symlinked shared
    # root (/var/run -> /run) is still a shared root.
    check_directory(posixpath.dirname(given))
    path = realpath(given)
    directory = posixpath.dirname(path)
    check_directory(directory)
    if not isdir(directory):
        raise SetupError(STEP, f"socket directory {directory} does not exist")
    return SocketPath(path=path, directory=directory)
