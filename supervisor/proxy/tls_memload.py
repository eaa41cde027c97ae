"""Load a certificate chain and private key into an ``ssl.SSLContext`` without a key file.

Python's ``ssl`` only loads keys from paths. An anonymous memory file (``memfd_create``)
gives one: it has no name in any file system, is never on disk, is opened through
``/proc/self/fd/N`` (visible only to this process and root in its PID namespace — the agent
runs in its own PID namespace) and disappears when the descriptor is closed, right after
loading. ``MFD_CLOEXEC`` keeps it out of any child spawned meanwhile.
"""

from __future__ import annotations

import os
import ssl

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes


def load_chain_in_memory(
    ctx: ssl.SSLContext, chain_pem: bytes, key: CertificateIssuerPrivateKeyTypes
) -> None:
    """Load ``chain_pem`` (leaf first) and ``key`` into ``ctx`` through a memfd.

    Raises ``OSError`` when memfd is unavailable: there is no fallback to a file on purpose.
    """
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.memfd_create("openshell-tls", os.MFD_CLOEXEC)
    try:
        _write_all(fd, chain_pem + key_pem)
        # The /proc path reopens the memfd at offset 0; the key follows the chain in one file.
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
