"""The per-run CA and its leaves: fields, constraints, validity, cache, key confinement."""

from __future__ import annotations

import copy
import ipaddress
import pickle
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from supervisor.profiles.model import Endpoint, Profile
from supervisor.proxy.interception import (
    HostError,
    HostNotCovered,
    InterceptionError,
    SandboxCA,
    hosts_to_intercept,
)
from tests.interception.tlshelp import client_context, forged_leaf_context, handshake

HOSTS = ["api.example.com", "*.github.com", "127.0.0.1", "::1"]


@pytest.fixture(scope="module")
def ca() -> SandboxCA:
    return SandboxCA.generate(HOSTS)


@pytest.fixture(scope="module")
def ca_file(ca: SandboxCA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(ca.ca_pem)
    return str(path)


def leaf_for(ca: SandboxCA, ca_file: str, host: str) -> x509.Certificate:
    leaf, alpn = handshake(ca.server_context(host), client_context(ca_file), host)
    assert alpn == "http/1.1"
    return leaf


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


# --- the CA certificate ---------------------------------------------------------------


def test_ca_is_a_constrained_p256_ca(ca: SandboxCA) -> None:
    cert = ca.ca_certificate
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    cert.verify_directly_issued_by(cert)  # self-signed
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature and not ku.value.key_encipherment
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert set(nc.value.permitted_subtrees or []) == {
        x509.DNSName("api.example.com"),
        x509.DNSName("github.com"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    }
    assert nc.value.excluded_subtrees is None


def test_ca_validity_is_short_and_backdated() -> None:
    before = datetime.now(UTC)
    cert = SandboxCA.generate(["example.com"]).ca_certificate
    after = datetime.now(UTC)
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    # Backdated a few minutes (second precision in the certificate).
    assert before - timedelta(minutes=6) <= nb <= after - timedelta(minutes=4)
    assert na - nb <= timedelta(days=7, minutes=6)
    assert na >= before + timedelta(days=7) - timedelta(seconds=1)


def test_dns_only_ca_excludes_every_ip() -> None:
    nc = SandboxCA.generate(["example.com"]).ca_certificate.extensions.get_extension_for_class(
        x509.NameConstraints
    )
    assert set(nc.value.excluded_subtrees or []) == {
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    }


def test_ip_only_ca_permits_no_real_dns_name() -> None:
    nc = SandboxCA.generate(["10.0.0.1"]).ca_certificate.extensions.get_extension_for_class(
        x509.NameConstraints
    )
    assert set(nc.value.permitted_subtrees or []) == {
        x509.DNSName("invalid"),
        x509.IPAddress(ipaddress.ip_network("10.0.0.1/32")),
    }


def test_unanchored_pattern_gives_an_unconstrained_ca(tmp_path: Path) -> None:
    ca = SandboxCA.generate(["**", "api.example.com"])
    assert ca.constraints is None
    with pytest.raises(x509.ExtensionNotFound):
        ca.ca_certificate.extensions.get_extension_for_class(x509.NameConstraints)
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.ca_pem)
    leaf, _ = handshake(
        ca.server_context("anything.test"), client_context(str(path)), "anything.test"
    )
    assert leaf.issuer == ca.ca_certificate.subject


def test_each_run_gets_its_own_ca() -> None:
    a, b = SandboxCA.generate(["example.com"]), SandboxCA.generate(["example.com"])
    assert a.ca_pem != b.ca_pem
    assert a.ca_certificate.subject != b.ca_certificate.subject


def test_bad_pattern_is_refused() -> None:
    with pytest.raises(HostError):
        SandboxCA.generate(["exa mple.com"])


# --- leaves (served in real handshakes) ------------------------------------------------


def test_dns_leaf_fields(ca: SandboxCA, ca_file: str) -> None:
    before = datetime.now(UTC)
    leaf = leaf_for(ca, ca_file, "api.example.com")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [x509.DNSName("api.example.com")]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "api.example.com"
    assert leaf.issuer == ca.ca_certificate.subject
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    assert leaf.not_valid_before_utc <= before - timedelta(minutes=4)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(hours=24, minutes=6)
    leaf.verify_directly_issued_by(ca.ca_certificate)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]"])
