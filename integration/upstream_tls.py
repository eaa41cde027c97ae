"""A throwaway CA and a server certificate it signs, for an end-to-end test's TLS upstream.

The CA goes to ``directory/upstream-ca.pem`` (0644: the supervisor reads it as --ca-bundle
and the agent's uid may too); the leaf's key exists on disk only in a root-only (0700)
temporary directory, removed once the server context has loaded it.
"""

from __future__ import annotations

import datetime
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def upstream_tls(
    directory: Path, *, ca_name: str, leaf_name: str, sans: Sequence[x509.GeneralName]
) -> tuple[Path, ssl.SSLContext]:
    """The CA's PEM path and a server context for a leaf valid for ``sans`` (one day)."""
    now = datetime.datetime.now(datetime.UTC)
    before, after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name)).issuer_name(_name(ca_name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(before).not_valid_after(after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(leaf_name)).issuer_name(_name(ca_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(before).not_valid_after(after)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = directory / "upstream-ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ca_pem.chmod(0o644)
    private = Path(tempfile.mkdtemp(prefix="e2e-upstream-key-"))  # root-only (0700)
    chain = private / "leaf.pem"
    chain.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        + leaf.public_bytes(serialization.Encoding.PEM)
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain)
    shutil.rmtree(private)
    return ca_pem, ctx
