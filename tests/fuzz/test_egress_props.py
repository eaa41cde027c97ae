"""SSRF address rules against an independent oracle (Python's ipaddress attributes)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.proxy.egress import (
    CONTROL_PLANE_PORTS,
    check_destination,
    cleartext_injection_allowed,
    is_metadata,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_v4_near_special = st.sampled_from(
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "172.16.0.1", "192.168.0.1", "100.64.0.1",
     "0.0.0.0", "224.0.0.1", "255.255.255.255", "8.8.8.8", "1.1.1.1"]
).map(ipaddress.IPv4Address)  # fmt: skip
_v4 = st.one_of(st.ip_addresses(v=4), _v4_near_special)
_v6 = st.one_of(
    st.ip_addresses(v=6),
    _v4.map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),  # IPv4-mapped
    _v4.map(lambda a: ipaddress.IPv6Address(int(a))),  # deprecated IPv4-compatible
    _v4.map(lambda a: ipaddress.IPv6Address(f"64:ff9b::{a}")),  # NAT64
    st.sampled_from(["::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "2606:4700::1111"]).map(
        ipaddress.IPv6Address
    ),
)
_addresses = st.one_of(_v4, _v6)
_ports = st.one_of(st.sampled_from([*sorted(CONTROL_PLANE_PORTS), 80, 443]), st.integers(1, 65535))


def _v4_view(addr: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if 1 < int(addr) < 1 << 32:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(addr))
    return None


def _publicly_routable(addr: IPAddress) -> bool:
    """Oracle: global unicast; an IPv6 address embedding IPv4 is judged by that IPv4."""
    v4 = _v4_view(addr)
    if v4 is None and isinstance(addr, ipaddress.IPv6Address) and addr not in _GLOBAL_UNICAST_V6:
        return False  # IPv6 outside 2000::/3 is reserved/unassigned: never public
    a = v4 or addr
    return a.is_global and not (a.is_multicast or a.is_reserved or a.is_loopback)


_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


@settings(max_examples=300, deadline=None)
@given(_addresses, _ports)
def test_without_allowed_ips_only_public_addresses_pass(addr: IPAddress, port: int) -> None:
    verdict = check_destination(addr, port, ())
    if verdict is None:
        assert _publicly_routable(addr), addr
        assert port not in CONTROL_PLANE_PORTS and not is_metadata(addr)
    if port in CONTROL_PLANE_PORTS or not _publicly_routable(addr):
        assert verdict is not None


@settings(max_examples=300, deadline=None)
@given(_addresses, _ports, st.lists(st.tuples(_addresses, st.integers(0, 128)), max_size=3))
def test_allowed_ips_restricts_and_never_opens_metadata_or_control_plane(
    addr: IPAddress, port: int, raw_nets: list[tuple[IPAddress, int]]
) -> None:
    nets = [
        ipaddress.ip_network(f"{a}/{min(bits, a.max_prefixlen)}", strict=False)
        for a, bits in raw_nets
    ]
    verdict = check_destination(addr, port, nets)
    if verdict is not None:
        return
    assert port not in CONTROL_PLANE_PORTS and not is_metadata(addr)
    v4 = _v4_view(addr)
    candidates = [addr] if v4 is None else [addr, v4]
    covered = any(a.version == n.version and a in n for a in candidates for n in nets)
    assert covered or (not nets and _publicly_routable(addr))


# Was a finding (fixed in proxy/egress.py): IPv6 outside 2000::/3 passed without opt-in.
@pytest.mark.parametrize("text", ["::1:0:0", "4000::1", "100:0:0:1::1", "fe00::1", "e000::1"])
def test_reserved_ipv6_space_refused(text: str) -> None:
    assert check_destination(ipaddress.IPv6Address(text), 443, ()) is not None


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.from_regex(r"[a-z0-9.:\[\]-]{1,30}", fullmatch=True),
    _addresses.map(str),
    st.sampled_from(["localhost", "a.b.svc", "a.b.svc.cluster.local", "a.svc", "a.b.c.svc",
                     "127.1", "0x7f.0.0.1", "localhost.", "LOCALHOST"]),
))  # fmt: skip
def test_cleartext_injection_only_to_loopback_or_service_hosts(host: str) -> None:
    if not cleartext_injection_allowed(host):
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
        assert ip.is_loopback or (mapped is not None and mapped.is_loopback)
    else:
        labels = host.split(".")
        assert host == "localhost" or (
            len(labels) in (3, 5) and labels[2] == "svc" and all(labels)
            and (len(labels) == 3 or labels[3:] == ["cluster", "local"])
        )  # fmt: skip
