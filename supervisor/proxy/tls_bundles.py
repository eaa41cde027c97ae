"""Agent-readable trust bundles: the system roots plus the sandbox CA, and the CA alone.

Only PEM ``CERTIFICATE`` blocks are ever copied, so nothing but certificates can reach a
file the agent reads, whatever else the system bundle holds.
"""

from __future__ import annotations

import contextlib
import os
import re

from supervisor.record import record

ROOTS_AND_CA_NAME = "ca-bundle.pem"
CA_ONLY_NAME = "sandbox-ca.pem"
BUNDLE_MODE = 0o644

# Variables pointing at the roots-and-CA bundle (OpenSSL, requests, curl, git) and at the
# CA alone (Node adds it to its built-in roots).
ROOTS_AND_CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
CA_ONLY_VAR = "NODE_EXTRA_CA_CERTS"

_DEBIAN_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Greedy: the body's class holds no "-", so it stops where the lazy form would and the
# matches are the same; the lazy form tried the END marker after every byte of the system
# bundle (~30M instructions of `run`'s start-up for Debian's 220 KB).
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)


@record
class BundlePaths:
    roots_and_ca: str  # system roots + sandbox CA
    ca_only: str  # the sandbox CA alone
    system_roots: str | None  # the system bundle copied in; None = none found (CA only)


def pem_certificates(data: bytes) -> list[bytes]:
    """The PEM certificate blocks in ``data``, each normalized to LF line ends."""
    return [m.group(0).replace(b"\r\n", b"\n") for m in _PEM_CERT.finditer(data)]


def find_system_bundle() -> str | None:
    """The system's CA bundle file: OpenSSL's configured file, Debian's, then certifi's.

    ``$SSL_CERT_FILE``, then Debian's file (OpenSSL's default file on Debian is a link to
    it), are looked at before asking OpenSSL: importing ssl costs ~5 ms of `run`'s start-up.
    """
    env_file = os.environ.get("SSL_CERT_FILE")
    for path in (env_file, None if env_file else _DEBIAN_BUNDLE):
        if path and os.path.isfile(path) and _has_certificate(path):
            return path
    import ssl

    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile, _DEBIAN_BUNDLE):
        if path and os.path.isfile(path) and _has_certificate(path):
            return path
    try:  # last resort, imported only when needed (it is on the start-up path)
        import certifi
    except ImportError:
        return None
    path = certifi.where()
    return path if os.path.isfile(path) and _has_certificate(path) else None


def _has_certificate(path: str) -> bool:
    # A cheap look for one marker: the caller parses the blocks it copies anyway.
    try:
        with open(path, "rb") as f:
            return b"-----BEGIN CERTIFICATE-----" in f.read()
    except OSError:
        return False


def write_bundles(directory: str, ca_pem: bytes, system_bundle: str | None = None) -> BundlePaths:
    """Write both bundles (mode 0644, atomically) into ``directory``, which must exist.

    ``system_bundle`` overrides the discovered system bundle (tests, unusual images).
    """
    source = system_bundle if system_bundle is not None else find_system_bundle()
    roots: list[bytes] = []
    if source is not None:
        with open(source, "rb") as f:
            roots = pem_certificates(f.read())
    ca_blocks = pem_certificates(ca_pem)
    if len(ca_blocks) != 1:
        raise ValueError("ca_pem must hold exactly one certificate")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _write_atomic(dir_fd, ROOTS_AND_CA_NAME, _join([*roots, *ca_blocks]))
        _write_atomic(dir_fd, CA_ONLY_NAME, _join(ca_blocks))
    finally:
        os.close(dir_fd)
    return BundlePaths(
        roots_and_ca=os.path.join(directory, ROOTS_AND_CA_NAME),
        ca_only=os.path.join(directory, CA_ONLY_NAME),
        system_roots=source,
    )


def env_vars(paths: BundlePaths) -> dict[str, str]:
    """The five CA variables of the agent's environment (ARCHITECTURE.md 2)."""
    env = dict.fromkeys(ROOTS_AND_CA_VARS, paths.roots_and_ca)
    env[CA_ONLY_VAR] = paths.ca_only
    return env


def _join(blocks: list[bytes]) -> bytes:
    return b"".join(block + b"\n" for block in blocks)


def _write_atomic(dir_fd: int, name: str, data: bytes) -> None:
    # Write beside the target, then rename: readers never see a partial bundle, and
    # O_EXCL|O_NOFOLLOW refuse to write through anything planted under the temporary name.
    tmp = f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, BUNDLE_MODE, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, BUNDLE_MODE)  # independent of the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # No fsync: the files live for one run; the rename alone gives readers atomicity.
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
