"""Pure destination checks: SSRF address rules, control-plane ports, cleartext injection.

The host rules (control-plane ports, loopback and Kubernetes service hosts) live in
``supervisor.profiles.hosts``: load-time validation and the proxy apply the same rule.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from supervisor.profiles.hosts import CONTROL_PLANE_PORTS, cleartext_allowed_host, normalize_host
from supervisor.profiles.model import IPNetwork

__all__ = [
    "CONTROL_PLANE_PORTS",
    "METADATA_ADDRESSES",
    "IPAddress",
    "check_destination",
    "cleartext_injection_allowed",
    "is_metadata",
    "is_special",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.IPv4Address("169.254.169.254"),
        ipaddress.IPv6Address("::ffff:169.254.169.254"),
        ipaddress.IPv6Address("fd00:ec2::254"),
    }
)

_SPECIAL_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_SPECIAL_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in ipaddress.IPv6Network("::/96") and int(addr) > 1:  # deprecated IPv4-compatible
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_special(addr: IPAddress) -> bool:
    """Loopback, private, link-local, CGNAT, multicast, reserved, documentation, ... ."""
    if isinstance(addr, ipaddress.IPv6Address):
        v4 = _embedded_v4(addr)
        if v4 is not None:
            return is_special(v4)
        if addr not in _GLOBAL_UNICAST_V6:  # IANA reserved/unassigned: never "public"
            return True
        return any(addr in net for net in _SPECIAL_V6) or not addr.is_global
    return any(addr in net for net in _SPECIAL_V4) or not addr.is_global


def is_metadata(addr: IPAddress) -> bool:
    if addr in METADATA_ADDRESSES:
        return True
    return isinstance(addr, ipaddress.IPv6Address) and _embedded_v4(addr) in METADATA_ADDRESSES


_RFC1918 = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


def is_rfc1918(addr: IPAddress) -> bool:
    v4 = _embedded_v4(addr) if isinstance(addr, ipaddress.IPv6Address) else addr
    return v4 is not None and any(v4 in net for net in _RFC1918)


def check_destination(
    addr: IPAddress, port: int, allowed_ips: Iterable[IPNetwork], *, private_ok: bool = False
) -> str | None:
    """None when (addr, port) may be connected to, else the reason for refusing it.

    ``allowed_ips`` (when non-empty) is the set of networks the address must fall in; a
    special-range address is allowed only when one of them explicitly covers it.
    ``private_ok`` (ARCHITECTURE.md 4.1, as OpenShell): the host was declared exactly (not by a
    wildcard), so with no ``allowed_ips`` it may resolve to RFC 1918 private addresses
    (in-cluster services); loopback, link-local, metadata and the other special ranges
    still need ``allowed_ips``.
    """
    if port in CONTROL_PLANE_PORTS:
        return f"port {port} is a control-plane port"
    if is_metadata(addr):
        return "cloud metadata address"
    nets = tuple(allowed_ips)
    mapped = _embedded_v4(addr) if isinstance(addr, ipaddress.IPv6Address) else None
    candidates = (addr,) if mapped is None else (addr, mapped)
    covered = any(a.version == n.version and a in n for a in candidates for n in nets)
    if nets and not covered:
        return f"address {addr} is outside the endpoint's allowed_ips"
    if is_special(addr) and not covered:
        if private_ok and not nets and is_rfc1918(addr):
            return None
        return f"address {addr} is in a special-purpose range"
    return None


def cleartext_injection_allowed(host: str) -> bool:
    """A credential may travel without TLS only to loopback or a Kubernetes service host.

    ``host`` is the proxy's normalized host; anything not in normal form is refused (the
    profiles' rule would normalize it first; the proxy never hands such a host). No host
    of either class is longer than a DNS name, so longer ones are refused uncached.
    """
    return len(host) <= _MAX_DNS_NAME and _cleartext_cached(host)


_MAX_DNS_NAME = 253


@functools.lru_cache(maxsize=512)
def _cleartext_cached(host: str) -> bool:
    # Runs on every credentialed plain-HTTP request; a pure function of the host.
    return host == normalize_host(host) and cleartext_allowed_host(host)
