"""Throwaway certificates for the proxy's TLS tests (a CA and leaves naming 127.0.0.1)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_cert(
    tmp: Path, name: str, *, issuer: tuple[Any, Any] | None = None, ca: bool = False
) -> tuple[Any, Any, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cpath, kpath = tmp / f"{name}.crt", tmp / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key, cpath, kpath


@dataclass(frozen=True)
class Pki:
    agent_side: ssl.SSLContext  # the interception leaf for 127.0.0.1, signed by ca_path
    ca_path: Path  # the sandbox CA an agent trusts
    upstream_server: ssl.SSLContext  # an upstream's leaf for 127.0.0.1
    upstream_ca_path: Path  # the CA that signed it

    def upstream_client(self) -> ssl.SSLContext:
        """The proxy's outbound context, trusting the upstream's CA."""
        ctx = ssl.create_default_context(cafile=str(self.upstream_ca_path))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def make_pki(tmp: Path) -> Pki:
    ca_cert, ca_key, ca_path, _ = make_cert(tmp, "sandbox-ca", ca=True)
    _, _, leaf_path, leaf_key = make_cert(tmp, "leaf", issuer=(ca_cert, ca_key))
    agent_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    agent_side.load_cert_chain(leaf_path, leaf_key)
    up_ca, up_ca_key, up_ca_path, _ = make_cert(tmp, "upstream-ca", ca=True)
    _, _, up_leaf, up_key = make_cert(tmp, "upstream", issuer=(up_ca, up_ca_key))
    upstream_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_server.load_cert_chain(up_leaf, up_key)
    return Pki(agent_side, ca_path, upstream_server, up_ca_path)
