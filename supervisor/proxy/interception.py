"""The per-run certificate authority that TLS interception presents leaves from.

One ``SandboxCA`` per run: an EC P-256 CA generated at start, whose private key lives only
in this object (never serialized, never written: leaf keys reach OpenSSL through a memfd,
see ``tls_memload``). Its certificate is name-constrained to the hosts the profiles
intercept, so even a leaked key could not impersonate anything else to the agent.
``server_context(host)`` is what the proxy calls on CONNECT (``SandboxCA`` implements
``supervisor.proxy.policy.Interceptor``); contexts are cached (LRU).
"""

from __future__ import annotations

import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from supervisor.proxy.ca_cert import CLOCK_SKEW, DEFAULT_CA_VALIDITY, CAMaterial, make_ca
from supervisor.proxy.tls_bundles import BundlePaths, env_vars, write_bundles
from supervisor.proxy.tls_memload import load_chain_in_memory
from supervisor.proxy.tls_names import (
    Constraints,
    HostError,
    InterceptionError,
    IPAddress,
    hosts_to_intercept,
    parse_host,
)
from supervisor.proxy.tls_upstream import build_upstream_context

__all__ = [
    "BundlePaths",
    "HostError",
    "HostNotCovered",
    "InterceptionError",
    "SandboxCA",
    "build_upstream_context",
    "env_vars",
    "hosts_to_intercept",
]

# The CA lives a week (ca_cert.DEFAULT_CA_VALIDITY). Leaves stay short (a day) and are
# renewed from the cache before they expire.
DEFAULT_LEAF_VALIDITY = timedelta(hours=24)
RENEW_MARGIN = timedelta(hours=1)
DEFAULT_CACHE_SIZE = 256
ALPN = ["http/1.1"]
_MAX_CN = 64  # ub-common-name (RFC 5280): longer names go in the SAN only

Clock = Callable[[], datetime]


class HostNotCovered(InterceptionError):
    """The host is outside the CA's name constraints: clients would reject any leaf for it."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Entry:
    context: ssl.SSLContext
    renew_at: datetime


class SandboxCA:
    """Per-run CA: issues cached server contexts for intercepted hosts.

    Thread-safe. Exposes the CA certificate, never its key (no accessor, no pickling, and
    the repr names only the subject and fingerprint).
    """

    __slots__ = (
        "_ca_pem",
        "_cache",
        "_cache_size",
        "_cert",
        "_clock",
        "_constraints",
        "_key",
        "_leaf_validity",
        "_lock",
    )

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        constraints: Constraints | None,
        *,
        leaf_validity: timedelta,
        cache_size: int,
        clock: Clock,
    ) -> None:
        """Internal: use ``generate``."""
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._key = key
        self._cert = cert
        self._constraints = constraints
        self._leaf_validity = leaf_validity
        self._cache_size = cache_size
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._ca_pem = cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def generate(
        cls,
        intercept_hosts: Sequence[str],
        *,
        validity: timedelta = DEFAULT_CA_VALIDITY,
        leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Clock = _utcnow,
    ) -> SandboxCA:
        """A fresh CA for the given host patterns (exact hosts, ``*``/``**`` patterns, IP
        literals). Raises ``HostError`` for a pattern that is not a host."""
        material = make_ca(intercept_hosts, clock(), validity)
        return cls.from_material(
            material, leaf_validity=leaf_validity, cache_size=cache_size, clock=clock
        )

    @classmethod
    def from_material(
        cls,
        material: CAMaterial,
        *,
        leaf_validity: timedelta = DEFAULT_LEAF_VALIDITY,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Clock = _utcnow,
    ) -> SandboxCA:
        """The CA ``ca_cert.make_ca`` made on the start-up path (its certificate parsed
        here, on the proxy thread, where importing ``cryptography.x509`` costs no one)."""
        cert = x509.load_der_x509_certificate(material.der)
        return cls(
            material.key, cert, material.constraints,
            leaf_validity=leaf_validity, cache_size=cache_size, clock=clock,
        )  # fmt: skip

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM), what the agent's bundles hold."""
        return self._ca_pem

    @property
    def constraints(self) -> Constraints | None:
        """The permitted subtrees, or ``None`` when the CA is unconstrained."""
        return self._constraints

    def covers(self, host: str) -> bool:
        """Whether a leaf for ``host`` would chain under the CA's name constraints."""
        try:
            parsed = parse_host(host)
        except HostError:
            return False
        return self._covers(parsed)

    def _covers(self, host: str | IPAddress) -> bool:
        return self._constraints is None or self._constraints.covers(host)

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for ``host`` (from the LRU cache).

        Raises ``HostError`` for a malformed host, ``HostNotCovered`` outside the CA's
        constraints, ``InterceptionError`` once the CA has expired.
        """
        parsed = parse_host(host)
        if not self._covers(parsed):
            raise HostNotCovered(f"host not covered by the sandbox CA: {host!r}")
        cache_key = str(parsed)
        now = self._clock()
        with self._lock:
            entry = self._cache.get(cache_key)
            if entry is not None and now < entry.renew_at:
                self._cache.move_to_end(cache_key)
                return entry.context
        # Generated outside the lock (~1 ms): other hosts' hits do not wait. Two threads may
        # race on one host; both results are valid and the later one is kept.
        entry = self._issue(parsed, now)
        with self._lock:
            self._cache[cache_key] = entry
            self._cache.move_to_end(cache_key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return entry.context

    def cached_hosts(self) -> list[str]:
        """Cached hosts, least recently used first (diagnostics)."""
        with self._lock:
            return list(self._cache)

    def write_bundles(self, directory: str, system_bundle: str | None = None) -> BundlePaths:
        """Write the agent's trust bundles into ``directory`` (see ``tls_bundles``)."""
        return write_bundles(directory, self.ca_pem, system_bundle)

    def _issue(self, host: str | IPAddress, now: datetime) -> _Entry:
        not_before = max(now - CLOCK_SKEW, self._cert.not_valid_before_utc)
        not_after = min(now + self._leaf_validity, self._cert.not_valid_after_utc)
        if not_after <= now:
            raise InterceptionError("the sandbox CA has expired")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf_certificate(host, key.public_key(), not_before, not_after)
        ctx = _server_context()
        load_chain_in_memory(ctx, cert.public_bytes(serialization.Encoding.PEM), key)
        renew_at = not_after - RENEW_MARGIN
        return _Entry(ctx, renew_at if renew_at > now else not_after)

    def _leaf_certificate(
        self,
        host: str | IPAddress,
        public: ec.EllipticCurvePublicKey,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.Certificate:
        san: x509.GeneralName
        san = x509.DNSName(host) if isinstance(host, str) else x509.IPAddress(host)
        # CN only for DNS names that fit: OpenSSL checks a CN that looks like a host name
        # against DNS constraints, which an IP literal would fail. With an empty subject the
        # SAN must be critical (RFC 5280 4.2.1.6).
        use_cn = isinstance(host, str) and len(host) <= _MAX_CN
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(host))] if use_cn else [])
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=not use_cn)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def __repr__(self) -> str:
        fingerprint = self._cert.fingerprint(hashes.SHA256()).hex()
        return (
            f"SandboxCA(subject={self._cert.subject.rfc4514_string()!r}, "
            f"sha256={fingerprint}, cached={len(self._cache)})"
        )

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("SandboxCA holds a private key and cannot be pickled or copied")


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # CA: keyCertSign + cRLSign. Leaf (ECDSA): digitalSignature only.
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The client is the hostile agent: no renegotiation, no compression.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(ALPN)
    return ctx