def test_ip_literal_leaf_has_ip_san_and_no_cn(ca: SandboxCA, ca_file: str, host: str) -> None:
    bare = host.strip("[]")
    leaf, _ = handshake(ca.server_context(host), client_context(ca_file), bare)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == [x509.IPAddress(ipaddress.ip_address(bare))]
    assert san.critical  # empty subject
    assert len(leaf.subject) == 0


def test_long_name_goes_in_san_only(tmp_path: Path) -> None:
    host = "a" * 60 + ".example.com"
    ca = SandboxCA.generate(["example.com"])
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.ca_pem)
    leaf, _ = handshake(ca.server_context(host), client_context(str(path)), host)
    assert len(leaf.subject) == 0
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


@pytest.mark.parametrize("host", ["api.example.com", "deep.sub.github.com", "github.com"])
def test_leaf_chain_verifies_with_cryptography(ca: SandboxCA, ca_file: str, host: str) -> None:
    leaf = leaf_for(ca, ca_file, host)
    verifier = (
        PolicyBuilder()
        .store(Store([ca.ca_certificate]))
        .time(datetime.now(UTC))
        .build_server_verifier(x509.DNSName(host))
    )
    chain = verifier.verify(leaf, [])
    assert chain[-1] == ca.ca_certificate
    other = (
        PolicyBuilder()
        .store(Store([ca.ca_certificate]))
        .time(datetime.now(UTC))
        .build_server_verifier(x509.DNSName("other.example.com"))
    )
    with pytest.raises(VerificationError):
        other.verify(leaf, [])


def test_client_checks_hostname(ca: SandboxCA, ca_file: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ca.server_context("api.example.com"), client_context(ca_file), "x.github.com")


def test_untrusting_client_rejects_leaf(ca: SandboxCA, tmp_path: Path) -> None:
    stranger = tmp_path / "other.pem"
    stranger.write_bytes(SandboxCA.generate(["api.example.com"]).ca_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(
            ca.server_context("api.example.com"), client_context(str(stranger)), "api.example.com"
        )


def test_server_context_settings(ca: SandboxCA) -> None:
    ctx = ca.server_context("api.example.com")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_NONE  # the agent presents no client certificate


# --- name constraints as clients enforce them -------------------------------------------


def test_hosts_outside_constraints_are_refused(ca: SandboxCA) -> None:
    for host in ["evil.com", "example.com", "githubxcom", "10.0.0.1", "::2"]:
        assert not ca.covers(host)
        with pytest.raises(HostNotCovered):
            ca.server_context(host)
    for host in ["*.github.com", "a..b", ""]:
        assert not ca.covers(host)
        with pytest.raises(HostError):
            ca.server_context(host)


@pytest.mark.parametrize(
    ("hosts", "san", "name"),
    [
        (["api.example.com"], x509.DNSName("evil.com"), "evil.com"),
        (["api.example.com"], x509.IPAddress(ipaddress.ip_address("127.0.0.2")), "127.0.0.2"),
        (["api.example.com"], x509.IPAddress(ipaddress.ip_address("::1")), "::1"),
        (["127.0.0.1"], x509.DNSName("localhost"), "localhost"),
        (["127.0.0.1"], x509.IPAddress(ipaddress.ip_address("127.0.0.2")), "127.0.0.2"),
    ],
)
def test_openssl_rejects_leaf_forged_outside_constraints(
    tmp_path: Path, hosts: list[str], san: x509.GeneralName, name: str
) -> None:
    """Even a leaf signed with the CA key is useless for a name outside the constraints."""
    ca = SandboxCA.generate(hosts)
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.ca_pem)
    forged = forged_leaf_context(ca._key, ca.ca_certificate, san)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(forged, client_context(str(path)), name)
    # 47 = X509_V_ERR_PERMITTED_VIOLATION, 48 = X509_V_ERR_EXCLUDED_VIOLATION
    assert info.value.verify_code in (47, 48)


# --- the context cache ----------------------------------------------------------------


def test_cache_reuses_and_evicts_least_recently_used() -> None:
    ca = SandboxCA.generate(["example.com"], cache_size=3)
    a = ca.server_context("a.example.com")
    b = ca.server_context("b.example.com")
    ca.server_context("c.example.com")
    assert ca.server_context("A.example.com.") is a  # normalized key
    ca.server_context("d.example.com")  # evicts b, the least recently used
    assert ca.cached_hosts() == ["c.example.com", "a.example.com", "d.example.com"]
    assert ca.server_context("a.example.com") is a
    assert ca.server_context("b.example.com") is not b
    assert len(ca.cached_hosts()) == 3


