"""The client-side TLS context of the supervisor's own outbound connections (upstreams and
token endpoints): verification always on, system roots plus the optional ``--ca-bundle``.
"""

from __future__ import annotations

import ssl

from supervisor.proxy.tls_bundles import find_system_bundle, pem_certificates
from supervisor.settings import SetupError

ALPN = ["http/1.1"]


def build_upstream_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context: TLS >= 1.2, ALPN http/1.1, hostname checked.

    Raises ``SetupError("--ca-bundle", ...)`` when ``ca_bundle`` is unreadable or holds no
    certificate: a bad trust option fails the run at start, never silently later.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(ALPN)
    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    # OpenSSL's defaults may point at nothing (no ca-certificates in the image): then the
    # same bundle the agent gets (e.g. certifi's) keeps the two views of "system roots" equal.
    system = find_system_bundle()
    if system is not None and system != ssl.get_default_verify_paths().cafile:
        ctx.load_verify_locations(cafile=system)
    if ca_bundle is not None:
        _load_extra(ctx, ca_bundle)
    return ctx


def _load_extra(ctx: ssl.SSLContext, path: str) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SetupError("--ca-bundle", f"cannot read {path}: {exc.strerror}") from None
    blocks = pem_certificates(data)
    if not blocks:
        raise SetupError("--ca-bundle", f"{path} holds no PEM certificate")
    try:
        ctx.load_verify_locations(cadata=b"".join(blocks).decode("ascii"))
    except ssl.SSLError as exc:
        raise SetupError("--ca-bundle", f"{path}: invalid certificate ({exc.reason})") from None
