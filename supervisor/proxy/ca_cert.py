"""The sandbox CA's certificate, made before the agent starts with cryptography's EC
primitives only.

The agent's trust bundles must exist before it runs, so the CA is made on `run`'s start-up
path. ``cryptography.x509`` costs ~30 ms to import there (and ssl more); its EC module a
fifth of that. The CA certificate is one fixed shape, so this module writes its DER itself
(a dozen fields) and signs it with the EC key; the proxy thread later parses it with
``cryptography.x509`` for issuing leaves. The encoding is byte for byte what
``x509.CertificateBuilder`` produces for the same fields (tests/interception/test_ca_cert.py
compares them for generated host sets), so a hand-written encoder adds no format of its own.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from supervisor.proxy.tls_names import (
    NO_DNS_SUBTREE,
    Constraints,
    HostError,
    IPNetwork,
    constraints_for,
    excluded_ip_networks,
    parse_host,
)
from supervisor.record import record

CLOCK_SKEW = timedelta(minutes=5)  # backdating for agent clocks slightly behind ours
# The CA must outlive the run: the agent's trust bundle is fixed at start, so an expired CA
# breaks every intercepted host until restart. A week covers long agent sessions; the key
# never leaves memory, so a longer life adds little exposure.
DEFAULT_CA_VALIDITY = timedelta(days=7)
ORGANIZATION = "OpenShell Supervisor"
CN_PREFIX = "OpenShell sandbox CA "

# Object identifiers (dotted) of what the CA certificate holds.
_OID_ORGANIZATION = "2.5.4.10"
_OID_COMMON_NAME = "2.5.4.3"
_OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_OID_P256 = "1.2.840.10045.3.1.7"
_OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_OID_BASIC_CONSTRAINTS = "2.5.29.19"
_OID_KEY_USAGE = "2.5.29.15"
_OID_SUBJECT_KEY_ID = "2.5.29.14"
_OID_AUTHORITY_KEY_ID = "2.5.29.35"
_OID_NAME_CONSTRAINTS = "2.5.29.30"


@record
class CAMaterial:
    """A fresh CA: its key (memory only), its certificate (DER and PEM), its constraints."""

    key: ec.EllipticCurvePrivateKey
    der: bytes
    pem: bytes
    constraints: Constraints | None

    def covers(self, host: str) -> bool:
        """Whether a leaf for ``host`` would chain under the name constraints."""
        try:
            parsed = parse_host(host)
        except HostError:
            return False
        return self.constraints is None or self.constraints.covers(parsed)


def make_ca(
    intercept_hosts: Sequence[str], now: datetime, validity: timedelta
) -> CAMaterial:
    """A CA for the hosts the profiles intercept (``HostError`` for a pattern that is not
    a host), valid from ``now`` - CLOCK_SKEW for ``validity``."""
    constraints = constraints_for(intercept_hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = int.from_bytes(os.urandom(20), "big") >> 1  # positive, at most 159 bits
    # A per-run suffix tells runs apart in client error messages.
    cn = CN_PREFIX + os.urandom(4).hex()
    tbs = ca_tbs(key.public_key(), serial, cn, now - CLOCK_SKEW, now + validity, constraints)
    der = certificate(tbs, key.sign(tbs, _EcdsaSha256()))
    return CAMaterial(key, der, pem(der), constraints)


class _EcdsaSha256(ec.ECDSA):
    """``ec.ECDSA(hashes.SHA256())`` (randomized signatures) without its constructor, which
    imports cryptography's OpenSSL backend (~23M instructions, ~5 ms, on `run`'s start-up
    path) only to check support for deterministic signing. The signer reads these two
    properties; test_ca_cert.py verifies the signature."""

    def __init__(self) -> None:
        pass

    @property
    def algorithm(self) -> hashes.HashAlgorithm:
        return hashes.SHA256()

    @property
    def deterministic_signing(self) -> bool:
        return False


def ca_tbs(
    public: ec.EllipticCurvePublicKey,
    serial: int,
    common_name: str,
    not_before: datetime,
    not_after: datetime,
    constraints: Constraints | None,
) -> bytes:
    """The TBSCertificate of the CA (RFC 5280 4.1), self-issued."""
    numbers = public.public_numbers()
    point = b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    h = hashes.Hash(hashes.SHA1())  # noqa: S303 - RFC 5280 4.2.1.2 key id, not a signature
    h.update(point)
    key_id = h.finalize()
    name = _seq(_rdn(_OID_ORGANIZATION, ORGANIZATION), _rdn(_OID_COMMON_NAME, common_name))
    spki = _seq(_seq(_oid(_OID_EC_PUBLIC_KEY), _oid(_OID_P256)), _bitstring(point))
    extensions = [
        _extension(_OID_BASIC_CONSTRAINTS, True, _seq(_BOOL_TRUE, _int(0))),
        # keyCertSign (bit 5) and cRLSign (bit 6): one byte, its last bit unused.
        _extension(_OID_KEY_USAGE, True, _tlv(0x03, b"\x01\x06")),
        _extension(_OID_SUBJECT_KEY_ID, False, _tlv(0x04, key_id)),
        _extension(_OID_AUTHORITY_KEY_ID, False, _seq(_tlv(0x80, key_id))),
    ]
    if constraints is not None:
        extensions.append(_extension(_OID_NAME_CONSTRAINTS, True, _name_constraints(constraints)))
    return _seq(
        _tlv(0xA0, _int(2)),  # version v3
        _int(serial),
        _seq(_oid(_OID_ECDSA_SHA256)),
        name,
        _seq(_time(not_before), _time(not_after)),
        name,
        spki,
        _tlv(0xA3, _seq(*extensions)),
    )


def certificate(tbs: bytes, signature: bytes) -> bytes:
    """Certificate ::= SEQUENCE { tbs, ecdsa-with-SHA256, signature BIT STRING }."""
    return _seq(tbs, _seq(_oid(_OID_ECDSA_SHA256)), _bitstring(signature))


def pem(der: bytes) -> bytes:
    b64 = binascii.b2a_base64(der, newline=False)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def _name_constraints(constraints: Constraints) -> bytes:
    dns = list(constraints.dns) or [NO_DNS_SUBTREE]  # only IP literals: no real DNS name
    permitted = [_tlv(0x82, name.encode("ascii")) for name in dns]
    permitted += [_ip_subtree(net) for net in constraints.ips]
    excluded = [_ip_subtree(net) for net in excluded_ip_networks(constraints.ips)]
    body = _tlv(0xA0, b"".join(_seq(g) for g in permitted))
    if excluded:
        body += _tlv(0xA1, b"".join(_seq(g) for g in excluded))
    return _seq(body)


def _ip_subtree(net: IPNetwork) -> bytes:
    return _tlv(0x87, net.network_address.packed + net.netmask.packed)


# -- DER (X.690) -----------------------------------------------------------------------

_BOOL_TRUE = b"\x01\x01\xff"


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _int(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _bitstring(data: bytes) -> bytes:
    return _tlv(0x03, b"\x00" + data)


def _rdn(oid: str, value: str) -> bytes:
    return _tlv(0x31, _seq(_oid(oid), _tlv(0x0C, value.encode("utf-8"))))


def _time(when: datetime) -> bytes:
    """UTCTime before 2050, GeneralizedTime from then on (RFC 5280 4.1.2.5), in seconds."""
    if when.utcoffset() != timedelta(0):
        raise ValueError("certificate times are UTC")
    if when.year < 2050:
        return _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def _extension(oid: str, critical: bool, value: bytes) -> bytes:
    return _seq(_oid(oid), _BOOL_TRUE if critical else b"", _tlv(0x04, value))

