"""The hand-encoded CA certificate is byte for byte what cryptography's builder makes for
the same fields, for any set of intercepted hosts, and its signature verifies."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.proxy import ca_cert
from supervisor.proxy.tls_names import (
    NO_DNS_SUBTREE,
    Constraints,
    constraints_for,
    excluded_ip_networks,
)

KEY = ec.generate_private_key(ec.SECP256R1())


def builder_tbs(
    key: ec.EllipticCurvePrivateKey, serial: int, cn: str, not_before: datetime,
    not_after: datetime, constraints: Constraints | None,
) -> bytes:  # fmt: skip
    """The reference: what cryptography.x509 encodes for the CA's fields."""
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca_cert.ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])  # fmt: skip
    public = key.public_key()
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public).serial_number(serial)
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )  # fmt: skip
    if constraints is not None:
        permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in constraints.dns]
        if not constraints.dns:
            permitted.append(x509.DNSName(NO_DNS_SUBTREE))
        permitted.extend(x509.IPAddress(net) for net in constraints.ips)
        excluded = [x509.IPAddress(net) for net in excluded_ip_networks(constraints.ips)]
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded or None),
            critical=True,
        )
    return builder.sign(key, hashes.SHA256()).tbs_certificate_bytes


labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
dns_names = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(
    lambda n: not n.split(".")[-1].isdigit()
)
patterns = st.one_of(
    dns_names,
    dns_names.map(lambda n: "*." + n),
    dns_names.map(lambda n: "**." + n),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(patterns, min_size=1, max_size=6),
    st.integers(min_value=1, max_value=(1 << 159) - 1),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2080, 1, 1)),
    st.text(alphabet="abcdef0123456789 é", min_size=1, max_size=30),
)
def test_tbs_is_what_cryptography_encodes(
    hosts: list[str], serial: int, start: datetime, cn: str
) -> None:
    constraints = constraints_for(hosts)
    not_before = start.replace(tzinfo=UTC, microsecond=0)
    not_after = not_before + timedelta(days=7)
    ours = ca_cert.ca_tbs(KEY.public_key(), serial, cn, not_before, not_after, constraints)
    assert ours == builder_tbs(KEY, serial, cn, not_before, not_after, constraints)


def test_unconstrained_and_ip_only_cas_encode_alike() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    for constraints in (None, constraints_for(["10.0.0.1", "::1"]), constraints_for(["a.b"])):
        ours = ca_cert.ca_tbs(KEY.public_key(), 7, "x", now, now + timedelta(days=7), constraints)
        assert ours == builder_tbs(KEY, 7, "x", now, now + timedelta(days=7), constraints)


def test_made_ca_parses_verifies_and_is_backdated() -> None:
    now = datetime.now(UTC)
    material = ca_cert.make_ca(["api.example.com", "127.0.0.1"], now, timedelta(days=7))
    cert = x509.load_pem_x509_certificate(material.pem)
    assert cert == x509.load_der_x509_certificate(material.der)
    cert.verify_directly_issued_by(cert)  # the signature is the key's over the TBS
    assert cert.public_key() == material.key.public_key()
    assert cert.not_valid_before_utc == (now - ca_cert.CLOCK_SKEW).replace(microsecond=0)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith(
        ca_cert.CN_PREFIX
    )
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    assert x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")) in nc.permitted_subtrees
    other = ca_cert.make_ca(["api.example.com"], now, timedelta(days=7))
    assert other.key.private_numbers() != material.key.private_numbers()
    assert other.der != material.der


def test_times_must_be_utc() -> None:
    local = datetime(2026, 1, 1, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    with pytest.raises(ValueError, match="UTC"):
        ca_cert.ca_tbs(KEY.public_key(), 1, "x", local, local, None)
