"""Host names for TLS interception: normalizing CONNECT hosts and deriving the CA's name
constraints from the profiles' host patterns.

Pure functions, no I/O: the CA module turns their results into certificates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from supervisor.profiles.model import Profile
from supervisor.record import record

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One DNS label as clients accept it in certificates: LDH plus '_' (seen in real names).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_MAX_NAME = 253

# RFC 6761 reserves '.invalid': a permitted subtree that no real name falls under, used to
# forbid every DNS name when the profiles intercept only IP literals.
NO_DNS_SUBTREE = "invalid"
ALL_IPV4 = ipaddress.IPv4Network("0.0.0.0/0")
ALL_IPV6 = ipaddress.IPv6Network("::/0")


class InterceptionError(Exception):
    """TLS interception cannot serve a host (the proxy then refuses the CONNECT)."""


class HostError(InterceptionError, ValueError):
    """A host cannot be put in a certificate (not a DNS name or IP literal we accept)."""


def parse_host(host: str) -> str | IPAddress:
    """Normalize a concrete CONNECT host: an ``IPv4Address``/``IPv6Address`` for IP literals
    (brackets allowed), else the lower-case DNS name without a trailing dot.

    Raises ``HostError`` for anything else (wildcards, empty labels, non-ASCII, zone ids,
    names whose last label is numeric — clients parse those as IPv4, e.g. ``127.1``).
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
            raise HostError(f"scoped IPv6 address not allowed: {host!r}")
        return addr
    name = text.lower().removesuffix(".")
    if not name or len(name) > _MAX_NAME or not name.isascii():
        raise HostError(f"not a valid host name: {host!r}")
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise HostError(f"not a valid host name: {host!r}")
    if labels[-1].isdigit():
        raise HostError(f"numeric top label (would be parsed as IPv4): {host!r}")
    return name


@record
class Constraints:
    """The CA's permitted subtrees. ``dns`` names match themselves and their subdomains."""

    dns: tuple[str, ...]
    ips: tuple[IPNetwork, ...]

    def covers(self, host: str | IPAddress) -> bool:
        if isinstance(host, str):
            return any(_under(host, base) for base in self.dns)
        return any(host in net for net in self.ips)


def _under(name: str, base: str) -> bool:
    return name == base or name.endswith("." + base)


def pattern_subtree(pattern: str) -> str | IPNetwork | None:
    """The narrowest subtree holding every host a profile pattern can match.

    ``*`` stands for part of one label and ``**`` for one or more labels, so only the labels
    right of the last wildcard label are fixed: ``api.*.example.com`` -> ``example.com``.
    ``None`` when no subtree can hold it: nothing fixed (``*``, ``**``, ``*.*``) or a
    numeric tail that IP literals can match too (``*.0.0.1``).
    """
    text = pattern.strip().lower().removesuffix(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "*" not in text:
        host = parse_host(text)
        if isinstance(host, str):
            return host
        return ipaddress.ip_network(host)  # /32 or /128
    labels = text.split(".")
    last_wild = max(i for i, label in enumerate(labels) if "*" in label)
    suffix = labels[last_wild + 1 :]
    # Nothing fixed, or a numeric tail ('*.0.0.1' also matches IP literals such as 10.0.0.1,
    # which no DNS subtree and no contiguous IP prefix can express).
    if not suffix or suffix[-1].isdigit():
        return None
    fixed = parse_host(".".join(suffix))
    if not isinstance(fixed, str):  # '*.fe80::1': no such pattern is a host
        raise HostError(f"host pattern has an IPv6 suffix: {pattern!r}")
    return fixed


def constraints_for(patterns: Iterable[str]) -> Constraints | None:
    """Permitted subtrees for the hosts the profiles intercept, or ``None`` when they cannot
    be constrained (some pattern fixes no label at all: any name may then need a leaf).

    Subtrees already covered by a broader one are dropped. An empty name list or IP list is
    kept empty here; the certificate builder turns that into "forbid all of that type".
    """
    dns: set[str] = set()
    ips: set[IPNetwork] = set()
    for pattern in patterns:
        subtree = pattern_subtree(pattern)
        if subtree is None:
            return None
        if isinstance(subtree, str):
            dns.add(subtree)
        else:
            ips.add(subtree)
    kept = sorted(n for n in dns if not any(b != n and _under(n, b) for b in dns))
    return Constraints(dns=tuple(kept), ips=tuple(sorted(ips, key=_net_key)))


def _net_key(net: IPNetwork) -> tuple[int, int]:
    return (net.version, int(net.network_address))


def excluded_ip_networks(ips: Sequence[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Every IP address, when no IP subtree is permitted; else nothing.

    RFC 5280 name constraints only restrict the name types they mention, so without this an
    IP-address leaf would pass a DNS-only constraint. With any permitted IP subtree, an
    address outside all of them (either family) already fails.
    """
    return () if ips else (ALL_IPV4, ALL_IPV6)


def hosts_to_intercept(profiles: Iterable[Profile]) -> tuple[str, ...]:
    """Host patterns the proxy may terminate TLS for: every endpoint not marked ``tls: skip``.

    A superset of what is intercepted (the proxy also opens only what needs inspection), so
    the CA's name constraints never reject a host the proxy decides to intercept.
    """
    hosts = {ep.host for profile in profiles for ep in profile.endpoints if ep.tls != "skip"}
    return tuple(sorted(hosts))
