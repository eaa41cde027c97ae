"""The files ``run`` reads, made safe to read while the agent runs (ARCHITECTURE.md S11).

At start every path option is made absolute against the directory ``run`` was started in,
and the supervisor then moves to ``/``: nothing it reads later resolves against a working
directory the agent may own (the image's ``/workspace``). Profiles and the sandbox policy
are checked with ``trusted_files`` at start and before every reload, the credentials
directory and the ``--audit-log``'s directory at start (root opens the log with O_CREAT:
an agent-made symlink on the way would let it choose the file root creates or appends
to); the ``--ca-bundle`` is checked and read
once, before the agent starts, into a sealed in-memory file that the TLS code opens by a
``/proc/self/fd`` path no other process can reach.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from supervisor import trusted_files
from supervisor.record import replace
from supervisor.settings import RunSettings, SetupError

CA_BUNDLE_LIMIT = 16 << 20
_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"
# Paths in RunSettings that name files or directories (``audit_log`` '-' is stderr).
_PATH_FIELDS = ("ca_bundle", "audit_log", "workdir", "policy", "credentials_dir")


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
    return replace(settings, **changes)  # type: ignore[arg-type]


def check_config_files(settings: RunSettings) -> None:
    """Raise SetupError naming the option and the first file that is not safe to read:
    the profiles and the sandbox policy, both re-read on every change."""
    named = [("--profile", p) for p in settings.profiles]
    if settings.policy is not None:
        named.append(("--policy", settings.policy))
    for option, path in named:
        try:
            trusted_files.check_file(path)
        except trusted_files.UntrustedPathError as exc:
            raise SetupError(option, str(exc)) from None


def check_credentials_dir(settings: RunSettings) -> None:
    """The directory of static-credential files: nobody but root may add, remove or swap
    its entries (each file's own owner and mode are the credential store's to check)."""
    if settings.credentials_dir is None:
        return
    try:
        trusted_files.check_directory(settings.credentials_dir)
    except trusted_files.UntrustedPathError as exc:
        raise SetupError("--credentials-dir", str(exc)) from None


def check_audit_log(settings: RunSettings) -> None:
    """The audit log's directory: nobody but root may swap an entry on the way to it (the
    log is opened O_NOFOLLOW, which guards its last part only); an existing log must be a
    file only root can change (else the agent could rewrite what was logged)."""
    path = settings.audit_log
    if path is None or path == "-":
        return
    try:
        trusted_files.check_directory(os.path.dirname(path) or "/")
        if os.path.lexists(path):
            trusted_files.check_file(path)
    except trusted_files.UntrustedPathError as exc:
        raise SetupError("--audit-log", f"{path}: {exc.reason}") from None


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
    return replace(settings, ca_bundle=f"/proc/self/fd/{fd}")


def prepare(settings: RunSettings) -> tuple[RunSettings, str]:
    """Absolute paths, then ``chdir('/')``, checked profiles and the CA bundle in memory.
    Returns the settings to run with and the directory ``run`` was started in (the agent's
    default working directory)."""
    cwd = current_directory()
    settings = absolute_settings(settings, cwd)
    os.chdir("/")
    check_config_files(settings)
    check_credentials_dir(settings)
    check_audit_log(settings)
    settings = load_ca_bundle(settings)
    return settings, cwd or "/"
