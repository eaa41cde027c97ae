"""Pure destination checks: SSRF address rules, control-plane ports, cleartext injection."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from supervisor.profiles.model import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Kubernetes control plane / etcd / kubelet: never reachable, whatever a profile says.
CONTROL_PLANE_PORTS = frozenset({2379, 2380, 6443, 10250, 10255})
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

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_K8S_SERVICE = re.compile(rf"{_LABEL}\.{_LABEL}\.svc(?:\.cluster\.local)?")


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
        return any(addr in net for net in _SPECIAL_V6) or not addr.is_global
    return any(addr in net for net in _SPECIAL_V4) or not addr.is_global


def is_metadata(addr: IPAddress) -> bool:
    if addr in METADATA_ADDRESSES:
        return True
    return isinstance(addr, ipaddress.IPv6Address) and _embedded_v4(addr) in METADATA_ADDRESSES


def check_destination(addr: IPAddress, port: int, allowed_ips: Iterable[IPNetwork]) -> str | None:
    """None when (addr, port) may be connected to, else the reason for refusing it.

    ``allowed_ips`` (when non-empty) is the set of networks the address must fall in; a
    special-range address is allowed only when one of them explicitly covers it.
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
        return f"address {addr} is in a special-purpose range"
    return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cleartext_injection_allowed(host: str) -> bool:
    """A credential may travel without TLS only to loopback or a Kubernetes service host."""
    return is_loopback_host(host) or _K8S_SERVICE.fullmatch(host) is not None
