"""Helpers for the interception tests: real TLS handshakes over a socketpair or 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from supervisor.proxy.tls_memload import load_chain_in_memory

TIMEOUT = 5.0


def client_context(cafile: str) -> ssl.SSLContext:
    """A client trusting only ``cafile``, hostname checked (like a strict agent tool)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _serve_one(
    server_ctx: ssl.SSLContext, sock: socket.socket, errors: list[BaseException]
) -> None:
    try:
        with server_ctx.wrap_socket(sock, server_side=True) as tls:
            tls.recv(1)  # wait for the client to finish (it closes)
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)
    finally:
        sock.close()


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> tuple[x509.Certificate, str | None]:
    """Handshake over a socketpair; returns the served leaf and the negotiated ALPN.

    Client-side verification errors propagate (``ssl.SSLCertVerificationError``).
    """
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    errors: list[BaseException] = []
    thread = threading.Thread(target=_serve_one, args=(server_ctx, a, errors), daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
            alpn = tls.selected_alpn_protocol()
    finally:
        b.close()
        thread.join(TIMEOUT)
    assert der is not None
    return x509.load_der_x509_certificate(der), alpn


@contextmanager
def tcp_tls_server(server_ctx: ssl.SSLContext) -> Iterator[int]:
    """A TLS server on 127.0.0.1 answering one connection; yields its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    errors: list[BaseException] = []

    def accept() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            errors.append(exc)
            return
        conn.settimeout(TIMEOUT)
        _serve_one(server_ctx, conn, errors)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(TIMEOUT)
        listener.close()


def connect(client_ctx: ssl.SSLContext, port: int, server_hostname: str) -> str | None:
    """Handshake with the 127.0.0.1 server on ``port``; returns the ALPN protocol."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.selected_alpn_protocol()


def self_signed_context(host: str) -> ssl.SSLContext:
    """A server context with a self-signed certificate for ``host`` (a DNS name)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_chain_in_memory(ctx, cert.public_bytes(serialization.Encoding.PEM), key)
    return ctx


def forged_leaf_context(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, san: x509.GeneralName
) -> ssl.SSLContext:
    """A server context with a leaf signed by the CA key for any name, bypassing the CA's
    own checks: shows what a client does with a name outside the constraints."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_chain_in_memory(ctx, cert.public_bytes(serialization.Encoding.PEM), key)
    return ctx


@contextmanager
def https_server(server_ctx: ssl.SSLContext, connections: int = 1) -> Iterator[int]:
    """A minimal HTTPS server on 127.0.0.1 answering ``ok`` to ``connections`` requests."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(connections)
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        for _ in range(connections):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
            except (OSError, ssl.SSLError):
                pass  # a client that refused our certificate
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(TIMEOUT)