def test_default_cache_bound_is_256() -> None:
    ca = SandboxCA.generate(["example.com"])
    for i in range(260):
        ca.server_context(f"h{i}.example.com")
    hosts = ca.cached_hosts()
    assert len(hosts) == 256
    assert hosts[0] == "h4.example.com" and hosts[-1] == "h259.example.com"


def test_cached_leaf_is_renewed_before_it_expires() -> None:
    clock = FakeClock()
    ca = SandboxCA.generate(["example.com"], leaf_validity=timedelta(hours=3), clock=clock)
    first = ca.server_context("example.com")
    clock.now += timedelta(hours=1, minutes=59)
    assert ca.server_context("example.com") is first
    clock.now += timedelta(minutes=2)  # within an hour of the leaf's end
    assert ca.server_context("example.com") is not first


def test_leaf_never_outlives_the_ca(tmp_path: Path) -> None:
    ca = SandboxCA.generate(["example.com"], validity=timedelta(hours=2))
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.ca_pem)
    leaf, _ = handshake(ca.server_context("example.com"), client_context(str(path)), "example.com")
    assert leaf.not_valid_after_utc == ca.ca_certificate.not_valid_after_utc


def test_expired_ca_issues_nothing() -> None:
    clock = FakeClock()
    ca = SandboxCA.generate(["example.com"], validity=timedelta(hours=1), clock=clock)
    clock.now += timedelta(hours=1, seconds=1)
    with pytest.raises(InterceptionError):
        ca.server_context("example.com")


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SandboxCA.generate(["example.com"], cache_size=0)


# --- the private key stays inside --------------------------------------------------------


def _key_markers(key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [scalar, scalar.hex().encode(), b"PRIVATE KEY"]


def test_repr_and_public_attributes_hold_no_key(ca: SandboxCA) -> None:
    markers = _key_markers(ca._key)
    for text in (repr(ca).encode(), str(ca).encode()):
        assert not any(m in text for m in markers)
    for name in dir(ca):
        if name.startswith("_"):
            continue
        value = getattr(ca, name)
        assert not isinstance(value, ec.EllipticCurvePrivateKey), name
        if isinstance(value, bytes):
            assert not any(m in value for m in markers), name
    assert b"PRIVATE KEY" not in ca.ca_pem


def test_ca_cannot_be_pickled_or_copied(ca: SandboxCA) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(ca)
    with pytest.raises(TypeError):
        copy.copy(ca)
    with pytest.raises(TypeError):
        copy.deepcopy(ca)


def test_ca_pem_is_one_public_certificate(ca: SandboxCA) -> None:
    certs = x509.load_pem_x509_certificates(ca.ca_pem)
    assert certs == [ca.ca_certificate]
    assert ca.ca_certificate.public_bytes(serialization.Encoding.PEM) == ca.ca_pem


def test_fingerprint_in_repr(ca: SandboxCA) -> None:
    assert ca.ca_certificate.fingerprint(hashes.SHA256()).hex() in repr(ca)


# --- which hosts the runner hands over ----------------------------------------------------


def _endpoint(host: str, tls: str) -> Endpoint:
    return Endpoint(
        host=host,
        ports=(443,),
        path=None,
        protocol="rest",
        tls=tls,
        access="full",
        enforcement="enforce",
        allowed_ips=(),
    )


def test_hosts_to_intercept_skips_tls_skip_endpoints() -> None:
    profile = Profile(
        id="p",
        display_name="P",
        description="",
        category="",
        credentials=(),
        endpoints=(
            _endpoint("api.example.com", ""),
            _endpoint("*.github.com", "terminate"),
            _endpoint("raw.example.org", "skip"),
            _endpoint("api.example.com", "terminate"),
        ),
        binaries=(),
        source="test",
    )
    assert hosts_to_intercept([profile]) == ("*.github.com", "api.example.com")


def test_concurrent_callers_share_a_bounded_cache() -> None:
    from concurrent.futures import ThreadPoolExecutor

    ca = SandboxCA.generate(["example.com"], cache_size=8)
    hosts = [f"h{i % 12}.example.com" for i in range(120)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        contexts = list(pool.map(ca.server_context, hosts))
    assert all(isinstance(c, ssl.SSLContext) for c in contexts)
    cached = ca.cached_hosts()
    assert len(cached) == 8 and len(set(cached)) == 8
