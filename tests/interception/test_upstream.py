"""The supervisor's outbound TLS context, against real servers on 127.0.0.1."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from supervisor.proxy.interception import SandboxCA, build_upstream_context
from supervisor.settings import SetupError
from tests.interception.tlshelp import connect, self_signed_context, tcp_tls_server


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[SandboxCA, str]:
    ca = SandboxCA.generate(["localhost", "127.0.0.1"])
    path = tmp_path_factory.mktemp("upstream") / "extra.pem"
    path.write_bytes(ca.ca_pem)
    return ca, str(path)


def test_context_settings() -> None:
    ctx = build_upstream_context(None)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.cert_store_stats()["x509_ca"] > 10  # system roots loaded


def test_rejects_self_signed_server() -> None:
    ctx = build_upstream_context(None)
    with tcp_tls_server(self_signed_context("localhost")) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(ctx, port, "localhost")


def test_accepts_server_signed_by_extra_bundle(test_ca: tuple[SandboxCA, str]) -> None:
    ca, bundle = test_ca
    ctx = build_upstream_context(bundle)
    for name in ("localhost", "127.0.0.1"):
        with tcp_tls_server(ca.server_context(name)) as port:
            assert connect(ctx, port, name) == "http/1.1"


def test_extra_ca_is_needed(test_ca: tuple[SandboxCA, str]) -> None:
    ca, _ = test_ca
    with tcp_tls_server(ca.server_context("localhost")) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(build_upstream_context(None), port, "localhost")


def test_hostname_is_checked(test_ca: tuple[SandboxCA, str]) -> None:
    ca, bundle = test_ca
    with tcp_tls_server(ca.server_context("localhost")) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(build_upstream_context(bundle), port, "127.0.0.1")


def test_self_signed_still_rejected_with_extra_bundle(test_ca: tuple[SandboxCA, str]) -> None:
    _, bundle = test_ca
    with tcp_tls_server(self_signed_context("localhost")) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(build_upstream_context(bundle), port, "localhost")


@pytest.mark.parametrize(
    "content",
    [
        None,  # missing file
        b"",
        b"not a certificate\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_bad_ca_bundle_is_a_setup_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SetupError) as info:
        build_upstream_context(str(path))
    assert info.value.step == "--ca-bundle"
