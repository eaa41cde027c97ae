"""The files ``run`` reads, made safe to read while the agent runs (ARCHITECTURE.md S11).

At start every path option is made absolute against the directory ``run`` was started in,
and the supervisor then moves to ``/``: nothing it reads later resolves against a working
directory the agent may own (the image's ``/workspace``). Profiles are checked with
``trusted_files`` at start and before every reload; the ``--ca-bundle`` is checked and read
once, before the agent starts, into a sealed in-memory file that the TLS code opens by a
``/proc/self/fd`` path no other process can reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os

from supervisor import trusted_files
from supervisor.settings import RunSettings, SetupError

CA_BUNDLE_LIMIT = 16 << 20
_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"
# Paths in RunSettings that name files or directories (``audit_log`` '-' is stderr).
_PATH_FIELDS = ("ca_bundle", "audit_log", "workdir")


def current_directory() -> str | None:
    with contextlib.suppress(OSError):
        return os.getcwd()
    return None


def absolute_settings(settings: RunSettings, cwd: str | None) -> RunSettings:
    """Every path option of ``settings`` made absolute against ``cwd``."""

    def fix(option: str, path: str) -> str:
        if os.path.isabs(path):
            return path
        if cwd is None:
            raise SetupError(option, f"{path!r} is relative and the current directory is gone")
        return trusted_files.absolute(path, cwd)

    changes: dict[str, object] = {
        "profiles": tuple(fix("--profile", p) for p in settings.profiles)
    }
    for name in _PATH_FIELDS:
        value = getattr(settings, name)
        if value is not None and not (name == "audit_log" and value == "-"):
            changes[name] = fix("--" + name.replace("_", "-"), value)
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def check_profiles(paths: tuple[str, ...]) -> None:
    """Raise SetupError('--profile', ...) naming the first profile file that is not safe."""
    for path in paths:
        try:
            trusted_files.check_file(path)
        except trusted_files.UntrustedPathError as exc:
            raise SetupError("--profile", str(exc)) from None


def _sealed_copy(data: bytes) -> int:
    fd = os.memfd_create("openshell-ca-bundle", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL,
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_ca_bundle(settings: RunSettings) -> RunSettings:
    """Check and read ``--ca-bundle`` now; the returned settings name a sealed copy that
    lives as long as this process (the fd is close-on-exec and the sandbox's child closes
    it before anything else)."""
    path = settings.ca_bundle
    if path is None:
        return settings
    try:
        data = trusted_files.read_file(path, CA_BUNDLE_LIMIT)
    except trusted_files.UntrustedPathError as exc:
        raise SetupError("--ca-bundle", str(exc)) from None
    if _PEM_MARKER not in data:
        raise SetupError("--ca-bundle", f"{path} holds no PEM certificate")
    try:
        fd = _sealed_copy(data)
    except OSError as exc:
        raise SetupError("--ca-bundle", f"cannot keep a copy in memory: {exc}") from None
    return dataclasses.replace(settings, ca_bundle=f"/proc/self/fd/{fd}")


def prepare(settings: RunSettings) -> tuple[RunSettings, str]:
    """Absolute paths, then ``chdir('/')``, checked profiles and the CA bundle in memory.
    Returns the settings to run with and the directory ``run`` was started in (the agent's
    default working directory)."""
    cwd = current_directory()
    settings = absolute_settings(settings, cwd)
    os.chdir("/")
    check_profiles(settings.profiles)
    settings = load_ca_bundle(settings)
    return settings, cwd or "/"
