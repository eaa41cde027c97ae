"""Host names: normalization and the special classes the security rules talk about."""

from __future__ import annotations

import functools
import ipaddress
import re

# Ports of the Kubernetes/etcd control plane: always refused at run time (ARCHITECTURE.md 6).
CONTROL_PLANE_PORTS = frozenset({2379, 2380, 6443, 10250, 10255})
METADATA_ADDRESS = "169.254.169.254"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


# A pure function of a string, called several times per proxied request (each policy
# lookup normalizes again): remembered for the hosts seen last. Bounded, as the agent
# chooses hosts.
@functools.lru_cache(maxsize=512)
def normalize_host(host: str) -> str:
    """Lower-case, drop one trailing dot and IPv6 brackets, canonical IPv6 text."""
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.endswith("."):
        h = h[:-1]
    if ":" in h:
        try:
            return ipaddress.IPv6Address(h).compressed
        except ValueError:
            return h
    return h


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1`` (also IPv4-mapped loopback)."""
    h = normalize_host(host)
    if h == "localhost":
        return True
    ip = ip_of(h)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


def is_k8s_service_host(host: str, *, allow_wildcards: bool = False) -> bool:
    """``name.ns.svc`` or ``name.ns.svc.cluster.local`` (exactly those shapes).

    With ``allow_wildcards`` a name or namespace label may be ``*`` (for endpoint
    patterns that can only ever match service hosts).
    """
    labels = normalize_host(host).split(".")
    if labels[2:] not in (["svc"], ["svc", "cluster", "local"]):
        return False
    return all(
        (allow_wildcards and label == "*") or _DNS_LABEL.fullmatch(label) is not None
        for label in labels[:2]
    )


def cleartext_allowed_host(host: str, *, allow_wildcards: bool = False) -> bool:
    """Hosts where plain HTTP is acceptable: traffic stays on the node or in the cluster."""
    return is_loopback_host(host) or is_k8s_service_host(host, allow_wildcards=allow_wildcards)


# What an ``allowed_ips`` entry opens that nobody should open by accident (the metadata
# address is always refused and warned about on its own).
_SENSITIVE: tuple[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], ...] = tuple(
    (label, ipaddress.ip_network(net))
    for label, net in (
        ("loopback", "127.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("private", "172.16.0.0/12"),
        ("private", "192.168.0.0/16"),
        ("link-local", "169.254.0.0/16"),
        ("loopback", "::1/128"),
        ("private", "fc00::/7"),
        ("link-local", "fe80::/10"),
        ("IPv4-mapped", "::ffff:0:0/96"),  # every IPv4 address, loopback included
    )
)


def broad_special_ranges(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """The loopback/private/link-local ranges ``net`` opens without being an opt-in to
    one of them: [] when it lies inside one such range (10.43.0.0/16, 127.0.0.1) or
    touches none; else each range it overlaps, e.g. ``private (10.0.0.0/8)``."""
    same = [(label, r) for label, r in _SENSITIVE if r.version == net.version]
    if any(net.subnet_of(r) for _, r in same):  # type: ignore[arg-type]
        return []
    return [f"{label} ({r})" for label, r in same if net.overlaps(r)]
